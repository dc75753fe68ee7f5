"""cgroupsPath rules and setup detection (pure or on a fake tree; no privileges)."""

from __future__ import annotations

from pathlib import Path

import pytest

from isle.cgroups import detect_setup, manager_for, manager_from_state
from isle.cgroups.paths import expand_slice, own_cgroups, resolve, systemd_path, v1_mounts
from isle.errors import ConfigError

SELF = "9:name=systemd:/user.slice\n4:memory:/mine/x\n1:cpu,cpuacct:/c\n0::/uni\n"


def fake_tree(root: Path, kind: str) -> Path:
    if kind in ("v1", "hybrid"):
        for h in ("cpu,cpuacct", "memory", "pids", "freezer", "cpuset", "devices", "systemd"):
            (root / h).mkdir()
            (root / h / "cgroup.procs").write_text("")
        (root / "cpu").symlink_to(root / "cpu,cpuacct")
    if kind == "hybrid":
        (root / "unified").mkdir()
        (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    if kind == "v2":
        (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    return root


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_detect_setup_on_fake_trees(tmp_path: Path, kind: str) -> None:
    assert detect_setup(str(fake_tree(tmp_path, kind))) == kind


def test_detect_setup_agrees_with_mount_table() -> None:
    with open("/proc/self/mountinfo") as f:
        fstype = {ln.split()[4]: ln.split(" - ")[1].split()[0] for ln in f}
    want = ("v2" if fstype.get("/sys/fs/cgroup") == "cgroup2" else
            "hybrid" if fstype.get("/sys/fs/cgroup/unified") == "cgroup2" else "v1")
    assert detect_setup() == want


def test_slices_expand_like_systemd() -> None:
    assert expand_slice("machine.slice") == "/machine.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == "/"
    for bad in ("machine", "a--b.slice", "a/b.slice", ".slice"):
        with pytest.raises(ConfigError, match="cgroupsPath"):
            expand_slice(bad)


def test_systemd_form_maps_to_scope_path() -> None:
    assert systemd_path("machine.slice:libpod:abc") == "/machine.slice/libpod-abc.scope"
    assert systemd_path(":docker:abc") == "/system.slice/docker-abc.scope"
    assert systemd_path("user.slice::abc") == "/user.slice/abc.scope"
    assert systemd_path("system.slice:x:my.slice") == "/system.slice/my.slice"
    # containerd/kubelet with the systemd driver
    assert systemd_path("kubepods-burstable-pod12.slice:cri-containerd:abc") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/"
        "cri-containerd-abc.scope")


def test_resolve_rules() -> None:
    own = own_cgroups(SELF)
    assert own == {"systemd": "/user.slice", "memory": "/mine/x", "cpu": "/c", "cpuacct": "/c",
                   "unified": "/uni"}
    assert resolve(None, "abc") == ("/isle/abc", None)
    assert resolve("/libpod_parent/libpod-abc", "abc") == ("/libpod_parent/libpod-abc", None)
    assert resolve("machine.slice:libpod:abc", "abc") == ("/machine.slice/libpod-abc.scope", None)
    assert resolve("a/b", "abc", own) == ("/a/b", own)
    assert resolve("//x/./y/", "abc") == ("/x/y", None)


@pytest.mark.parametrize("bad", ["/a/../b", "../x", "/", "/a\0b"])
def test_bad_paths_name_the_field(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^linux\.cgroupsPath: "):
        resolve(bad, "abc")


def test_bad_id_for_default_path() -> None:
    with pytest.raises(ConfigError, match="id"):
        resolve(None, "a/b")


def test_v1_mounts_from_directory_names(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "hybrid")
    m = v1_mounts(str(root))
    assert m["cpu"] == m["cpuacct"] == str(root / "cpu,cpuacct")
    assert m["systemd"] == str(root / "systemd")
    assert "unified" not in m and "blkio" not in m


def test_relative_path_joins_own_cgroup_per_hierarchy(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "hybrid")
    m = manager_for("ctr/abc", "abc", root=str(root), self_cgroup=SELF)
    assert m.dir("memory") == f"{root}/memory/mine/x/ctr/abc"
    assert m.dir("cpuacct") == f"{root}/cpu,cpuacct/c/ctr/abc"
    assert m.dir("pids") == f"{root}/pids/ctr/abc"  # not listed in /proc/self/cgroup: root
    assert m.unified.dir == f"{root}/unified/uni/ctr/abc"
    (tmp_path / "2").mkdir()
    v2 = manager_for("ctr/abc", "abc", root=str(fake_tree(tmp_path / "2", "v2")), self_cgroup=SELF)
    assert v2.dir == f"{tmp_path}/2/uni/ctr/abc"


def test_state_round_trip(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "hybrid")
    m = manager_for(None, "abc", root=str(root))
    assert m.setup == "hybrid" and m.unified is not None
    st = m.to_state()
    m2 = manager_from_state(st)
    assert m2.to_state() == st
    assert m2.dirs() == m.dirs()
    with pytest.raises(ConfigError):
        manager_from_state({"setup": "v9"})


def test_hybrid_without_unified_controllers_is_v1_only(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "hybrid")
    (root / "unified" / "cgroup.controllers").write_text("\n")
    m = manager_for(None, "abc", root=str(root))
    assert m.unified is None and m.setup == "hybrid"
