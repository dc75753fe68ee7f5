"""Rootless networking: slirp4netns for a user+net namespace (joined by pid, as rootless does)."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from isle.errors import ConfigError
from isle.net import PortMapping, parse_publish
from isle.net import slirp

pytestmark = [pytest.mark.netns, pytest.mark.root]


def slirps() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "slirp4netns"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.timeout(60)
def test_slirp_ports_outbound_dns_and_teardown(nm, procs, kit, outside):
    before = slirps()
    user = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sleep", "60"])
    try:
        time.sleep(0.3)
        cid = "5" * 64
        att = nm.connect_slirp(cid, user.pid, parse_publish("127.0.0.1::7000"), name="rootless")
        assert (att.ip, att.gateway) == ("10.0.2.100", "10.0.2.2")
        pid = nm.store.record(cid)["slirp"]["pid"]
        assert slirp.is_running(pid)
        ns = f"/proc/{user.pid}/ns/net"
        assert "10.0.2.100/24" in kit.run_in(ns, "ip", "-o", "addr").stdout
        assert nm.render_etc(cid)["/etc/resolv.conf"].endswith("nameserver 10.0.2.3\n")

        procs.py_server(ns, 7000, "slirp-ok")
        with socket.create_connection(("127.0.0.1", att.ports[0].host_port), timeout=5) as s:
            assert s.recv(100) == b"slirp-ok"
        procs.py_server(outside, 9)
        assert kit.run_in(ns, "busybox", "nc", "-w", "3", "198.51.100.2", "9").stdout == "198.51.100.1"

        # a host port that is taken: clear error, no slirp4netns or record left behind
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            other = nm.create_netns("6" * 64)
            with pytest.raises(ConfigError, match=f"host port {port}/tcp is already in use"):
                nm.connect_slirp("6" * 64, other, [PortMapping("127.0.0.1", port, 80)])
        assert nm.store.record("6" * 64) is None and slirps() - before == {pid}
        # slirp4netns itself failing (tap0 exists in that namespace) leaves nothing either
        with pytest.raises(Exception, match="slirp4netns exited"):
            nm.connect_slirp("7" * 64, user.pid)
        assert nm.store.record("7" * 64) is None and slirps() - before == {pid}
        nm.teardown("6" * 64)

        nm.teardown(cid)
        nm.teardown(cid)
        assert slirps() == before and nm.store.records() == []
    finally:
        user.kill()
        user.wait()
