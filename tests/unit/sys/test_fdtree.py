"""sys/fdtree: walks and copies by directory fd never follow a symlink out of the tree, even one
swapped in mid-walk; resolve() is realpath -m inside a Root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isle.sys import fdtree
from isle.sys.inroot import Root


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "rootfs"
    outside = tmp_path / "host"
    (root / "a" / "b").mkdir(parents=True)
    (root / "data").mkdir()
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (root / "a" / "f").write_text("inside")
    (root / "a" / "b" / "g").write_text("deep")
    (root / "abs").symlink_to(str(outside))
    (root / "rel").symlink_to("../../host")
    (root / "app").symlink_to("/data")
    (root / "dangling").symlink_to("/made/here")
    (root / "loop").symlink_to("/loop")
    (root / "file").write_text("x")
    return root, outside


def _walk(root: Path) -> list[str]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [f"{d}/{n}".lstrip("/") for d, _, ents in fdtree.walk(fd) for n, _ in ents]
    finally:
        os.close(fd)


def test_walk_lists_links_without_entering_them(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    names = _walk(root)
    assert "abs" in names and "a/b/g" in names
    assert not any("secret" in n for n in names)


def test_walk_skips_a_directory_swapped_for_a_symlink(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    seen = []
    try:
        for d, _, ents in fdtree.walk(fd):
            seen += [f"{d}/{n}" for n, _ in ents]
            if d == "":  # listed 'a' as a directory: now make it a symlink to the host
                os.rename(root / "a", root / "a.old")
                os.symlink(outside, root / "a")
    finally:
        os.close(fd)
    assert not any("secret" in n for n in seen)


def test_resolve_stays_inside(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with Root(str(root)) as r:
        assert fdtree.resolve(r, "/abs/secret") == f"{outside}/secret"  # inside the root
        assert fdtree.resolve(r, "/rel/x") == "/host/x"
        assert fdtree.resolve(r, "/app/x/y") == "/data/x/y"
        assert fdtree.resolve(r, "/dangling/z") == "/made/here/z"
        assert fdtree.resolve(r, "/../../a/./b/..") == "/a"
        assert fdtree.resolve(r, "/") == "/"
        with pytest.raises(NotADirectoryError):
            fdtree.resolve(r, "/file/x")
        with pytest.raises(OSError):
            fdtree.resolve(r, "/loop/x")


def test_copy_replaces_links_in_the_destination(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, outside = tree
    dst = tmp_path / "dst"
    (dst / "a").mkdir(parents=True)
    (dst / "a" / "b").symlink_to(outside)  # where the source has a directory
    (dst / "a" / "f").symlink_to(outside / "secret")  # where the source has a file
    os.link(root / "a" / "f", root / "a" / "hl")
    s = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    d = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fdtree.copy(s, "a", d, "a", keep_owner=True)
        fdtree.copy(s, "abs", d, "abs", keep_owner=True)
    finally:
        os.close(s)
        os.close(d)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "host secret"
    assert (dst / "a" / "b" / "g").read_text() == "deep" and not (dst / "a" / "b").is_symlink()
    assert (dst / "a" / "f").read_text() == "inside" and not (dst / "a" / "f").is_symlink()
    assert os.readlink(dst / "abs") == str(outside)
    assert os.stat(dst / "a" / "hl").st_ino == os.stat(dst / "a" / "f").st_ino


def test_copier_owner_mode_and_skip(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    dst = tmp_path / "dst"
    dst.mkdir()
    c = fdtree.Copier(False, owner=(123, 456), mode=0o640, skip=lambda rel: rel == "b/g")
    s = os.open(root / "a", os.O_RDONLY | os.O_DIRECTORY)
    d = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        c.contents(s, d)
    finally:
        c.close()
        os.close(s)
        os.close(d)
    st = os.stat(dst / "f")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (123, 456, 0o640)
    assert (dst / "b").is_dir() and not (dst / "b" / "g").exists()
