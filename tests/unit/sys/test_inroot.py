"""sys/inroot: lookups through a container's root stay inside it, whatever symlinks it holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isle.sys.inroot import Root, clean


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "rootfs"
    outside = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    (root / "abs").symlink_to(str(outside))            # absolute: would be the host's path
    (root / "rel").symlink_to("../../host")             # relative, climbing out
    (root / "data").mkdir()
    (root / "app").symlink_to("/data")                  # inside: must be followed inside
    (root / "dangling").symlink_to("/made/here")
    (root / "file").write_text("x")
    return root, outside


def test_clean() -> None:
    assert clean("/a//b/./c/") == "a/b/c"
    assert clean("/") == ""
    assert clean("../..") == "../.."


def test_open_inside(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with Root(str(root)) as r:
        fd = r.open("/etc/passwd")
        assert os.read(fd, 100) == b"root:x:0:0\n"
        os.close(fd)


@pytest.mark.parametrize("path", ["/abs/secret", "/rel/secret", "../host/secret",
                                  "/etc/../../host/secret", "/../../../host/secret"])
def test_symlinks_and_dotdot_stay_inside(tree: tuple[Path, Path], path: str) -> None:
    root, _ = tree
    with Root(str(root)) as r, pytest.raises(FileNotFoundError):
        r.open(path)


def test_magic_links_refused(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, outside = tree
    (root / "fd").symlink_to(f"/proc/self/fd/{os.open(outside, os.O_RDONLY)}")
    with Root(str(root)) as r, pytest.raises(OSError):
        r.open("/fd/secret")


def test_parent_gives_a_plain_name(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with Root(str(root)) as r:
        with pytest.raises(FileNotFoundError):  # /abs resolves inside the root, not to the host
            r.parent("/abs/newfile")
        d, name = r.parent("/etc/../etc/newfile")
        os.close(d)
    assert name == "newfile"


def test_parent_of_planted_symlink_dir(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with Root(str(root)) as r:
        with pytest.raises(FileNotFoundError):
            r.parent("/abs/secret")
        d, name = r.parent("/app/x")
        try:
            assert os.path.samefile(f"/proc/self/fd/{d}", root / "data") and name == "x"
        finally:
            os.close(d)


def test_mkdirs_follows_inside_and_makes_dangling_targets(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with Root(str(root)) as r:
        os.close(r.mkdirs("/app/sub/dir"))
        os.close(r.mkdirs("/dangling/x"))
        os.close(r.mkdirs("/abs/evil"))
        os.close(r.mkdirs("/rel/evil2"))
        with pytest.raises(NotADirectoryError):
            r.mkdirs("/file/x")
    assert (root / "data" / "sub" / "dir").is_dir()
    assert (root / "made" / "here" / "x").is_dir()
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (root / str(outside).lstrip("/") / "evil").is_dir()


def test_realpath(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with Root(str(root)) as r:
        assert r.realpath("/app") == "/data"
        assert r.realpath("/") == "/"
        assert r.realpath("/etc/../etc/passwd") == "/etc/passwd"


def test_dotdot_lookups_survive_renames_elsewhere_on_the_host(tree: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    """openat2 answers EAGAIN when any rename happens while it walks '..' (it cannot prove the
    walk stayed inside); a busy host does that all the time, so the lookup must be retried."""
    import threading

    root, _ = tree
    (root / "a" / "b" / "c").mkdir(parents=True)
    spin = tmp_path / "spin"
    spin.write_text("x")
    stop = threading.Event()

    def renamer() -> None:
        a, b = str(spin), str(spin) + ".2"
        while not stop.is_set():
            os.rename(a, b)
            a, b = b, a

    t = threading.Thread(target=renamer)
    t.start()
    try:
        with Root(str(root)) as r:
            for _ in range(3000):
                os.close(r.open("/a/b/c/../../../../../../etc/passwd"))
    finally:
        stop.set()
        t.join()
