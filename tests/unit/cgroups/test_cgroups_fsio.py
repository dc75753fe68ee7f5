"""fsio.mkdirs/rmdirs against plain directories in tmp_path (a non-empty directory refuses rmdir
as a cgroup with children does): what isle made goes with its last container, each directory
is tried once, and nothing isle did not make is removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isle.cgroups import fsio


@pytest.fixture
def marks(tmp_path: Path) -> None:
    """The parents' MARK is a trusted xattr: root only."""
    try:
        os.setxattr(tmp_path, fsio.MARK, b"1")
        os.removexattr(tmp_path, fsio.MARK)
    except OSError:
        pytest.skip("trusted xattrs need root (and a filesystem that keeps them)")


@pytest.fixture
def rmdir_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = os.rmdir

    def rmdir(path: str) -> None:
        calls.append(str(path))
        real(path)

    monkeypatch.setattr(os, "rmdir", rmdir)
    return calls


def tried_twice(calls: list[str], leaves: tuple[str, ...]) -> list[str]:
    """Directories rmdir was called on more than once (a busy leaf is retried after its own
    sub-cgroups go: not a parent)."""
    return sorted({c for c in calls if calls.count(c) > 1 and c not in leaves})


def test_last_container_takes_a_marked_grandparent_past_its_own_parent(
        tmp_path: Path, marks: None) -> None:
    root = str(tmp_path)
    one = fsio.mkdirs(root, "/a/c1/leaf")  # makes and marks a and a/c1
    two = fsio.mkdirs(root, "/a/c2/leaf")  # a is there: makes a/c2 only
    assert one == [f"{root}/a", f"{root}/a/c1", f"{root}/a/c1/leaf"]
    assert two == [f"{root}/a/c2", f"{root}/a/c2/leaf"]
    fsio.rmdirs(one, (one[-1],))
    assert os.listdir(f"{root}/a") == ["c2"]  # still holds the other container
    fsio.rmdirs(two, (two[-1],))  # its own a/c2 goes first; a (marked, its last user) next
    assert os.listdir(root) == []


def test_each_parent_is_tried_once(tmp_path: Path, marks: None,
                                   rmdir_calls: list[str]) -> None:
    root = str(tmp_path)
    for path in ("/a/leaf", "/b/c/leaf"):  # a made parent right above the leaf, and higher
        mine = fsio.mkdirs(root, path)
        top = mine[0]
        os.mkdir(f"{top}/other")  # another container's: the parent stays
        leaves = (mine[-1],)
        rmdir_calls.clear()
        fsio.rmdirs(mine, leaves)
        assert os.listdir(top) == ["other"]
        assert tried_twice(rmdir_calls, leaves) == []
        assert top in rmdir_calls


def test_default_parent_is_tried_once(tmp_path: Path, marks: None, rmdir_calls: list[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == root or ismount(p))
    mine = fsio.mkdirs(root, "/isle/x/leaf")  # not a default leaf: /isle is made and ours
    (tmp_path / "isle" / "other").mkdir()
    leaves = (mine[-1],)
    fsio.rmdirs(mine, leaves)
    assert os.listdir(f"{root}/isle") == ["other"]
    assert tried_twice(rmdir_calls, leaves) == []
    (tmp_path / "isle" / "other").rmdir()
    rmdir_calls.clear()
    c = fsio.mkdirs(root, "/isle/c")  # a default leaf: /isle is shared, not recorded
    assert c == [f"{root}/isle/c"]
    fsio.rmdirs(c, tuple(c))
    assert os.listdir(root) == [] and rmdir_calls == [*c, f"{root}/isle"]


def test_parents_isle_did_not_make_stay(tmp_path: Path, marks: None) -> None:
    root = str(tmp_path)
    (tmp_path / "theirs").mkdir()  # not made by isle: never removed, even empty
    mine = fsio.mkdirs(root, "/theirs/leaf")
    assert mine == [f"{root}/theirs/leaf"]
    fsio.rmdirs(mine, tuple(mine))
    assert (tmp_path / "theirs").is_dir() and os.listdir(tmp_path / "theirs") == []
    # the walk up stops at the first parent that is not isle's: a marked one above it stays
    fsio.mkdirs(root, "/m/keep/x")  # m and m/keep are made and marked
    os.rmdir(tmp_path / "m" / "keep" / "x")
    (tmp_path / "m" / "keep" / "u").mkdir()  # someone else's, unmarked
    mine = fsio.mkdirs(root, "/m/keep/u/leaf")
    assert mine == [f"{root}/m/keep/u/leaf"]
    fsio.rmdirs(mine, tuple(mine))
    assert os.listdir(tmp_path / "m" / "keep") == ["u"] and os.listdir(tmp_path / "m") == ["keep"]
