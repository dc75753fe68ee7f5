"""Integration tests run against the real kernel; after each one, nothing may be left behind."""

from __future__ import annotations

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


def _nft_tables() -> set[str]:
    """isle's nftables tables (`inet isle-<bridge>`): one per network with members."""
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in out.splitlines() if " isle-" in line}


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
            "nft": _nft_tables(), "children": _children()}


# Several test runs, benchmarks or conformance suites may share one host (engineers' shells, a CI
# job beside a benchmark). A test answers only for what it made: mounts under its run's roots
# (pytest's basetemp) or naming one of its ids, its own process tree, and cgroups, links and netns
# naming one of its ids (container and network ids: the names of its state dirs and files). So no
# run fails on another's containers, and no run waits for another. ISLE_TEST_HOST_LEAKS=1 counts
# every new mount, cgroup, link and netns on the host (a run alone on its machine).
_ID = re.compile(r"[0-9a-f]{12,64}")


def own_ids(roots: list[Path]) -> set[str]:
    """Ids named under the test's roots (12-hex prefixes, and 8-hex ones, which bridge names
    carry as "isle-<8 hex>"), and the names a root's network store gives its default bridge and
    taps ("isle<6 hex>d", "isle<4 hex>t": a hash of the store's path, see net/networks.py)."""
    import hashlib

    ids: set[str] = set()
    for r in roots:
        for top, dirs, files in os.walk(r):
            for n in (*dirs, *files):
                for m in _ID.findall(n):
                    ids.update((m[:12], m[:8]))
            if "networks" in dirs:
                tag = hashlib.sha256(os.path.join(top, "networks").encode()).hexdigest()
                ids.update((f"isle{tag[:6]}d", f"isle{tag[:4]}t"))
    return ids


def scoped(leaked: dict[str, list[str]], roots: list[Path], ids: set[str]) -> dict[str, list[str]]:
    """What of leaked this test made (see above)."""
    tops = tuple(str(r).rstrip("/") + "/" for r in roots)
    out = {}
    for kind, items in leaked.items():
        if kind == "children":
            mine = items
        else:
            mounts = kind == "mounts"
            mine = [x for x in items if any(i in x for i in ids)
                    or (mounts and (x.rstrip("/") + "/").startswith(tops))]
        if mine:
            out[kind] = mine
    return out


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Fail the test if it left a mount, cgroup, link, netns or process behind (see above)."""
    # ISLE_TEST_SKIP_LEAK_CHECK=1: no check at all (an engineer's benchmark sharing the host)
    if request.node.get_closest_marker("leaks_ok") or os.environ.get("ISLE_TEST_SKIP_LEAK_CHECK"):
        yield
        return
    before = snapshot()
    yield
    after = snapshot()
    leaked = {k: sorted(map(str, after[k] - before.get(k, set()))) for k in after}
    leaked = {k: v for k, v in leaked.items() if v}
    if leaked and not os.environ.get("ISLE_TEST_HOST_LEAKS"):
        roots = [tmp_path_factory.getbasetemp()]
        leaked = scoped(leaked, roots, own_ids(roots))
    assert not leaked, f"test left these behind: {leaked}"
