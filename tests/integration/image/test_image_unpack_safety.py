"""Layer unpacking on the real filesystem: hostile tarballs stay inside, metadata is kept."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from isle.errors import ImageError
from isle.image.layers import OPAQUE_XATTR, apply_layers, tar_dir, unpack_layer

pytestmark = pytest.mark.root


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _e(name: str, type_: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _snapshot(d: Path) -> dict[str, tuple]:
    out = {}
    for top, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(top, n)
            s = os.lstat(p)
            out[p] = (s.st_mode, s.st_size, s.st_mtime_ns, s.st_uid)
    return out


@pytest.fixture
def jail(tmp_path: Path) -> tuple[Path, Path]:
    """(target dir, a sibling 'outside' dir with a file the tarballs aim at)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("original")
    target = tmp_path / "target"
    target.mkdir()
    return target, outside


def test_escape_attempts_are_neutralised(jail: tuple[Path, Path]) -> None:
    target, outside = jail
    before = _snapshot(outside)
    rel_out = os.path.relpath(outside, target)
    entries = [
        (_e("../outside/victim"), b"pwned-dotdot"),
        (_e(f"{rel_out}/new-file"), b"pwned-rel"),
        (_e(str(outside / "victim")), b"absolute-is-inside"),  # -> target/<abs path>
        (_e("link", tarfile.SYMTYPE, linkname=str(outside)), None),
        (_e("link/victim"), b"pwned-through-symlink"),
        (_e("dirlink", tarfile.SYMTYPE, linkname="../outside"), None),
        (_e("dirlink/new"), b"pwned-through-rel-symlink"),
        (_e("hard", tarfile.LNKTYPE, linkname="../outside/victim"), None),
        (_e("hard2", tarfile.LNKTYPE, linkname=str(outside / "victim")), None),
        (_e("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
        (_e("ok.txt"), b"fine"),
    ]
    diff_id, size, skipped = unpack_layer(_tar(entries), str(target), "", devices=False)
    assert _snapshot(outside) == before
    assert (outside / "victim").read_text() == "original"
    assert (target / "ok.txt").read_text() == "fine"
    assert (target / str(outside).lstrip("/") / "victim").read_text() == "absolute-is-inside"
    assert os.readlink(target / "link") == str(outside)  # kept, but never followed
    assert not (target / "dev").exists()
    reasons = {name: why for name, why in skipped}
    assert "'..'" in reasons["../outside/victim"]
    assert "symlink" in reasons["link/victim"] and "symlink" in reasons["dirlink/new"]
    assert "leaves the layer" in reasons["hard"]
    # an absolute link target means the file inside the root, which the absolute entry made
    assert (
        os.lstat(target / "hard2").st_ino
        == os.lstat(target / str(outside).lstrip("/") / "victim").st_ino
    )
    assert "device" in reasons["dev"]
    assert diff_id.startswith("sha256:") and size > 0


def test_metadata_whiteouts_and_links_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    x = _e("bin/tool", mode=0o4755, uid=1000, gid=2000, mtime=1_000_000)
    x.pax_headers = {"SCHILY.xattr.user.note": "hi"}
    entries = [
        (_e("bin", tarfile.DIRTYPE, mode=0o750, uid=0, gid=0, mtime=2_000_000), None),
        (x, b"#!/bin/sh\n"),
        (_e("bin/again", tarfile.LNKTYPE, linkname="bin/tool"), None),
        (_e("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
        (_e("fifo", tarfile.FIFOTYPE, mode=0o600), None),
        (_e("etc/.wh.passwd"), b""),
        (_e("var/.wh..wh..opq"), b""),
        (_e("s", tarfile.SYMTYPE, linkname="/bin/tool", uid=5, gid=6), None),
    ]
    unpack_layer(_tar(entries), str(target), "")
    st = os.lstat(target / "bin" / "tool")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (
        0o4755,
        1000,
        2000,
        1_000_000,
    )
    assert os.getxattr(target / "bin" / "tool", "user.note") == b"hi"
    assert os.lstat(target / "bin" / "again").st_ino == st.st_ino and st.st_nlink == 2
    d = os.lstat(target / "bin")
    assert stat.S_IMODE(d.st_mode) == 0o750 and d.st_mtime == 2_000_000
    n = os.lstat(target / "null")
    assert stat.S_ISCHR(n.st_mode) and os.major(n.st_rdev) == 1 and os.minor(n.st_rdev) == 3
    assert stat.S_ISFIFO(os.lstat(target / "fifo").st_mode)
    wh = os.lstat(target / "etc" / "passwd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0  # overlay whiteout
    assert os.getxattr(target / "var", OPAQUE_XATTR) == b"y"
    s = os.lstat(target / "s")
    assert (s.st_uid, s.st_gid) == (5, 6)


def test_owners_hold_under_set_gid_dirs_and_replaced_entries(tmp_path: Path) -> None:
    """chown is skipped only when the new inode already has the wanted owner: a set-gid parent
    (explicit, or inherited by a directory made implicitly) gives its group, so it must not be."""
    target = tmp_path / "t"
    target.mkdir()
    entries = [
        (_e("g", tarfile.DIRTYPE, mode=0o2775, uid=0, gid=1234), None),
        (_e("g/f", uid=0, gid=0), b"1"),  # would inherit 1234
        (_e("g/sub/deep", uid=0, gid=0), b"2"),  # g/sub made implicitly: set-gid inherited
        (_e("g/l", tarfile.SYMTYPE, linkname="f", uid=0, gid=0), None),
        (_e("plain/f", uid=0, gid=0), b"3"),
        (_e("plain/f", uid=7, gid=8), b"4"),  # a later entry replaces the file
        (_e("plain/f2", uid=0, gid=0, mode=0o640), b"5"),
        (_e("plain/f2", tarfile.SYMTYPE, linkname="f"), None),  # ... or changes its type
    ]
    unpack_layer(_tar(entries), str(target), "")
    g = os.lstat(target / "g")
    assert (g.st_gid, stat.S_IMODE(g.st_mode)) == (1234, 0o2775)
    for rel in ("g/f", "g/sub/deep", "g/l"):
        st = os.lstat(target / rel)
        assert (st.st_uid, st.st_gid) == (0, 0), rel
    st = os.lstat(target / "plain" / "f")
    assert (st.st_uid, st.st_gid) == (7, 8) and (target / "plain" / "f").read_text() == "4"
    assert os.readlink(target / "plain" / "f2") == "f"


def test_roundtrip_through_tar_dir_and_copy_fallback(tmp_path: Path) -> None:
    low, up, merged = tmp_path / "low", tmp_path / "up", tmp_path / "merged"
    for d in (low, up, merged):
        d.mkdir()
    unpack_layer(
        _tar([(_e("etc/passwd"), b"root"), (_e("var/old"), b"o"), (_e("keep"), b"k")]), str(low), ""
    )
    buf = io.BytesIO()
    src = tmp_path / "src"
    (src / "var").mkdir(parents=True)
    (src / "var" / "new").write_text("n")
    os.mknod(src / "gone-etc", stat.S_IFCHR, 0)
    os.setxattr(src / "var", OPAQUE_XATTR, b"y")
    tar_dir(str(src), buf)
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert ".wh.gone-etc" in names and "var/.wh..wh..opq" in names
    buf.seek(0)
    unpack_layer(buf, str(up), "")
    apply_layers([str(low), str(up)], str(merged))
    assert sorted(os.listdir(merged)) == ["etc", "keep", "var"]
    assert os.listdir(merged / "var") == ["new"]


def test_corrupt_and_truncated_layers_are_rejected(tmp_path: Path) -> None:
    import gzip

    data = _tar([(_e("f"), b"x" * 100_000)]).getvalue()
    gz = gzip.compress(data)
    for bad, comp in (
        (gz[: len(gz) // 2], "gzip"),
        (gz[:20] + b"\0" * 50 + gz[70:], "gzip"),
        (b"not a zstd frame", "zstd"),
        (data[:5000], ""),
    ):
        d = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        with pytest.raises(ImageError, match="corrupt|truncated"):
            unpack_layer(io.BytesIO(bad), str(d), comp)


def test_unpack_without_root_uses_user_xattr_whiteouts() -> None:
    """As uid 65534: no devices, no chown, whiteouts/opaque dirs as user.overlay.* xattrs."""
    import shutil
    import subprocess
    import sys
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="isle-nobody-"))  # pytest's tmp is 0700 root
    try:
        _nobody_unpack(tmp_path, subprocess, sys)
    finally:
        shutil.rmtree(tmp_path)


def _nobody_unpack(tmp_path: Path, subprocess, sys) -> None:  # type: ignore[no-untyped-def]
    low = _tar([(_e("etc/passwd"), b"root"), (_e("var/old"), b"o"), (_e("keep"), b"k")])
    up = _tar(
        [
            (_e("etc/.wh.passwd"), b""),
            (_e("var/.wh..wh..opq"), b""),
            (_e("var/new"), b"n"),
            (_e("null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
            (_e("owned", uid=1000, gid=1000), b"x"),
        ]
    )
    for name, data in (("low.tar", low), ("up.tar", up)):
        (tmp_path / name).write_bytes(data.getvalue())
    for d in ("low", "up", "merged"):
        (tmp_path / d).mkdir()
    os.chown(tmp_path, 65534, 65534)
    for p in tmp_path.iterdir():
        os.chown(p, 65534, 65534)
    code = f"""
import os
from isle.image.layers import unpack_layer, apply_layers
t = {str(tmp_path)!r}
for n in ("low", "up"):
    with open(f"{{t}}/{{n}}.tar", "rb") as f:
        _, _, skipped = unpack_layer(f, f"{{t}}/{{n}}", "")
print(sorted(s[0] for s in skipped))
apply_layers([f"{{t}}/low", f"{{t}}/up"], f"{{t}}/merged")
m = f"{{t}}/merged"
print(sorted(os.listdir(m)), os.listdir(m + "/var"), os.listdir(m + "/etc"))
"""
    cp = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "['null']"  # the device was dropped
    assert lines[1] == "['etc', 'keep', 'owned', 'var'] ['new'] []"
    assert os.getxattr(tmp_path / "up" / "var", "user.overlay.opaque") == b"y"
    assert os.lstat(tmp_path / "up" / "owned").st_uid == 65534


def test_symlink_with_an_empty_target_is_dropped_not_fatal(tmp_path: Path) -> None:
    # found by tests/security/test_properties.py: symlink(2) refuses "" (ENOENT), which ended
    # the whole unpack; the entry is dropped and named like any other refused entry
    target = tmp_path / "t"
    target.mkdir()
    entries = [(_e("victim", tarfile.SYMTYPE, linkname=""), None), (_e("ok"), b"x")]
    _, _, skipped = unpack_layer(_tar(entries), str(target), "")
    assert [n for n, _ in skipped] == ["victim"] and "empty target" in skipped[0][1]
    assert not os.path.lexists(target / "victim") and (target / "ok").read_bytes() == b"x"
