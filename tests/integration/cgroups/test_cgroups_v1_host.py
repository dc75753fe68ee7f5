"""Real cgroups on this (hybrid) host: limits read back, OOM, pids, freezer, devices, cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from isle.cgroups import V1Manager, detect_setup, manager_for, manager_from_state
from isle.errors import ConfigError
from isle.sys import procfs

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]
CG = "/sys/fs/cgroup"
PY = sys.executable


def _name() -> str:
    return f"/isle-test-{uuid.uuid4().hex[:8]}"


def _read(ctrl: str, path: str, file: str) -> str:
    with open(f"{CG}/{ctrl}{path}/{file}") as f:
        return f.read().strip()


def _all_dirs(path: str) -> list[str]:
    return [f"{CG}/{h}{path}" for h in os.listdir(CG) if os.path.isdir(f"{CG}/{h}{path}")]


@pytest.fixture
def cg() -> Iterator[V1Manager]:
    if detect_setup() == "v2":
        pytest.skip("host is pure cgroup v2")
    m = manager_for(_name(), "t")
    assert isinstance(m, V1Manager)
    procs: list[subprocess.Popen[bytes]] = []
    m.procs = procs  # type: ignore[attr-defined]
    yield m
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    if m.created and os.path.isdir(m.dir("freezer")):
        m.thaw()
    m.destroy()
    assert _all_dirs(m.path) == []


def _spawn(m: V1Manager, code: str) -> subprocess.Popen[bytes]:
    """A python child that waits for one byte on stdin (so it is in the cgroup before acting)."""
    p = subprocess.Popen([PY, "-S", "-c", "import sys; sys.stdin.buffer.read(1)\n" + code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    m.procs.append(p)  # type: ignore[attr-defined]
    m.apply(p.pid)
    return p


def _go(p: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str, str]:
    out, err = p.communicate(b"g", timeout=timeout)
    return p.returncode, out.decode(), err.decode()


def test_create_set_read_back_apply_destroy(cg: V1Manager) -> None:
    cg.create()
    made = cg.created + (cg.unified.created if cg.unified else [])
    assert sorted(made) == sorted(_all_dirs(cg.path))
    cg.set({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 7},
            "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
            "pids": {"limit": 42},
            "devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    p = cg.path
    assert _read("memory", p, "memory.limit_in_bytes") == str(64 << 20)
    assert _read("memory", p, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert _read("memory", p, "memory.swappiness") == "7"
    assert _read("cpu", p, "cpu.shares") == "512"
    assert _read("cpu", p, "cpu.cfs_quota_us") == "20000"
    assert _read("cpuset", p, "cpuset.cpus") == "0"
    assert _read("pids", p, "pids.max") == "42"
    assert _read("devices", p, "devices.list") == "c 1:3 rwm"
    if cg.unified:  # hybrid: hugetlb lives on the unified mount here
        assert _read("unified", p, "hugetlb.2MB.max") == "0"
    proc = _spawn(cg, "print(open('/proc/self/cgroup').read())")
    assert cg.pids() == [proc.pid]
    rc, out, _ = _go(proc)
    assert rc == 0 and f"memory:{p}" in out and f"freezer:{p}" in out and f"0::{p}" in out
    st = cg.stats()
    assert st["memory"]["limit"] == 64 << 20 and st["pids"]["limit"] == 42
    assert st["cpu"]["usage_ns"] > 0 and st["oom_kills"] == 0
    assert sum(st["cpu"]["percpu_ns"]) == st["cpu"]["usage_ns"]
    assert "total_rss" in st["memory"]["stat"] and isinstance(st["io"]["service_bytes"], list)


def test_devices_are_enforced(cg: V1Manager) -> None:
    cg.create()
    cg.set({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    proc = _spawn(cg, "open('/dev/null','w').write('x')\n"
                      "try:\n open('/dev/zero','rb')\nexcept PermissionError: print('EPERM')")
    rc, out, err = _go(proc)
    assert rc == 0, err
    assert out.strip() == "EPERM"


def test_oom_kill_is_counted(cg: V1Manager) -> None:
    cg.create()
    cg.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    proc = _spawn(cg, "x = b'x' * (256 << 20)\nprint('survived')")
    rc, out, _ = _go(proc)
    assert rc == -9 and "survived" not in out
    assert cg.oom_kills() == 1
    assert cg.stats()["memory"]["max_usage"] == 32 << 20  # failcnt stays 0 on this kernel


def test_pids_limit_stops_fork_bomb(cg: V1Manager) -> None:
    cg.create()
    cg.set({"pids": {"limit": 5}})
    proc = _spawn(cg, "import os, time\nkids = []\nfor _ in range(20):\n"
                      "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
                      "    if pid == 0:\n        time.sleep(2); os._exit(0)\n    kids.append(pid)\n"
                      "print(len(kids))\nfor k in kids: os.kill(k, 9); os.waitpid(k, 0)")
    rc, out, err = _go(proc)
    assert rc == 0, err
    assert out.strip() == "4"  # the parent is the 5th task


def test_freeze_and_thaw_a_running_process(cg: V1Manager) -> None:
    cg.create()
    proc = _spawn(cg, "import time\nwhile True: time.sleep(0.01)")
    proc.stdin.write(b"g")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    cg.freeze()  # returns once FROZEN (it bounds its own wait)
    assert cg.frozen() and _read("freezer", cg.path, "freezer.state") == "FROZEN"
    assert procfs.state(proc.pid) == "D"
    cg.thaw()
    assert not cg.frozen()
    deadline = time.monotonic() + 10  # the kernel wakes the tasks after thaw() returns
    while procfs.state(proc.pid) not in ("R", "S") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procfs.state(proc.pid) in ("R", "S")


def test_kernel_refusal_names_field_and_leaves_nothing(cg: V1Manager) -> None:
    cg.create()
    with pytest.raises(ConfigError, match=r"^linux\.resources\.cpu\.quota: kernel refused 500 "
                                          r"for cpu\.cfs_quota_us: EINVAL"):
        cg.set({"memory": {"limit": 64 << 20}, "cpu": {"quota": 500, "period": 100000}})
    assert _all_dirs(cg.path) == [] and cg.created == []
    cg.create()
    with pytest.raises(ConfigError, match=r"^linux\.resources\.cpu\.cpus: kernel refused 99 "):
        cg.set({"cpu": {"cpus": "99"}})
    assert _all_dirs(cg.path) == []


def test_update_after_apply_keeps_cgroup_and_orders_memsw(cg: V1Manager) -> None:
    cg.create()
    cg.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    proc = _spawn(cg, "import time; time.sleep(30)")
    # raising both past the current memsw needs memsw written first
    cg.set({"memory": {"limit": 96 << 20, "swap": 96 << 20}})
    assert _read("memory", cg.path, "memory.memsw.limit_in_bytes") == str(96 << 20)
    with pytest.raises(ConfigError, match="cpu.quota"):
        cg.set({"cpu": {"quota": 1}})
    assert os.path.isdir(cg.dir("memory"))  # a failed update does not tear down a live cgroup
    proc.kill()


def test_nested_parents_and_state_round_trip(cg: V1Manager) -> None:
    m = manager_for(f"{cg.path}/a/b", "t")
    m.create()
    assert f"{CG}/memory{cg.path}" in m.created  # the parent was new, so it is ours too
    again = manager_from_state(m.to_state())
    again.destroy()
    assert _all_dirs(cg.path) == []


def test_existing_parent_is_never_removed(cg: V1Manager) -> None:
    cg.create()
    child = manager_for(f"{cg.path}/c", "t")
    child.create()
    assert all(d.endswith(f"{cg.path}/c") for d in child.created)
    child.destroy()
    assert os.path.isdir(cg.dir("memory"))


def test_destroy_removes_cgroups_the_container_made(cg: V1Manager) -> None:
    cg.create()
    os.mkdir(f"{cg.dir('memory')}/inner")
    cg.destroy()
    assert _all_dirs(cg.path) == []


def test_default_parent_is_shared_and_goes_with_its_last_container() -> None:
    ids = [f"isle-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    a, b = (manager_for(None, i) for i in ids)
    a.create()
    b.create()
    assert all(d.endswith(f"/isle/{ids[0]}") for d in a.created)  # /isle is shared
    assert _read("cpuset", f"/isle/{ids[1]}", "cpuset.cpus")  # filled from the kept parent
    a.destroy()
    assert os.path.isdir(f"{CG}/memory/isle/{ids[1]}")
    assert os.path.isdir(f"{CG}/memory/isle")  # b is still in it
    b.destroy()
    assert not [c for c in os.listdir(CG) for i in ids if os.path.exists(f"{CG}/{c}/isle/{i}")]
    # the shared parent went with its last container, unless another isle on this host (another
    # root, a test run beside this one) still has containers in it
    for c in os.listdir(CG):
        if os.path.isdir(f"{CG}/{c}/isle"):
            assert [e.name for e in os.scandir(f"{CG}/{c}/isle") if e.is_dir()], c


def test_empty_cpuset_parent_made_by_another_tool_is_filled(cg: V1Manager) -> None:
    parent = f"{CG}/cpuset{cg.path}"
    os.mkdir(parent)  # like a tool that makes a parent and leaves its cpuset empty
    try:
        assert _read("cpuset", cg.path, "cpuset.cpus") == ""
        child = manager_for(f"{cg.path}/ctr", "t")
        child.create()
        root_cpus = _read("cpuset", "", "cpuset.cpus")
        assert _read("cpuset", f"{cg.path}/ctr", "cpuset.cpus") == root_cpus
        p = subprocess.Popen(["sleep", "5"])
        try:
            child.apply(p.pid)
        finally:
            p.kill()
            p.wait()
        child.destroy()
        assert os.path.isdir(parent)  # not ours: filled, but kept
    finally:
        for d in _all_dirs(cg.path):
            os.rmdir(d)


@pytest.mark.parametrize("order", ["first-made-goes-first", "first-made-goes-last"])
def test_shared_parent_goes_with_whichever_container_is_last(order: str) -> None:
    """containerd's `ctr` puts containers at /<namespace>/<id>: the first container makes the
    parent, later ones find it. Whoever is removed last takes the parent isle made with it, in
    every hierarchy (the unified one too), whatever the order; a sibling made by someone else
    keeps it."""
    parent = _name()
    a, b = (manager_for(f"{parent}/{n}", n) for n in ("a", "b"))
    a.create()
    b.create()
    first, last = (a, b) if order == "first-made-goes-first" else (b, a)
    try:
        first.destroy()
        assert _all_dirs(parent), "the parent went while a container was still in it"
        last.destroy()
        assert _all_dirs(parent) == []
    finally:
        for d in _all_dirs(f"{parent}/a") + _all_dirs(f"{parent}/b") + _all_dirs(parent):
            os.rmdir(d)


def test_parent_isle_made_stays_while_a_foreign_cgroup_is_in_it() -> None:
    parent = _name()
    a = manager_for(f"{parent}/a", "a")
    a.create()
    foreign = f"{CG}/pids{parent}/theirs"
    os.mkdir(foreign)  # another tool's cgroup under the parent isle made
    try:
        a.destroy()
        assert os.path.isdir(foreign)
    finally:
        os.rmdir(foreign)
        for d in _all_dirs(parent):
            os.rmdir(d)
