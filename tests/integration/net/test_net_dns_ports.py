"""Two namespaces on one user network resolve each other; ports answer on 127.0.0.1; cleanup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from isle.net import parse_expose, parse_publish

pytestmark = [pytest.mark.netns, pytest.mark.root]


def fetch(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=5) as s:
        return s.recv(100).decode()


@pytest.mark.timeout(60)
def test_user_network_names_aliases_ports_and_clean_teardown(nm, procs, kit, tmp_path):
    run_in = kit.run_in
    fw0 = kit.firewall(nm)
    nm.create("isle-test-web", subnet="10.201.7.0/24")
    a_id, b_id, c_id = "a" * 64, "b" * 64, "c" * 64
    ns_a, ns_b, ns_c = nm.create_netns(a_id), nm.create_netns(b_id), nm.create_netns(c_id)
    a = nm.connect(a_id, ns_a, [("isle-test-web", {"aliases": ["db"]})],
                   parse_publish("127.0.0.1::7000") + parse_expose(["7001/tcp"])
                   + parse_publish("127.0.0.1::7002/udp"), name="alpha")
    b = nm.connect(b_id, ns_b, ["isle-test-web"], name="beta")
    c = nm.connect(c_id, ns_c, ["bridge"], name="gamma")      # the default network
    assert a.ip == "10.201.7.2" and b.ip == "10.201.7.3" and a.gateway == "10.201.7.1"
    assert [p.host_port > 0 for p in a.ports] == [True] * 3 and nm.port(a_id) == list(a.ports)

    # names and aliases through aardvark-dns, using the resolv.conf isle rendered for b
    files = nm.render_etc(b_id, hostname="beta")
    assert files["/etc/resolv.conf"].count("nameserver") == 1
    assert "nameserver 10.201.7.1" in files["/etc/resolv.conf"]
    assert "10.201.7.3\tbeta" in files["/etc/hosts"] and files["/etc/hostname"] == "beta\n"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(files["/etc/resolv.conf"])
    for name in ("alpha", "db", a_id[:12]):
        out = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "busybox", "sh", "-c",
             'mount --bind "$0" /etc/resolv.conf && exec nsenter --net="$1" busybox nslookup "$2"',
             str(resolv), ns_b, name], capture_output=True, text=True, timeout=10)
        assert "10.201.7.2" in out.stdout, (name, out.stdout, out.stderr)

    # the default network resolves nothing (Docker's rule): no DNS server for it at all
    c_files = nm.render_etc(c_id)
    assert c.networks["bridge"].dns_servers == ()
    assert c.gateway not in c_files["/etc/resolv.conf"]
    r = run_in(ns_c, "busybox", "nslookup", "alpha", c.gateway, check=False, timeout=15)
    assert "10.201.7.2" not in r.stdout
    assert run_in(ns_c, "busybox", "ping", "-c1", "-W2", c.gateway).returncode == 0

    # published ports: from the host's 127.0.0.1, and from another namespace via its gateway
    procs.py_server(ns_a, 7000, "seven")
    procs.py_server(ns_a, 7001, "eight")
    assert fetch("127.0.0.1", a.ports[0].host_port) == "seven"
    assert fetch("127.0.0.1", a.ports[1].host_port) == "eight"
    udp = ("import socket\ns=socket.socket(2,2); s.bind(('0.0.0.0',7002)); print('ready',flush=True)\n"
           "while True:\n d,a=s.recvfrom(100); s.sendto(b'udp:'+d, a)\n")
    p = procs.spawn(ns_a, sys.executable, "-c", udp, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(b"ping", ("127.0.0.1", a.ports[2].host_port))
        assert u.recvfrom(100)[0] == b"udp:ping"
    r = run_in(ns_c, "busybox", "nc", "-w", "3", c.gateway, str(a.ports[1].host_port))
    assert r.stdout == "eight"
    # ...but a port published on 127.0.0.1 only is not reachable on other addresses
    r = run_in(ns_c, "busybox", "nc", "-w", "2", c.gateway, str(a.ports[0].host_port), check=False)
    assert r.stdout == ""
    # container to container by name's address on the bridge
    assert run_in(ns_b, "busybox", "nc", "-w", "3", "10.201.7.2", "7000").stdout == "seven"

    # members block removal; teardown is complete and idempotent
    with pytest.raises(Exception, match="has 2 connected"):
        nm.remove("isle-test-web")
    info = nm.inspect("isle-test-web")
    assert sorted(m["name"] for m in info["containers"].values()) == ["alpha", "beta"]
    procs.close()
    bridges = [nm.inspect(n)["bridge"] for n in ("isle-test-web", "bridge")]
    for cid in (a_id, b_id, c_id, a_id):
        nm.teardown(cid)
    nm.remove("isle-test-web")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any(br in links for br in bridges) and kit.links(nm) == set()
    assert nm.store.leases().data == {} and nm.store.records() == []
    assert os.listdir(nm.store.netns_dir) == []
    left = kit.firewall(nm) - fw0
    assert not left, left
    assert kit.aardvark_pids(nm.store.netavark_dir) == []
