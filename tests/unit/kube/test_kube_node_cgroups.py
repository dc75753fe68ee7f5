"""isle kube down's cgroups on each host setup (v1, v2, hybrid), against fake cgroup roots in
tmp_path: plain directories stand in for the hierarchies (the kernel's part played by the test,
as in tests/unit/cgroups)."""

from __future__ import annotations

from pathlib import Path

import pytest

from isle.kube import node
from isle.kube.config import Node

CID = "ab" * 32  # a container's id: 64 hex digits


def v1_tree(root: Path) -> None:
    """cgroup v1: one directory per hierarchy, and cpu/cpuacct as aliases of cpu,cpuacct."""
    for h in ("cpu,cpuacct", "memory", "pids", "systemd"):
        (root / h).mkdir(parents=True)
        (root / h / "cgroup.procs").write_text("")
    for alias in ("cpu", "cpuacct"):
        (root / alias).symlink_to("cpu,cpuacct")


@pytest.fixture(params=["v1", "v2", "hybrid"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, list[Path]]:
    """(setup, fake root, its hierarchies)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    if request.param == "v2":
        (root / "cgroup.controllers").write_text("cpu memory pids\n")
        (root / "system.slice").mkdir()  # a v2 child cgroup: not a hierarchy
        return "v2", root, [root]
    v1_tree(root)
    hier = [root / h for h in ("cpu,cpuacct", "memory", "pids", "systemd")]
    if request.param == "hybrid":
        (root / "unified").mkdir()
        (root / "unified" / "cgroup.controllers").write_text("")
        hier.append(root / "unified")
    return request.param, root, hier


def test_hierarchies_follow_the_host_setup(host: tuple[str, Path, list[Path]]) -> None:
    _, root, hier = host
    assert node.cgroup_hierarchies(str(root)) == [str(h) for h in hier]


def test_remove_cgroups_takes_the_nodes_cgroups_in_every_hierarchy(
        host: tuple[str, Path, list[Path]], tmp_path: Path) -> None:
    setup, root, hier = host
    n = Node.under(str(tmp_path / "node"))
    parent = n.cgroup_parent.strip("/")
    for h in hier:
        (h / parent / CID).mkdir(parents=True)
    other = hier[0] / parent / ("cd" * 32)  # another node's pod: it keeps the shared parent
    other.mkdir()
    if setup == "v2":  # the same relative name under a child cgroup is not the node's
        (root / "system.slice" / parent / CID).mkdir(parents=True)
    assert node._cgroup_dirs(f"{parent}/{CID}", node.cgroup_hierarchies(str(root))) \
        == [str(h / parent / CID) for h in hier]
    node._remove_cgroups(n, {CID}, root=str(root))
    assert [h for h in hier if (h / parent / CID).exists()] == []
    assert other.is_dir()
    assert [h for h in hier if (h / parent).exists()] == [hier[0]]  # the empty parents went
