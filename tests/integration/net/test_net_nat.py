"""Outbound traffic is masqueraded: a namespace plays the outside host, routed via a veth."""

from __future__ import annotations

import socket

import pytest

from isle.net import PortMapping

pytestmark = [pytest.mark.netns, pytest.mark.root]


@pytest.mark.timeout(60)
def test_outbound_is_masqueraded_and_internal_networks_stay_inside(nm, procs, kit, outside):
    nm.create("isle-test-nat", subnet="10.201.9.0/24")
    nm.create("isle-test-int", subnet="10.201.10.0/24", internal=True)
    ns1, ns2 = nm.create_netns("n1" * 32), nm.create_netns("n2" * 32)
    att = nm.connect("n1" * 32, ns1, ["isle-test-nat"], [PortMapping("127.0.0.1", 0, 9000, "tcp", 2)])
    (pm,) = att.ports
    assert pm.range == 2 and pm.host_port > 0          # a random run of two host ports
    procs.py_server(ns1, 9000, "nine")
    procs.py_server(ns1, 9001, "nine-one")
    for i, want in enumerate(("nine", "nine-one")):
        with socket.create_connection(("127.0.0.1", pm.host_port + i), timeout=5) as s:
            assert s.recv(20).decode() == want
    nm.connect("n2" * 32, ns2, ["isle-test-int"])
    procs.py_server(outside, 9)
    r = kit.run_in(ns1, "busybox", "nc", "-w", "3", "198.51.100.2", "9")
    assert r.stdout == "198.51.100.1"          # the outside host sees the host's address, not 10.201.9.2
    r = kit.run_in(ns2, "busybox", "nc", "-w", "2", "198.51.100.2", "9", check=False)
    assert r.returncode != 0 and r.stdout == ""
    nm.teardown("n1" * 32)
    nm.teardown("n2" * 32)
