"""The v2 manager against a fake unified tree in tmp_path (the kernel's part played by the test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from isle.cgroups import V2Manager, manager_for, manager_from_state
from isle.errors import ConfigError, IsleError, Unsupported

CTRLS = "cpuset cpu io memory hugetlb pids"
LEAF_FILES = ("cgroup.procs", "cgroup.freeze", "cgroup.events", "memory.max", "memory.low",
              "memory.swap.max", "cpu.weight", "cpu.max", "pids.max", "io.max",
              "hugetlb.2MB.max", "memory.high", "cpuset.cpus")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text(CTRLS + "\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "cgroup.procs").write_text("")
    return tmp_path


def kernel_populates(d: Path) -> None:
    for f in LEAF_FILES:
        (d / f).write_text("")
    (d / "cgroup.events").write_text("populated 0\nfrozen 0\n")


def kernel_removes(d: Path) -> None:
    for f in d.iterdir():
        if f.is_file():
            f.unlink()


def test_create_enables_controllers_and_records_dirs(root: Path) -> None:
    m = manager_for("/a/abc", "abc", root=str(root))
    assert isinstance(m, V2Manager) and m.dir == f"{root}/a/abc"
    m.create()
    assert m.created == [f"{root}/a", f"{root}/a/abc"]
    assert (root / "cgroup.subtree_control").read_text() == "+" + " +".join(CTRLS.split())
    assert manager_from_state(m.to_state()).to_state() == m.to_state()


def test_default_parent_is_kept_for_the_next_container(root: Path) -> None:
    a, b = manager_for(None, "a", root=str(root)), manager_for(None, "b", root=str(root))
    a.create()
    assert a.created == [f"{root}/isle/a"]  # /isle is shared and stays: never recorded as ours
    a.destroy()
    assert (root / "isle").is_dir() and not (root / "isle" / "a").exists()
    b.create()  # the parent is there now: one mkdir
    assert b.created == [f"{root}/isle/b"]
    b.destroy()
    assert [p.name for p in (root / "isle").iterdir() if p.is_dir()] == []


def test_set_writes_plan_in_order(root: Path) -> None:
    m = manager_for("/c1", "c1", root=str(root))
    m.create()
    leaf = root / "c1"
    kernel_populates(leaf)
    m.set({"memory": {"limit": 64 << 20, "swap": 96 << 20}, "cpu": {"shares": 1024,
           "quota": 50000, "period": 100000, "cpus": "0"}, "pids": {"limit": 9},
           "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10}]},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
           "unified": {"memory.high": "50M"}})
    got = {f: (leaf / f).read_text() for f in LEAF_FILES}
    assert got["memory.max"] == str(64 << 20) and got["memory.swap.max"] == str(32 << 20)
    assert got["cpu.weight"] == "100" and got["cpu.max"] == "50000 100000"
    assert got["pids.max"] == "9" and got["io.max"] == "8:0 rbps=10"
    assert got["hugetlb.2MB.max"] == "0" and got["memory.high"] == "50M"
    assert got["cpuset.cpus"] == "0"
    m.apply(4242)
    assert (leaf / "cgroup.procs").read_text() == "4242"
    assert m.pids() == [4242]


def test_missing_file_is_unsupported_and_fresh_cgroup_is_removed(root: Path) -> None:
    m = manager_for("/isle/c2", "c2", root=str(root))
    m.create()
    with pytest.raises(Unsupported, match=r"^linux\.resources\.pids\.limit: .*pids\.max"):
        m.set({"pids": {"limit": 3}})
    assert not (root / "isle" / "c2").exists() and m.created == []


def test_devices_unenforceable_is_unsupported_not_ignored(root: Path) -> None:
    # a fake tree is no cgroup2 directory: the eBPF program cannot attach (or, unprivileged, load)
    m = manager_for("/c3", "c3", root=str(root))
    m.create()
    with pytest.raises(Unsupported, match=r"^linux\.resources\.devices: .*eBPF"):
        m.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert not (root / "c3").exists()
    m.create()
    m.set({"devices": [{"allow": True, "type": "a", "access": "rwm"}]})  # allow-all: nothing to do
    m.destroy()


def test_bad_value_names_field_before_any_write(root: Path) -> None:
    m = manager_for("/c4", "c4", root=str(root))
    m.create()
    kernel_populates(root / "c4")
    with pytest.raises(ConfigError, match=r"^linux\.resources\.memory\.swap: "):
        m.set({"memory": {"limit": 100, "swap": 50}})
    assert (root / "c4" / "memory.max").read_text() == ""


def test_freeze_waits_for_frozen_event(root: Path) -> None:
    m = manager_for("/c5", "c5", root=str(root))
    m.create()
    leaf = root / "c5"
    kernel_populates(leaf)
    with pytest.raises(IsleError, match="did not freeze"):
        m.freeze(timeout=0.05)
    assert (leaf / "cgroup.freeze").read_text() == "0"  # gave up: thawed again
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    m.freeze()
    assert (leaf / "cgroup.freeze").read_text() == "1" and m.frozen()
    m.thaw()
    assert (leaf / "cgroup.freeze").read_text() == "0"


def test_stats_and_oom_kills(root: Path) -> None:
    m = manager_for("/c6", "c6", root=str(root))
    m.create()
    leaf = root / "c6"
    (leaf / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
                                   "nr_throttled 2\nthrottled_usec 30\n")
    (leaf / "memory.current").write_text("4096\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "pids.max").write_text("10\n")
    (leaf / "memory.stat").write_text("anon 4096\nfile 0\n")
    (leaf / "io.stat").write_text("8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n")
    assert m.stats() == {
        "cpu": {"usage_ns": 1500000, "user_ns": 1000000, "system_ns": 500000, "percpu_ns": [],
                "throttled_periods": 2, "throttled_ns": 30000},
        "memory": {"usage": 4096, "limit": None, "max_usage": None, "failcnt": 7,
                   "stat": {"anon": 4096, "file": 0}},
        "pids": {"current": 3, "limit": 10},
        "io": {"service_bytes": [{"major": 8, "minor": 0, "op": "read", "value": 512},
                                 {"major": 8, "minor": 0, "op": "write", "value": 1024}]},
        "oom_kills": 1}
    assert m.oom_kills() == 1
    kernel_removes(leaf)
    m.destroy()
    assert not leaf.exists()


def test_existing_leaf_is_joined_not_removed(root: Path) -> None:
    (root / "pre").mkdir()
    m = manager_for("/pre", "x", root=str(root))
    m.create()
    assert m.created == []
    m.destroy()
    assert (root / "pre").is_dir()


def test_lazy_manager_leaves_ancestors_alone_until_a_limit_needs_a_controller(root: Path) -> None:
    """The unified half of a hybrid host: create() writes no ancestor's subtree_control."""
    m = V2Manager("/isle/lz", str(root), wanted=["hugetlb"], lazy=True)
    m.create()
    assert (root / "cgroup.subtree_control").read_text() == ""
    assert not (root / "isle" / "cgroup.subtree_control").exists()
    m.enable({"hugetlb"})
    assert (root / "cgroup.subtree_control").read_text() == "+hugetlb"
    assert manager_from_state(m.to_state()).lazy
