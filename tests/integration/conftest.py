"""Integration tests run against the real kernel; after each one, nothing may be left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _cgroups() -> set[str]:
    out: set[str] = set()
    for base in Path("/sys/fs/cgroup").iterdir():
        try:
            for root, dirs, _ in os.walk(base):
                depth = root[len(str(base)):].count("/")
                if depth >= 4:
                    dirs[:] = []
                for d in dirs:
                    p = os.path.join(root, d)
                    if "isle" in d or "test" in d or os.path.basename(root) == "isle":
                        out.add(p)
        except OSError:
            pass
    return out


def _links() -> set[str]:
    try:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def _children() -> set[int]:
    """Processes descended from this test process (containers, monitors, QEMU)."""
    me = os.getpid()
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, ValueError):
            continue
        if state != "Z":
            kids.setdefault(ppid, []).append(int(d))
    seen: set[int] = set()
    todo = [me]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def snapshot() -> dict[str, set]:
    if os.geteuid() != 0:
        return {"mounts": _mounts()}
    return {"mounts": _mounts(), "cgroups": _cgroups(), "links": _links(), "netns": _netns(),
            "children": _children()}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail the test if it left a mount, cgroup, link, netns or process behind."""
    # ISLE_TEST_SKIP_LEAK_CHECK=1: only for engineers whose benchmarks share this host with a test
    # run (a benchmark's containers would count as the test's leaks); CI never sets it
    if request.node.get_closest_marker("leaks_ok") or os.environ.get("ISLE_TEST_SKIP_LEAK_CHECK"):
        yield
        return
    import fcntl

    # the leak check looks at the whole host: test runs in other shells (several engineers on one
    # machine) take turns test by test, so one run's containers never count as another's leaks
    with open("/run/isle-tests.lock" if os.geteuid() == 0 else os.devnull, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = snapshot()
        yield
        after = snapshot()
    leaked = {k: sorted(map(str, after[k] - before.get(k, set()))) for k in after}
    leaked = {k: v for k, v in leaked.items() if v}
    assert not leaked, f"test left these behind: {leaked}"
