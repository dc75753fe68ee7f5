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


V6_SERVER = ("import socket,sys\ns=socket.socket(socket.AF_INET6); s.setsockopt(1,2,1)\n"
             "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
             "s.bind(('::',int(sys.argv[1]))); s.listen(8); print('ready',flush=True)\n"
             "while True:\n c,a=s.accept(); c.sendall(sys.argv[2].encode()); c.close()\n")


def _fetch(host: str, port: int) -> str:
    import socket

    with socket.create_connection((host, port), timeout=5) as s:
        return s.recv(100).decode()


@pytest.mark.timeout(90)
def test_ipv6_published_ports(nm, kit, procs):
    """-p on a dual-stack network answers on the host's IPv6 addresses, from the host and from
    another namespace; [::1] is refused clearly (the kernel cannot DNAT IPv6 loopback traffic
    out of the host, podman's netavark has the same limit); nothing is left afterwards."""
    import subprocess
    import sys

    from isle.errors import ConfigError
    from isle.net import parse_publish

    fw0, links0 = kit.firewall(nm), kit.links(nm)
    nm.create("isle-test-v6p", subnet=["10.208.7.0/24", "fd00:208:7::/64"])
    nm.create("isle-test-v6q", subnet=["10.208.8.0/24", "fd00:208:8::/64"])
    nm.create("isle-test-v4o", subnet="10.208.9.0/24")
    a, b = "6d" * 32, "6e" * 32
    ns_a, ns_b = nm.create_netns(a), nm.create_netns(b)
    before = (nm.store.leases().data, nm.store.records(), kit.links(nm), kit.firewall(nm))
    for net, spec, needle in (("isle-test-v6p", "[::1]:18781:7000", r"\[::1\].*route_localnet"),
                              ("isle-test-v4o", "[fd00:208:7::1]:18781:7000", "no IPv6 subnet")):
        with pytest.raises(ConfigError, match=needle):
            nm.connect(a, ns_a, [net], parse_publish(spec))
    assert (nm.store.leases().data, nm.store.records(), kit.links(nm), kit.firewall(nm)) == before
    nm.connect(b, ns_b, ["isle-test-v6q"])       # the host now has fd00:208:8::1 on its bridge
    att = nm.connect(a, ns_a, ["isle-test-v6p"], parse_publish("18782:7000")
                     + parse_publish("[fd00:208:8::1]:18783:7000"))
    p = procs.spawn(ns_a, sys.executable, "-c", V6_SERVER, "7000", "v6-ok",
                    stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    gw6 = [g for g in att.networks["isle-test-v6p"].gateways if ":" in g][0]
    assert gw6 == "fd00:208:7::1"
    assert _fetch("127.0.0.1", 18782) == "v6-ok"
    assert _fetch(gw6, 18782) == "v6-ok" and _fetch("fd00:208:8::1", 18783) == "v6-ok"
    with pytest.raises(OSError):              # bound to one address: not on the others
        _fetch(gw6, 18783)
    # from another namespace, over IPv6, to this host's addresses
    for host, port in ((gw6, 18782), ("fd00:208:8::1", 18782), ("fd00:208:8::1", 18783)):
        r = kit.run_in(ns_b, "busybox", "nc", "-w", "3", host, str(port), check=False)
        assert r.stdout == "v6-ok", (host, port, r.stdout, r.stderr)
    procs.close()
    nm.teardown(a)
    nm.teardown(b)
    for n in ("isle-test-v6p", "isle-test-v6q", "isle-test-v4o"):
        nm.remove(n)
    assert kit.links(nm) == links0 and kit.firewall(nm) == fw0, kit.firewall(nm) ^ fw0
    assert nm.store.leases().data == {} and nm.store.records() == []
