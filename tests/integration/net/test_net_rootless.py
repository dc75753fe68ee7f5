"""Really rootless: an unprivileged user (nobody) gives its own user+net namespace networking with
slirp4netns through isle's API, publishes a port on 127.0.0.1 and tears it all down."""

from __future__ import annotations

import json
import os
import shutil
import stat
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.root]

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CHILD = """
import json, sys
from isle.net import NetworkManager, parse_publish
nm = NetworkManager(root=sys.argv[1] + "/root", runroot=sys.argv[1] + "/run")
cid = "9" * 64
if sys.argv[2] == "up":
    assert nm.create_netns(cid) is None          # rootless: the runtime owns the netns
    att = nm.connect_slirp(cid, int(sys.argv[3]), parse_publish("127.0.0.1::7000"))
    print(json.dumps({"ip": att.ip, "port": att.ports[0].host_port,
                      "resolv": nm.render_etc(cid)["/etc/resolv.conf"]}))
else:
    nm.teardown(cid)
    print(json.dumps({"records": nm.store.records()}))
"""


@pytest.mark.timeout(60)
def test_unprivileged_user_gets_slirp_networking(procs, kit):
    d = tempfile.mkdtemp(prefix="isle-test-rootless-")      # pytest's tmp_path is root-only
    os.chown(d, 65534, 65534)
    tun_mode = None
    user = subprocess.Popen(NOBODY + ["unshare", "--user", "--map-root-user", "--net", "sleep", "60"])
    try:
        time.sleep(0.3)
        up = subprocess.run(NOBODY + [sys.executable, "-c", CHILD, d, "up", str(user.pid)],
                            capture_output=True, text=True, timeout=30)
        if stat.S_IMODE(os.stat("/dev/net/tun").st_mode) & 0o006 != 0o006:
            assert up.returncode == 1 and "/dev/net/tun is not usable by uid 65534" in up.stderr
            # this VM has it 0600; Debian's udev rule makes it 0666: use that for the rest
            tun_mode = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
            os.chmod("/dev/net/tun", 0o666)
            up = subprocess.run(NOBODY + [sys.executable, "-c", CHILD, d, "up", str(user.pid)],
                                capture_output=True, text=True, timeout=30)
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["ip"] == "10.0.2.100" and "nameserver 10.0.2.3" in info["resolv"]
        ns = f"/proc/{user.pid}/ns/net"
        procs.py_server(ns, 7000, "rootless-ok")
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=5) as s:
            assert s.recv(50) == b"rootless-ok"
        owners = subprocess.run(["ps", "-o", "user=", "-C", "slirp4netns"], capture_output=True,
                                text=True).stdout.split()
        assert "nobody" in owners
        down = subprocess.run(NOBODY + [sys.executable, "-c", CHILD, d, "down"],
                              capture_output=True, text=True, timeout=30)
        assert down.returncode == 0 and json.loads(down.stdout) == {"records": []}, down.stderr
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", info["port"]), timeout=2)
    finally:
        user.kill()
        user.wait()
        shutil.rmtree(d, ignore_errors=True)
        if tun_mode is not None:
            os.chmod("/dev/net/tun", tun_mode)
