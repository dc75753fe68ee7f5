"""Dual-stack networks: each namespace gets an IPv4 and an IPv6 address and reaches the other."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.root]


@pytest.mark.timeout(60)
def test_dual_stack_addresses_and_traffic(nm, kit):
    net = nm.create("isle-test-v6", subnet=["10.208.6.0/24", "fd00:208:6::/64"])
    assert net.ipv6 and [s.gateway for s in net.subnets] == ["10.208.6.1", "fd00:208:6::1"]
    a, b = "6a" * 32, "6b" * 32
    ns_a, ns_b = nm.create_netns(a), nm.create_netns(b)
    att_a = nm.connect(a, ns_a, [("isle-test-v6", {"ip": ["fd00:208:6::a"]})])
    att_b = nm.connect(b, ns_b, ["isle-test-v6"])
    assert att_a.ips == ["10.208.6.2", "fd00:208:6::a"]
    assert att_b.ips == ["10.208.6.3", "fd00:208:6::2"]
    assert "fd00:208:6::a/64" in kit.run_in(ns_a, "ip", "-o", "addr").stdout
    r = kit.run_in(ns_b, "busybox", "ping", "-6", "-c1", "-W5", "fd00:208:6::a", check=False, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert kit.run_in(ns_b, "busybox", "ping", "-c1", "-W3", "10.208.6.2").returncode == 0
    nm.teardown(a)
    nm.teardown(b)
    nm.remove("isle-test-v6")
