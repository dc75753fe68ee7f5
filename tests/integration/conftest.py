"""Integration tests run against the real kernel; after each one, nothing may be left behind."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from isle.sys import procfs


def _mounts() -> set[str]:
    return set(procfs.mountpoints())


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
        f = procfs.stat_fields(int(d))
        if f is not None and f[0] != b"Z":
            kids.setdefault(int(f[1]), []).append(int(d))
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


# Several test runs may share one host (engineers' shells, a CI job beside a benchmark). Each run
# registers its pid under SESSIONS; while another live run is registered, the host-wide kinds
# (cgroups, links, netns) count only what carries one of this test's ids, and mounts only what
# lies under this run's own roots: one run never fails on another's containers, and no run waits
# for another. Alone on the host (CI), every new cgroup, link and netns counts.
SESSIONS = "/run/isle-test-sessions"
_registered: list[str] = []
_ID = re.compile(r"[0-9a-f]{12,64}")


def _register() -> None:
    if _registered or os.geteuid() != 0:
        return
    os.makedirs(SESSIONS, exist_ok=True)
    me = os.path.join(SESSIONS, str(os.getpid()))
    open(me, "w").close()
    _registered.append(me)

    def _unregister() -> None:
        with contextlib.suppress(OSError):
            os.unlink(me)

    atexit.register(_unregister)


def others_running() -> bool:
    """Whether another live test run is registered on this host (stale entries are dropped)."""
    try:
        pids = os.listdir(SESSIONS)
    except OSError:
        return False
    found = False
    for p in pids:
        if not p.isdigit() or int(p) == os.getpid():
            continue
        if procfs.start_time(int(p)) is None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(SESSIONS, p))
        else:
            found = True
    return found


def own_ids(roots: list[Path]) -> set[str]:
    """Container/network ids under the test's roots (state dirs and files are named by them)."""
    ids: set[str] = set()
    for r in roots:
        for _, dirs, files in os.walk(r):
            for n in (*dirs, *files):
                ids.update(m[:12] for m in _ID.findall(n))
    return ids


def scoped(leaked: dict[str, list[str]], roots: list[Path], ids: set[str]) -> dict[str, list[str]]:
    """What of leaked this test made: mounts under its roots, processes of its own tree (always
    scoped), cgroups, links and netns naming one of its ids."""
    tops = tuple(str(r).rstrip("/") + "/" for r in roots)
    out = {}
    for kind, items in leaked.items():
        if kind == "children":
            mine = items
        elif kind == "mounts":
            mine = [m for m in items if (m.rstrip("/") + "/").startswith(tops)]
        else:
            mine = [x for x in items if any(i in x for i in ids)]
        if mine:
            out[kind] = mine
    return out


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Fail the test if it left a mount, cgroup, link, netns or process behind (see SESSIONS)."""
    # ISLE_TEST_SKIP_LEAK_CHECK=1: only for engineers whose benchmarks share this host with a test
    # run (a benchmark's containers would count as the test's leaks); CI never sets it
    if request.node.get_closest_marker("leaks_ok") or os.environ.get("ISLE_TEST_SKIP_LEAK_CHECK"):
        yield
        return
    _register()
    before = snapshot()
    yield
    after = snapshot()
    leaked = {k: sorted(map(str, after[k] - before.get(k, set()))) for k in after}
    leaked = {k: v for k, v in leaked.items() if v}
    if leaked and others_running():
        roots = [tmp_path_factory.getbasetemp()]
        leaked = scoped(leaked, roots, own_ids(roots))
    assert not leaked, f"test left these behind: {leaked}"
