"""Rootless: a real non-root user (created here, with /etc/subuid and /etc/subgid ranges) runs
`isle run --rm busybox id` in a user namespace, with all state under its own home."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SITE = REPO / ".venv" / "lib" / "python3.11" / "site-packages"
SYSPY = "/usr/bin/python3.11"

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


@pytest.fixture
def user():
    if not os.path.exists(SYSPY) or not shutil.which("newuidmap"):
        pytest.skip("needs the system python3.11 (the venv's interpreter may be private) and uidmap")
    name = "islet" + secrets.token_hex(3)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        for f, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
            if not any(line.startswith(name + ":") for line in Path(f).read_text().splitlines()):
                subprocess.run(["usermod", flag, "300000-365535", name], check=True)
        yield pwd.getpwnam(name)
    finally:
        uid = pwd.getpwnam(name).pw_uid
        subprocess.run(["pkill", "-KILL", "-u", str(uid)], capture_output=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)
        shutil.rmtree(f"/tmp/isle-{uid}", ignore_errors=True)


def as_user(u, cmd: str) -> subprocess.CompletedProcess[str]:
    env = f"PYTHONPATH={REPO / 'src'}:{SITE}"
    return subprocess.run(["su", "-", u.pw_name, "-c", f"cd /tmp && {env} {SYSPY} -m isle.cli.main {cmd}"],
                          capture_output=True, text=True, timeout=120)


def test_rootless_run_in_user_namespace(user):
    cp = as_user(user, "run --rm busybox sh -c 'id -u; cat /proc/self/uid_map; touch /made'")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split("\n")
    assert lines[0] == "0"                                    # root inside ...
    assert lines[1].split() == ["0", str(user.pw_uid), "1"]   # ... is the user outside
    assert len(lines[2].split()) == 3 and lines[2].split()[0] == "1"  # subuid range mapped
    state = Path(user.pw_dir) / ".local" / "share" / "isle"
    assert (state / "isle.db").exists()
    for top, dirs, files in os.walk(state):
        for n in dirs + files:
            assert os.lstat(os.path.join(top, n)).st_uid == user.pw_uid, n  # nothing as root
    assert as_user(user, "ps -aq").stdout == ""
    assert not (state / "containers").exists() or not os.listdir(state / "containers")
    # limits cannot be enforced without a delegated cgroup: say so
    cp = as_user(user, "run --rm -m 64m busybox true")
    assert cp.returncode == 0 and "ignored" in cp.stderr  # as Docker and podman rootless on v1
