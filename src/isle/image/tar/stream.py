"""Reading layer streams: hashing and chunk readers, gunzip/zstd, and ``TarStream``, the tar
header parser that slices members from a 1 MB window of the stream (see layers.py's note on
speed)."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from isle.errors import ImageError

__all__ = ["BUF", "HashReader", "IterReader", "decompressor", "TarStream"]

BUF = 1 << 20


class HashReader:
    """A file object that hashes (and optionally copies to ``sink``) everything read through it."""

    def __init__(self, src: Any, sink: Callable[[bytes], Any] | None = None) -> None:
        self.src, self.sink = src, sink
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        b: bytes = self.src.read(n)
        if b:
            self.hasher.update(b)
            self.size += len(b)
            if self.sink:
                self.sink(b)
        return b

    def drain(self) -> None:
        while self.read(BUF):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class IterReader:
    """File-like view of an iterator of byte chunks (an HTTP body); ``sink`` sees every chunk."""

    def __init__(self, it: Any, sink: Callable[[bytes], Any] | None = None) -> None:
        self.it, self.sink = iter(it), sink
        self.buf, self.pos = b"", 0

    def _next(self) -> bool:
        for b in self.it:
            if b:
                if self.sink:
                    self.sink(b)
                self.buf, self.pos = b, 0
                return True
        return False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self.buf[self.pos :]]
            while self._next():
                parts.append(self.buf)
            self.buf, self.pos = b"", 0
            return b"".join(parts)
        return _take(self, n, self._next)

    def drain(self) -> None:
        while self._next():
            pass
        self.buf, self.pos = b"", 0


def _take(r: Any, n: int, more: Callable[[], bool], attr: str = "buf") -> bytes:
    """n bytes (fewer only at the end) from r.<attr>[r.pos:], refilled by more(); few copies."""
    parts: list[bytes] = []
    while n > 0:
        b: bytes = getattr(r, attr)
        if r.pos >= len(b):
            if not more():
                break
            b = getattr(r, attr)
        piece = b[r.pos : r.pos + n] if r.pos or n < len(b) else b
        r.pos += len(piece)
        n -= len(piece)
        parts.append(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Gunzip:
    """A gzip stream (one or more members, NUL padding after the last) read in big chunks."""

    def __init__(self, src: Any) -> None:
        self.src = src
        self.d: Any = None  # None: between members
        self.tail = b""
        self.out, self.pos = b"", 0

    def _fill(self) -> bool:
        while True:
            if self.d is None:
                rest = self.tail.lstrip(b"\0")
                while not rest:
                    more = self.src.read(BUF)
                    if not more:
                        return False
                    rest = more.lstrip(b"\0")
                self.d, self.tail = zlib.decompressobj(31), rest
            if not self.tail:
                self.tail = self.src.read(BUF)
                if not self.tail:
                    raise EOFError("compressed stream ended before the end-of-stream marker")
            out = self.d.decompress(self.tail, BUF)
            if self.d.eof:
                self.tail, self.d = self.d.unused_data, None
            else:
                self.tail = self.d.unconsumed_tail
            if out:
                self.out, self.pos = out, 0
                return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self.out[self.pos :]]
            while self._fill():
                parts.append(self.out)
            self.out, self.pos = b"", 0
            return b"".join(parts)
        return _take(self, n, self._fill, "out")


def decompressor(src: Any, compression: str) -> Any:
    """A readable stream of the uncompressed layer."""
    if compression == "gzip":
        return _Gunzip(src)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(
            src, read_size=BUF, read_across_frames=True
        )
    if compression == "":
        return src
    raise ImageError(f"unknown layer compression {compression!r}")


_NUL_BLOCK = bytes(512)
_MAX_META = 16 << 20  # pax / GNU long-name headers are read whole: bound them
# entries followed by data blocks (tarfile: regular files and types it does not know)
_NO_DATA_TYPES = {
    tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE,
    tarfile.CHRTYPE, tarfile.BLKTYPE,
}  # fmt: skip
_PAX_RE = re.compile(rb"(\d+) ([^=]+)=")


def _nts(b: bytes) -> str:
    if not b[0]:
        return ""
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _nti(b: bytes) -> int:
    c = b[0]
    if not c:
        return 0
    if c < 0o200:  # octal digits (blanks around them), ended by a NUL or the field's end
        end = b.find(0)
        s = b if end < 0 else b[:end]
        try:
            return int(s, 8)
        except ValueError:
            if not s.strip():
                return 0
            raise tarfile.ReadError("invalid header") from None
    if c in (0o200, 0o377):  # GNU base-256
        n = int.from_bytes(b[1:], "big")
        return n - 256 ** (len(b) - 1) if c == 0o377 else n
    raise tarfile.ReadError("invalid header")


def _chksum(buf: bytes) -> int:
    """The unsigned byte sum of a header with its checksum field read as spaces. adler32's low
    half is 1 + the byte sum mod 65521, and a 256-byte half sums to at most 65280: exact, and
    ~5x cheaper than sum() over the bytes."""
    return (
        (zlib.adler32(buf[:256]) & 0xFFFF) + (zlib.adler32(buf[256:]) & 0xFFFF) - 2
        - sum(buf[148:156]) + 256
    )  # fmt: skip


def _signed_chksum(buf: bytes) -> int:  # some old tars summed signed chars
    return 256 + sum(int(b) for b in struct.unpack_from("148b8x356b", buf))


def _pax_records(buf: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while m := _PAX_RE.match(buf, pos):
        length = int(m.group(1))
        if length == 0:
            raise tarfile.ReadError("invalid pax header")
        key = m.group(2).decode("utf-8", "surrogateescape")
        out[key] = buf[m.end(2) + 1 : m.start(1) + length - 1].decode("utf-8", "surrogateescape")
        pos += length
    return out


def _apply_pax(ti: tarfile.TarInfo, pax: dict[str, str]) -> None:
    for k, v in pax.items():
        if "\0" in v and k in ("path", "linkpath"):
            raise tarfile.ReadError(f"pax {k} contains a NUL byte")
        if k == "path":
            ti.name = v.rstrip("/")
        elif k == "linkpath":
            ti.linkname = v
        elif k in ("uname", "gname"):
            setattr(ti, k, v)
        elif k in ("size", "uid", "gid"):
            try:
                setattr(ti, k, int(v))
            except ValueError:
                setattr(ti, k, 0)
        elif k == "mtime":
            try:
                ti.mtime = float(v)
            except ValueError:
                ti.mtime = 0


class TarStream:
    """Tar entries from a forward-only stream, as ``tarfile.TarInfo``s, without tarfile's stream.

    ustar, GNU (long names and links, base-256 numbers) and pax (``x`` and global ``g``)
    headers, decoded as ``tarfile`` decodes them (UTF-8, surrogateescape); sparse and
    multi-volume entries are refused. ``read(n)`` reads the current entry's data.
    """

    def __init__(self, src: Any) -> None:
        self.src = src
        self.glob: dict[str, str] = {}
        self.left = 0  # data bytes of the current entry not yet read
        self.pad = 0  # padding after them
        # a window on src, refilled a BUF at a time: headers are sliced from it and file data
        # is written straight from it, so a small file costs no read call through the stack
        self.win = b""
        self.pos = 0

    def _more(self) -> bool:
        b: bytes = self.src.read(BUF)
        if not b:
            return False
        self.win, self.pos = b, 0
        return True

    def _upto(self, n: int) -> bytes:
        """n bytes, fewer only at the end of the stream."""
        pos, win = self.pos, self.win
        end = pos + n
        if end <= len(win):
            self.pos = end
            return win[pos:end]
        parts = [win[pos:]]
        n -= len(parts[0])
        self.pos = len(win)
        while n > 0 and self._more():
            piece = self.win[:n]  # the whole window (no copy) when n covers it
            self.pos = len(piece)
            n -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def _exact(self, n: int) -> bytes:
        b = self._upto(n)
        if len(b) != n:
            raise tarfile.ReadError("unexpected end of data")
        return b

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        if n <= 0:
            return b""
        b = self._exact(n)
        self.left -= n
        return b

    def write_to(self, fd: int) -> None:
        """Write the rest of the current entry's data to fd."""
        self._consume(self.left, fd)
        self.left = 0

    def _consume(self, n: int, fd: int = -1) -> None:
        """Move n bytes on through the window, writing them to fd unless fd < 0."""
        while n > 0:
            avail = len(self.win) - self.pos
            if avail <= 0:
                if not self._more():
                    raise tarfile.ReadError("unexpected end of data")
                continue
            k = n if n < avail else avail
            if fd >= 0:
                mv = memoryview(self.win)[self.pos : self.pos + k]
                while mv:
                    mv = mv[os.write(fd, mv) :]
            self.pos += k
            n -= k

    def _skip(self) -> None:
        self._consume(self.left + self.pad)
        self.left = self.pad = 0

    def _data(self, size: int) -> None:
        self.left, self.pad = size, -size % 512

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        pax: dict[str, str] = {}
        longname = longlink = None
        first = True
        while True:
            self._skip()
            buf = self._upto(512)
            if not buf:
                if first:
                    raise tarfile.ReadError("empty file")
                return
            if len(buf) != 512:
                raise tarfile.ReadError("truncated header")
            if buf == _NUL_BLOCK:  # end of archive (an empty layer is just these)
                return
            first = False
            chk = _nti(buf[148:156])
            if chk != _chksum(buf) and chk != _signed_chksum(buf):
                raise tarfile.ReadError("bad checksum")
            t = buf[156:157]
            size = _nti(buf[124:136])
            if t in (b"x", b"g", b"X", b"L", b"K") and not 0 <= size <= _MAX_META:
                raise tarfile.ReadError(f"tar extension header of {size} bytes; refused")
            if t in (b"x", b"g", b"X"):
                recs = _pax_records(self._exact(size))
                self.pad = -size % 512
                if t == b"g":
                    self.glob.update(recs)
                else:
                    pax.update(recs)
                continue
            if t in (b"L", b"K"):
                v = _nts(self._exact(size))
                self.pad = -size % 512
                if t == b"L":
                    longname = v
                else:
                    longlink = v
                continue
            if t in (b"S", b"M", b"V"):
                raise tarfile.ReadError(f"unsupported tar entry type {t!r} (sparse/multi-volume)")
            ti = tarfile.TarInfo(_nts(buf[0:100]))
            ti.mode = _nti(buf[100:108])
            ti.uid = _nti(buf[108:116])
            ti.gid = _nti(buf[116:124])
            ti.size = size
            ti.mtime = _nti(buf[136:148])
            ti.type = t
            ti.linkname = _nts(buf[157:257])
            ti.uname = _nts(buf[265:297])
            ti.gname = _nts(buf[297:329])
            ti.devmajor = _nti(buf[329:337])
            ti.devminor = _nti(buf[337:345])
            prefix = _nts(buf[345:500])
            if t == tarfile.AREGTYPE and ti.name.endswith("/"):
                ti.type = tarfile.DIRTYPE
            if ti.type == tarfile.DIRTYPE:
                ti.name = ti.name.rstrip("/")
            if prefix:
                ti.name = prefix + "/" + ti.name
            if longname is not None:
                ti.name = longname
            if longlink is not None:
                ti.linkname = longlink
            merged = {**self.glob, **pax} if self.glob else pax
            if merged:
                if any(k.startswith("GNU.sparse.") for k in merged):
                    raise tarfile.ReadError("sparse tar entries are not supported")
                _apply_pax(ti, merged)
            ti.pax_headers = merged
            pax, longname, longlink = {}, None, None
            self._data(0 if ti.type in _NO_DATA_TYPES else ti.size)
            yield ti
