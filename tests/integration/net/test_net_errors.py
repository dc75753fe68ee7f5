"""Bad input gets a clear error and leaves nothing half-made (files, leases, links, rules)."""

from __future__ import annotations

import os
import socket

import pytest

from isle.errors import AlreadyExists, ConfigError, InvalidState, NotFound
from isle.net import PortMapping, parse_publish

pytestmark = [pytest.mark.netns, pytest.mark.root]


def state(nm, kit):
    return (sorted(n.name for n in nm.list()), nm.store.leases().data, nm.store.records(),
            kit.links(nm), kit.firewall(nm))


def test_network_create_errors(nm, kit):
    nm.create("isle-test-a", subnet="10.202.0.0/24")
    nm.connect("a0" * 32, nm.create_netns("a0" * 32), ["isle-test-a"])   # a bridge with rules
    before = state(nm, kit)
    assert kit.links(nm) and kit.firewall(nm)
    with pytest.raises(ConfigError, match="10.202.0.128/25 overlaps 10.202.0.0/24 of network isle-test-a"):
        nm.create("isle-test-b", subnet="10.202.0.128/25")
    with pytest.raises(ConfigError, match="is not a network address .did you mean 10.202.1.0/24"):
        nm.create("isle-test-b", subnet="10.202.1.5/24")
    with pytest.raises(ConfigError, match="gateway: 10.9.9.9 is outside"):
        nm.create("isle-test-b", subnet="10.202.1.0/24", gateway="10.9.9.9")
    with pytest.raises(ConfigError, match="overlaps .* of a host route"):
        nm.create("isle-test-b", subnet="192.0.2.0/25")
    with pytest.raises(AlreadyExists):
        nm.create("isle-test-a", subnet="10.202.3.0/24")
    with pytest.raises(ConfigError, match="not a valid name"):
        nm.create("bad/name")
    with pytest.raises(ConfigError, match="reserved"):
        nm.create("host")
    with pytest.raises(NotFound):
        nm.remove("isle-test-nope")
    with pytest.raises(InvalidState, match="default network"):
        nm.remove("bridge")
    with pytest.raises(InvalidState, match="has 1 connected"):
        nm.remove("isle-test-a")
    assert state(nm, kit) == before                  # nothing half-made, nothing undone
    nm.teardown("a0" * 32)
    auto = nm.create("isle-test-auto")
    v6 = nm.create("isle-test-v6", subnet="10.202.4.0/24", ipv6=True)
    assert auto.subnets[0].subnet.endswith("/24") and v6.ipv6 and v6.subnets[1].subnet.startswith("fd")
    assert sorted(nm.prune()) == ["isle-test-a", "isle-test-auto", "isle-test-v6"]


@pytest.mark.timeout(60)
def test_connect_errors_leave_nothing_half_made(nm, kit):
    nm.create("isle-test-e", subnet="10.202.8.0/24", ip_range="10.202.8.8/30")
    nm.create("isle-test-f", subnet="10.202.9.0/24")
    ns = {c: nm.create_netns(c * 16) for c in ("a1b2", "c3d4", "e5f6", "0c0d", "0a0b")}
    a = nm.connect("a1b2" * 16, ns["a1b2"], [("isle-test-e", {"ip": "10.202.8.9"})])
    assert a.ip == "10.202.8.9"
    before = state(nm, kit)
    cid, path = "c3d4" * 16, ns["c3d4"]
    with pytest.raises(ConfigError, match="10.202.8.9 is already taken on network isle-test-e"):
        nm.connect(cid, path, [("isle-test-e", {"ip": "10.202.8.9"})])
    with pytest.raises(ConfigError, match="10.202.99.9 is outside the subnets of network isle-test-e"):
        nm.connect(cid, path, [("isle-test-e", {"ip": "10.202.99.9"})])
    # the second network fails after the first was set up: the first is undone too
    with pytest.raises(ConfigError, match="outside"):
        nm.connect(cid, path, ["isle-test-f", ("isle-test-e", {"ip": "10.9.9.9"})])
    with pytest.raises(NotFound, match="network isle-test-zzz not found"):
        nm.connect(cid, path, ["isle-test-zzz"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"host port {port}/tcp is already in use on the host"):
            nm.connect(cid, path, ["isle-test-f"], [PortMapping("127.0.0.1", port, 80)])
    with pytest.raises(ConfigError, match="already published"):
        nm.connect(cid, path, ["isle-test-f"], parse_publish("127.0.0.1:18111:80")
                   + parse_publish("127.0.0.1:18111:81"))
    with pytest.raises(InvalidState, match="has 1 connected"):
        nm.remove("isle-test-e")
    assert state(nm, kit) == before
    # exhaustion: the /30 range has .8 .9 .10 .11, all usable inside the /24
    nm.connect(cid, path, ["isle-test-e"])
    nm.connect("e5f6" * 16, ns["e5f6"], ["isle-test-e"])
    nm.connect("0c0d" * 16, ns["0c0d"], ["isle-test-e"])
    mid = state(nm, kit)
    with pytest.raises(ConfigError, match="network isle-test-e has no free address left in 10.202.8.8/30"):
        nm.connect("0a0b" * 16, ns["0a0b"], ["isle-test-f", "isle-test-e"])
    assert state(nm, kit) == mid
    with pytest.raises(AlreadyExists):
        nm.connect(cid, path, ["isle-test-e"])
    with pytest.raises(NotFound):
        nm.disconnect(cid, "isle-test-f")
    for c in ns:
        nm.teardown(c * 16)
    assert nm.store.leases().data == {} and os.listdir(nm.store.netns_dir) == []
