"""commit, diff and export read a tree the container changes while they run (commit --no-pause,
a running container's upper dir or merged rootfs). Deterministic form of the swap race in
tests/security/test_copy_paths.py: a hook swaps a listed directory and a listed file for symlinks
to host paths between the walk's listing and its open; nothing of the host may reach the tar, the
committed layer or the diff."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from isle.sys import fdtree

SECRET = b"HOSTSECRET-swap-hook"
HOSTONLY = "hostonly-swap-hook"


@pytest.fixture
def swapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An upper-like tree whose 'w' (a dir), 'f' (a file) and 'w2/g' (a file one level down) are
    swapped for symlinks to host paths right after their directory is listed."""
    tree, host = tmp_path / "upper", tmp_path / "host"
    (tree / "w").mkdir(parents=True)
    (tree / "w" / "secret").write_text("inner")
    (tree / "f").write_text("inner")
    (tree / "w2").mkdir()
    (tree / "w2" / "g").write_text("inner")
    host.mkdir()
    (host / "secret").write_bytes(SECRET)  # the same name as the tree's own w/secret
    (host / HOSTONLY).write_bytes(SECRET)
    (tmp_path / "host.txt").write_bytes(SECRET)
    top_ino, w2_ino = os.stat(tree).st_ino, os.stat(tree / "w2").st_ino
    real = fdtree.listdir
    done: set[str] = set()

    def hooked(dirfd: int) -> list[tuple[str, os.stat_result]]:
        ents = real(dirfd)
        ino = os.fstat(dirfd).st_ino
        if ino == top_ino and "top" not in done:
            done.add("top")
            os.rename(tree / "w", tree / "w.moved")
            os.symlink(host, tree / "w")
            os.rename(tree / "f", tree / "f.moved")
            os.symlink(tmp_path / "host.txt", tree / "f")
        elif ino == w2_ino and "w2" not in done:
            done.add("w2")
            os.unlink(tree / "w2" / "g")
            os.symlink(tmp_path / "host.txt", tree / "w2" / "g")
        return ents

    monkeypatch.setattr(fdtree, "listdir", hooked)
    yield tree
    assert done == {"top", "w2"}  # the hook ran where the race would be


def _no_host_data(root: Path) -> None:
    """Nothing under root (walked by fd, files opened O_NOFOLLOW) holds the host's secret."""
    for _, _, files, dfd in os.fwalk(root):
        for n in files:
            assert HOSTONLY not in n
            if not stat.S_ISREG(os.stat(n, dir_fd=dfd, follow_symlinks=False).st_mode):
                continue
            fd = os.open(n, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                assert SECRET not in os.read(fd, 1 << 20), n
            finally:
                os.close(fd)


def test_tar_dir_never_reads_through_a_swapped_in_symlink(swapped: Path) -> None:
    from isle.image.layers import tar_dir

    buf = io.BytesIO()
    tar_dir(str(swapped), buf)
    data = buf.getvalue()
    assert SECRET not in data and HOSTONLY.encode() not in data
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert "w" in names and "w2" in names  # as listed; their swapped contents left out
    assert not any(n.startswith("w/") or n in ("f", "w2/g") for n in names), names


def test_commit_layer_holds_nothing_of_the_host(swapped: Path, tmp_path: Path) -> None:
    from isle.image.store import ImageStore

    store = ImageStore(str(tmp_path / "images"))
    img = store.commit(str(swapped), None, names=["swap:1"])
    _no_host_data(tmp_path / "images")
    layer = Path(img.layer_dirs[-1])
    assert (layer / "w").is_dir() and not (layer / "w").is_symlink()
    assert not os.path.lexists(layer / "f") and not os.path.lexists(layer / "w" / "secret")


def test_diff_lists_nothing_of_the_host(swapped: Path) -> None:
    from isle.engine.transfer import Transfer

    store = SimpleNamespace(resolve=lambda _id: SimpleNamespace(layer_dirs=[]))
    t = Transfer.__new__(Transfer)
    t.ctx = SimpleNamespace(store=store)  # type: ignore[assignment]
    rec = SimpleNamespace(image_id="x")
    out = t._diff(rec, str(swapped))  # type: ignore[arg-type]
    paths = [p for _, p in out]
    assert not any(HOSTONLY in p or p.startswith("/w/") for p in paths), paths
    assert "/w" in paths and "/w2" in paths
