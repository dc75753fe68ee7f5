"""TarStream reads what tarfile reads: every header format, pax and GNU extensions, errors."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from isle.image.layers import TarStream

FIELDS = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname", "uname", "gname")


def _entries() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def add(name: str, type_: bytes = tarfile.REGTYPE, data: bytes | None = None, **kw: object):
        ti = tarfile.TarInfo(name)
        ti.type = type_
        for k, v in kw.items():
            setattr(ti, k, v)
        if data is not None:
            ti.size = len(data)
        out.append((ti, data))

    add("dir", tarfile.DIRTYPE, mode=0o2755, uid=1, gid=2, mtime=1_600_000_000)
    add("dir/file", data=b"x" * 1000, mode=0o644, uid=1000, gid=1000, uname="u", gname="g")
    add("dir/" + "long" * 60 + "/name", data=b"long name")  # > 100 chars: ustar prefix/pax/GNU L
    add("dir/" + "n" * 150, data=b"")  # no prefix split possible: pax path / GNU L
    add("sym", tarfile.SYMTYPE, linkname="t" * 150)  # long link target: pax linkpath / GNU K
    add("hard", tarfile.LNKTYPE, linkname="dir/file")
    add("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)
    add("blk", tarfile.BLKTYPE, devmajor=8, devminor=1)
    add("fifo", tarfile.FIFOTYPE)
    add("big-ids", data=b"b", uid=3_000_000, gid=2**21 + 5)  # base-256 (GNU) / pax (POSIX)
    add("ünï/çødé", data=b"utf8")
    add("frac", data=b"f", mtime=1_600_000_000.25)
    add("empty-last", data=b"")
    return out


def _archive(fmt: int, xattrs: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in _entries():
            if xattrs and fmt == tarfile.PAX_FORMAT and ti.isreg():
                ti.pax_headers = {"SCHILY.xattr.user.k": "v\udcff", "SCHILY.xattr.security.x": ""}
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _ours(data: bytes) -> list[tuple]:
    ts = TarStream(io.BytesIO(data))
    return [(tuple(getattr(m, f) for f in FIELDS), m.pax_headers, ts.read(1 << 30)) for m in ts]


def _theirs(data: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isreg() else None
            body = f.read() if f else b""
            out.append((tuple(getattr(m, f) for f in FIELDS), m.pax_headers, body))
    return out


@pytest.mark.parametrize(
    "fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT], ids=["pax", "gnu", "ustar"]
)
def test_same_entries_as_tarfile(fmt: int) -> None:
    if fmt == tarfile.USTAR_FORMAT:  # ustar cannot hold the long/big/utf-8 ones
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w", format=fmt) as tf:
            for ti, body in _entries():
                if len(ti.name) < 100 and ti.uid < 2**21 and ti.name.isascii():
                    if len(ti.linkname) < 100:
                        tf.addfile(ti, io.BytesIO(body) if body is not None else None)
        raw = data.getvalue()
    else:
        raw = _archive(fmt, xattrs=True)
    ours, theirs = _ours(raw), _theirs(raw)
    assert len(ours) >= 8 and ours == theirs


def test_global_pax_headers_and_v7_dirs() -> None:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g", "uid": "7"}
    ) as tf:
        ti = tarfile.TarInfo("a")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"a"))
    raw = bytearray(buf.getvalue())
    ours, theirs = _ours(bytes(raw)), _theirs(bytes(raw))
    assert ours == theirs and ours[0][0][3] == 7 and ours[0][1]["comment"] == "g"
    # an old-style directory: a regular entry whose name ends in '/'
    v7 = tarfile.TarInfo("olddir/")
    v7.type = tarfile.AREGTYPE
    raw = v7.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    assert _ours(raw) == _theirs(raw) and _ours(raw)[0][0][:2] == ("olddir", tarfile.DIRTYPE)


def test_damage_is_an_error_and_zero_blocks_are_an_empty_layer() -> None:
    raw = _archive(tarfile.PAX_FORMAT, xattrs=False)
    assert _ours(bytes(1024)) == []  # Docker's empty layer
    for bad in (b"", raw[:700], raw[:1524]):  # nothing, a cut header, cut file data
        with pytest.raises(tarfile.ReadError):
            _ours(bad)
    flipped = bytearray(raw)
    flipped[0] ^= 1  # the first header's checksum no longer matches
    with pytest.raises(tarfile.ReadError, match="checksum"):
        _ours(bytes(flipped))
    huge = tarfile.TarInfo("x")  # a pax header claiming 1 GB is refused, not read into memory
    huge.type, huge.size = tarfile.XHDTYPE, 1 << 30
    with pytest.raises(tarfile.ReadError, match="refused"):
        _ours(huge.tobuf(tarfile.USTAR_FORMAT))
    nul = io.BytesIO()
    with tarfile.open(fileobj=nul, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("ok")
        ti.pax_headers = {"path": "a\0b"}
        tf.addfile(ti)
    with pytest.raises(tarfile.ReadError, match="NUL"):
        _ours(nul.getvalue())


def test_numbers_and_checksums_as_tarfile_reads_them() -> None:
    from isle.image.tar.stream import _chksum, _nti

    fields = [
        b"0000644\0", b"000644 \0", b"644\0\0\0\0\0", b"\0" * 8, b" " * 7 + b"\0", b"12345670",
        b"00000000033\0", b"0000000 \0 x\0", tarfile.itn(2**40, 12, tarfile.GNU_FORMAT),
        tarfile.itn(-5, 8, tarfile.GNU_FORMAT),
    ]  # fmt: skip
    for f in fields:
        assert _nti(f) == tarfile.nti(f), f
    for bad in (b"0000x44\0", b"\x81abcdefg"):
        with pytest.raises(tarfile.ReadError):
            _nti(bad)
        with pytest.raises(tarfile.InvalidHeaderError):
            tarfile.nti(bad)
    for _ in range(200):  # byte sums near the largest (0xff-heavy headers) included
        buf = os.urandom(512) if _ % 2 else bytes(255 - b % 8 for b in os.urandom(512))
        assert _chksum(buf) == tarfile.calc_chksums(buf)[0]
