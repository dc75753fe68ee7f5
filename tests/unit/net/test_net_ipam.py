"""IPAM: subnet checks, overlap, allocation, exhaustion, release (pure)."""

from __future__ import annotations

import pytest

from isle.errors import ConfigError
from isle.net.ipam import Leases, check_overlap, parse_subnet, pick_free_subnet, plan_subnet, ula_subnet
from isle.net.types import Network


def net(*subnets, name="n"):
    return Network(name=name, id="0" * 64, bridge="isle-x", subnets=tuple(subnets))


def test_parse_subnet_refuses_host_address_and_names_the_fix():
    with pytest.raises(ConfigError, match=r"10.1.2.3/24 is not a network address \(did you mean 10.1.2.0/24"):
        parse_subnet("10.1.2.3/24")
    with pytest.raises(ConfigError, match="not an IP network"):
        parse_subnet("10.300.0.0/24")
    with pytest.raises(ConfigError, match="no prefix length"):
        parse_subnet("10.1.0.0")
    with pytest.raises(ConfigError, match="too small"):
        parse_subnet("10.1.0.0/31")
    assert str(parse_subnet("fd00:1::/64")) == "fd00:1::/64"


def test_plan_subnet_gateway_and_range():
    s = plan_subnet("10.89.0.0/24")
    assert (s.gateway, s.ip_range) == ("10.89.0.1", None)
    assert plan_subnet("10.89.0.0/24", "10.89.0.254", "10.89.0.128/25").gateway == "10.89.0.254"
    with pytest.raises(ConfigError, match="gateway: 10.90.0.1 is outside the subnet 10.89.0.0/24"):
        plan_subnet("10.89.0.0/24", "10.90.0.1")
    with pytest.raises(ConfigError, match="network or broadcast"):
        plan_subnet("10.89.0.0/24", "10.89.0.255")
    with pytest.raises(ConfigError, match="ip-range: 10.89.1.0/25 is not inside"):
        plan_subnet("10.89.0.0/24", None, "10.89.1.0/25")


def test_overlap_names_the_other_network():
    check_overlap(["10.89.1.0/24"], {"network a": ["10.89.0.0/24"], "network b": ["fd00::/64"]})
    with pytest.raises(ConfigError, match="10.89.0.128/25 overlaps 10.89.0.0/24 of network a"):
        check_overlap(["10.89.0.128/25"], {"network a": ["10.89.0.0/24"]})


def test_pick_free_subnet_skips_taken_and_reports_exhaustion():
    assert pick_free_subnet("10.78.0.0/22", 24, ["10.78.0.0/24", "10.78.1.0/25"]) == "10.78.2.0/24"
    with pytest.raises(ConfigError, match="no free /24"):
        pick_free_subnet("10.78.0.0/23", 24, ["10.78.0.0/23"])


def test_ula_subnet_is_stable_and_unique_local():
    a = ula_subnet("ab" * 32)
    assert a == ula_subnet("ab" * 32) and a.startswith("fd") and a.endswith("/64")


def test_allocate_sequential_skips_gateway_and_is_idempotent_per_owner():
    n = net(plan_subnet("10.89.0.0/24"))
    L = Leases({})
    assert L.allocate(n, "c1") == ["10.89.0.2"]
    assert L.allocate(n, "c2") == ["10.89.0.3"]
    assert L.members("n") == {"c1", "c2"}
    assert L.release("n", "c1") == ["10.89.0.2"]
    # serial, as Docker: a just-freed address is not reused while peers may still cache its MAC
    assert L.allocate(n, "c3") == ["10.89.0.4"]
    small = net(plan_subnet("10.89.1.0/29", ip_range="10.89.1.0/30"))   # .2 and .3 usable
    L2 = Leases({})
    assert L2.allocate(small, "a") == ["10.89.1.2"] and L2.allocate(small, "b") == ["10.89.1.3"]
    L2.release("n", "a")
    assert L2.allocate(small, "c") == ["10.89.1.2"]          # wraps around to the freed one
    assert L2.last == {"n 10.89.1.0/29": "10.89.1.2"}


def test_allocate_static_checks_subnet_taken_and_reserved():
    n = net(plan_subnet("10.89.0.0/24"))
    L = Leases({})
    assert L.allocate(n, "c1", ["10.89.0.50"]) == ["10.89.0.50"]
    with pytest.raises(ConfigError, match="10.89.0.50 is already taken on network n by c2"[:40]):
        L.allocate(n, "c2xxxxxxxxxxxxxxx", ["10.89.0.50"])
    with pytest.raises(ConfigError, match="10.90.0.5 is outside the subnets of network n"):
        L.allocate(n, "c2", ["10.90.0.5"])
    with pytest.raises(ConfigError, match="reserved"):
        L.allocate(n, "c2", ["10.89.0.1"])
    with pytest.raises(ConfigError, match="not an IP address"):
        L.allocate(n, "c2", ["banana"])
    assert L.of("n", "c1") == ["10.89.0.50"]


def test_allocate_from_ip_range_until_exhausted_then_clear_error():
    n = net(plan_subnet("10.89.0.0/24", None, "10.89.0.252/30"))
    L = Leases({})
    got = [L.allocate(n, f"c{i}")[0] for i in range(3)]
    assert got == ["10.89.0.252", "10.89.0.253", "10.89.0.254"]    # .255 is broadcast
    before = dict(L.data["n"])
    with pytest.raises(ConfigError, match="network n has no free address left in 10.89.0.252/30"):
        L.allocate(n, "c9")
    assert L.data["n"] == before       # nothing half-made


def test_dual_stack_gets_one_address_per_family():
    n = net(plan_subnet("10.89.0.0/24"), plan_subnet("fd00:89::/64"))
    L = Leases({})
    assert L.allocate(n, "c1") == ["10.89.0.2", "fd00:89::2"]
    assert L.allocate(n, "c2", ["fd00:89::99"]) == ["10.89.0.3", "fd00:89::99"]
    L.release_owner("c1")
    assert L.owners() == {"c2"}


def test_pick_free_subnet_scans_from_start_and_wraps():
    assert pick_free_subnet("10.79.0.0/22", 24, [], start=2) == "10.79.2.0/24"
    assert pick_free_subnet("10.79.0.0/22", 24, ["10.79.3.0/24"], start=7) == "10.79.0.0/24"
