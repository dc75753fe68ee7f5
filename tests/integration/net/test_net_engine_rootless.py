"""Rootless `isle run` gets networking (slirp4netns, podman's rootless default): a real non-root
user runs busybox with an address, a resolver, a published port on 127.0.0.1, and no leftovers."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SITE = REPO / ".venv" / "lib" / "python3.11" / "site-packages"
SYSPY = "/usr/bin/python3.11"

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(180)]


@pytest.fixture
def user():
    if not os.path.exists(SYSPY) or not shutil.which("newuidmap") or not shutil.which("slirp4netns"):
        pytest.skip("needs the system python3.11, uidmap and slirp4netns")
    name = "islen" + secrets.token_hex(3)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    tun = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
    try:
        for f, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
            if not any(line.startswith(name + ":") for line in Path(f).read_text().splitlines()):
                subprocess.run(["usermod", flag, "400000-465535", name], check=True)
        os.chmod("/dev/net/tun", 0o666)    # Debian's udev rule; this VM has 0600
        yield pwd.getpwnam(name)
    finally:
        os.chmod("/dev/net/tun", tun)
        uid = pwd.getpwnam(name).pw_uid
        subprocess.run(["pkill", "-KILL", "-u", str(uid)], capture_output=True)  # only this user's
        subprocess.run(["userdel", "-r", name], capture_output=True)
        shutil.rmtree(f"/tmp/isle-{uid}", ignore_errors=True)


def as_user(u, cmd: str) -> subprocess.CompletedProcess[str]:
    env = f"PYTHONPATH={REPO / 'src'}:{SITE}"
    return subprocess.run(["su", "-", u.pw_name, "-c", f"cd /tmp && {env} {SYSPY} -m isle.cli.main {cmd}"],
                          capture_output=True, text=True, timeout=120)


def _slirps(uid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid and b"slirp4netns" in open(
                        f"/proc/{d}/cmdline", "rb").read():
                    out.append(int(d))
            except OSError:
                pass
    return out


def test_rootless_run_gets_slirp_network_and_ports(user):
    os.chmod("/dev/net/tun", 0o600)       # this VM's own mode: the default network falls back
    cp = as_user(user, "run --rm busybox ip -o link")
    assert cp.returncode == 0 and "tap0" not in cp.stdout and "/dev/net/tun" in cp.stderr
    cp = as_user(user, "run --rm -p 127.0.0.1::80 busybox true")   # asked for: a clear error
    assert cp.returncode != 0 and "/dev/net/tun is not usable" in cp.stderr
    assert as_user(user, "ps -aq").stdout.split() == []
    cp = as_user(user, "create --name nonet busybox true")    # ps and inspect say what it gets
    assert cp.returncode == 0, cp.stderr
    assert as_user(user, "ps -a --format '{{.Networks}}'").stdout.split() == ["none"]
    (info,) = json.loads(as_user(user, "inspect nonet").stdout)
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert as_user(user, "rm nonet").returncode == 0
    os.chmod("/dev/net/tun", 0o666)
    cp = as_user(user, "run --rm busybox sh -c 'ip -o -4 addr show tap0; cat /etc/resolv.conf'")
    assert cp.returncode == 0, cp.stderr
    assert "10.0.2.100/24" in cp.stdout and "nameserver 10.0.2.3" in cp.stdout
    cp = as_user(user, "run --rm --network none busybox ip -o link")
    assert cp.returncode == 0 and "tap0" not in cp.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cp = as_user(user, f"run -d --name web -p 127.0.0.1:{port}:80 busybox sh -c "
                       "'echo rootless-web > /i && exec httpd -f -p 80 -h /'")
    assert cp.returncode == 0, cp.stderr
    data = b""
    for _ in range(50):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
                c.sendall(b"GET /i HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := c.recv(4096):     # headers and body may come apart
                    data += chunk
                if data:
                    break
        except OSError:
            time.sleep(0.1)
    assert b"rootless-web" in data
    assert "80/tcp -> 127.0.0.1:" in as_user(user, "port web").stdout
    assert as_user(user, "ps --format '{{.Networks}}'").stdout.split() == ["slirp4netns"]
    (info,) = json.loads(as_user(user, "inspect web").stdout)
    assert info["HostConfig"]["NetworkMode"] == "slirp4netns"
    assert list(info["NetworkSettings"]["Networks"]) == ["slirp4netns"]
    assert len(_slirps(user.pw_uid)) == 1
    assert as_user(user, "rm -f web").returncode == 0
    assert _slirps(user.pw_uid) == []
    runroots = [Path(f"/tmp/isle-{user.pw_uid}"), Path(f"/run/user/{user.pw_uid}")]
    seen = [d for r in runroots if r.exists() for d in r.rglob("networks/containers")]
    assert seen, "the network runroot was not where expected"   # so the next check means something
    assert [f for d in seen for f in d.iterdir()] == []      # no attachment record left
