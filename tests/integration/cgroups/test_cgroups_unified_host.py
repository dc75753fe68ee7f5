"""The v2 manager on this host's real cgroup2 mount (hybrid: /sys/fs/cgroup/unified).

cgroup.freeze, cgroup.events and device eBPF programs work in any non-root cgroup2 directory,
whatever controllers are enabled, so the v2 code runs for real here too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from isle.cgroups import V2Manager, detect_setup
from isle.sys import procfs

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture
def v2() -> Iterator[V2Manager]:
    setup = detect_setup()
    mount = "/sys/fs/cgroup" if setup == "v2" else "/sys/fs/cgroup/unified"
    if setup == "v1":
        pytest.skip("no cgroup2 mount")
    m = V2Manager(f"/isle-test-{uuid.uuid4().hex[:8]}", mount,
                  wanted=None if setup == "v2" else ["hugetlb"])
    procs: list[subprocess.Popen[bytes]] = []
    m.procs = procs  # type: ignore[attr-defined]
    yield m
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    if m.created:
        m.thaw()
    m.destroy()
    assert not os.path.exists(m.dir)


def _spawn(m: V2Manager, code: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-S", "-c", "import sys; sys.stdin.buffer.read(1)\n"
                          + code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    m.procs.append(p)  # type: ignore[attr-defined]
    m.apply(p.pid)
    return p


def test_device_rules_enforced_by_ebpf(v2: V2Manager) -> None:
    v2.create()
    v2.set({"devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]})
    p = _spawn(v2, "for path, mode in (('/dev/null','wb'), ('/dev/zero','rb'), ('/dev/zero','wb'),"
                   " ('/dev/full','rb')):\n"
                   "    try:\n        open(path, mode); print('ok')\n"
                   "    except PermissionError:\n        print('EPERM')")
    out, err = p.communicate(b"g", timeout=30)
    assert p.returncode == 0, err
    assert out.decode().split() == ["ok", "ok", "EPERM", "EPERM"]
    # a second set() replaces isle's program rather than stacking a second one
    v2.set({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"}]})
    p = _spawn(v2, "open('/dev/full','rb'); print('full ok')\n"
                   "try:\n    open('/dev/null','rb')\nexcept PermissionError:\n    print('EPERM')")
    out, err = p.communicate(b"g", timeout=30)
    assert out.decode().split("\n")[:2] == ["full ok", "EPERM"], err


def _utime(pid: int) -> int:
    f = procfs.stat_fields(pid)
    assert f is not None
    return int(f[11])


def _until(cond: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_freeze_stops_a_busy_process(v2: V2Manager) -> None:
    v2.create()
    p = _spawn(v2, "while True: pass")
    p.stdin.write(b"g")  # type: ignore[union-attr]
    p.stdin.flush()  # type: ignore[union-attr]
    assert _until(lambda: _utime(p.pid) > 0)  # it runs
    v2.freeze()
    assert v2.frozen()
    before = _utime(p.pid)
    time.sleep(0.3)  # what must not happen: any CPU time while frozen
    assert _utime(p.pid) == before
    v2.thaw()
    assert not v2.frozen() and _until(lambda: _utime(p.pid) > before)
    assert v2.pids() == [p.pid]


def test_hugetlb_limit_on_unified(v2: V2Manager) -> None:
    v2.create()
    if not os.path.exists(os.path.join(v2.dir, "hugetlb.2MB.max")):
        pytest.skip("hugetlb is not available on the cgroup2 mount")
    v2.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]})
    with open(os.path.join(v2.dir, "hugetlb.2MB.max")) as f:
        assert f.read().strip() == str(2 << 20)
