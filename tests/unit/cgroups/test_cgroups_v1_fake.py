"""V1Manager.set() against fake per-controller dirs: absent files, BFQ fallback, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

import isle.cgroups
from isle.cgroups import V1Manager, manager_for
from isle.errors import ConfigError, InvalidState, Unsupported

FILES = {"memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
         "blkio": ["blkio.bfq.weight", "blkio.bfq.weight_device"],
         "pids": ["pids.max"]}


@pytest.fixture
def m(tmp_path: Path) -> V1Manager:
    mounts = {}
    for ctrl, files in FILES.items():
        leaf = tmp_path / ctrl / "c"
        leaf.mkdir(parents=True)
        for f in files:
            (leaf / f).write_text("")
        mounts[ctrl] = str(tmp_path / ctrl)
    return V1Manager("/c", mounts)


def test_absent_kernel_memory_file_is_unsupported_naming_field(m: V1Manager) -> None:
    with pytest.raises(Unsupported, match=r"^linux\.resources\.memory\.kernel: .*"
                                          r"memory\.kmem\.limit_in_bytes is absent"):
        m.set({"memory": {"limit": 1 << 20, "kernel": 1 << 20}})
    # writes before the refusal happened (the cgroup was not made by this manager: kept)
    assert (Path(m.dir("memory")) / "memory.limit_in_bytes").read_text() == str(1 << 20)
    assert Path(m.dir("memory")).is_dir()


def test_blkio_weight_falls_back_to_bfq(m: V1Manager) -> None:
    m.set({"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0,
                                                         "weight": 200}]}})
    leaf = Path(m.dir("blkio"))
    assert (leaf / "blkio.bfq.weight").read_text() == "300"
    assert (leaf / "blkio.bfq.weight_device").read_text() == "8:0 200"


def test_set_before_create_is_invalid_state(tmp_path: Path) -> None:
    (tmp_path / "pids").mkdir()
    m = V1Manager("/nope", {"pids": str(tmp_path / "pids")})
    with pytest.raises(InvalidState, match="create"):
        m.set({"pids": {"limit": 3}})


def test_no_v1_mounts_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="no cgroup v1"):
        manager_for(None, "x", setup="v1", root=str(tmp_path))


def test_public_surface() -> None:
    assert sorted(isle.cgroups.__all__) == sorted([
        "CgroupManager", "Write", "V1Manager", "V2Manager", "detect_setup", "manager_for",
        "manager_from_state", "remove_everywhere", "DEFAULT_ALLOWED_DEVICES"])
    for name in isle.cgroups.__all__:
        assert hasattr(isle.cgroups, name)


def test_unused_unified_half_is_dropped_and_tasks_files_join(tmp_path: Path) -> None:
    from isle.cgroups import V2Manager

    def hybrid() -> V1Manager:
        uni = V2Manager("/c", str(tmp_path / "unified"), wanted=["hugetlb"], lazy=True)
        return V1Manager("/c", {"pids": str(tmp_path / "pids")}, unified=uni)

    m = hybrid()
    assert m.self_join_files() is None  # a unified half: only cgroup.procs joins it
    m.drop_unused_unified({"pids": {"limit": 5}})
    assert m.unified is None and m.to_state()["unified"] is None
    assert m.self_join_files() == [f"{tmp_path}/pids/c/tasks"]
    keep = hybrid()  # a hugetlb limit goes to the unified half: it stays
    keep.drop_unused_unified({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    assert keep.unified is not None and keep.self_join_files() is None


def test_remove_everywhere_rmdirs_in_each_hierarchy(tmp_path: Path) -> None:
    # a plain directory tree stands in for the hierarchies (rmdir and cgroup.procs are real
    # files here): the cgroup dirs are empty, so one rmdir each removes them
    for h in ("cpu,cpuacct", "memory"):
        (tmp_path / h / "isle" / "c1").mkdir(parents=True)
    (tmp_path / "pids").mkdir()
    assert isle.cgroups.remove_everywhere("/isle/c1", root=str(tmp_path)) is False
    assert not (tmp_path / "memory" / "isle" / "c1").exists()
    assert (tmp_path / "memory" / "isle").exists()  # only the container's own cgroup goes
    with pytest.raises(ConfigError):
        isle.cgroups.remove_everywhere("/isle/../..", root=str(tmp_path))


def test_remove_everywhere_reports_what_stays(tmp_path: Path) -> None:
    d = tmp_path / "memory" / "c2"
    d.mkdir(parents=True)
    (d / "file").write_text("")  # not empty: rmdir fails, as for a cgroup with live tasks
    assert isle.cgroups.remove_everywhere("c2", root=str(tmp_path), kill=False, tries=2)


def test_remove_everywhere_on_v2_leaves_child_cgroups_alone(tmp_path: Path) -> None:
    # cgroup v2: root's entries are child cgroups, not hierarchies; <child>/isle/c3 belongs to
    # someone else (here system.slice) and must neither be killed nor removed
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "isle" / "c3").mkdir(parents=True)
    other = tmp_path / "system.slice" / "isle" / "c3"
    other.mkdir(parents=True)
    assert isle.cgroups.remove_everywhere("/isle/c3", root=str(tmp_path), kill=False) is False
    assert not (tmp_path / "isle" / "c3").exists()
    assert other.is_dir()
