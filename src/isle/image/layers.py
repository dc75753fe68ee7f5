"""Layer tarballs in and out, safely: unpack into overlayfs form, tar a directory, apply by copy.

Unpacking resolves every parent directory with ``O_PATH|O_NOFOLLOW`` from the layer root, so
no entry can reach outside it: ``..`` entries and hard links out of the tree are dropped, absolute
names are taken relative to the root, and a path through a symlink is refused instead of being
followed. Whiteouts become overlayfs whiteouts (``.wh.x`` -> char device 0/0 ``x``;
``.wh..wh..opq`` -> ``trusted.overlay.opaque=y``), so each layer is a ready overlay lowerdir.
Every dropped entry is listed in ``Unpacker.skipped`` with the reason.

Speed (see bench/pull_bench.py): tar headers are parsed by ``TarStream`` (~11 us of Python per
entry; tarfile's stream mode cost ~50), which slices them from a 1 MB window of the stream and
writes file data straight from it; each regular file costs openat (with its final mode) + write +
futimens + close (chown and fchmod only when the owner, set-id bits or the umask call for
them), and layers unpack in a ``chattr +T`` directory so ext4 puts each in a fresh block group
(see ``spread_subdirs``). A pull unpacks its layers in parallel processes (fetch.py).
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

from isle.errors import ImageError
from isle.sys import procfs

__all__ = [
    "Unpacker",
    "unpack_layer",
    "HashReader",
    "decompressor",
    "tar_dir",
    "apply_layers",
    "OPAQUE_XATTR",
    "is_whiteout",
    "is_opaque",
    "spread_subdirs",
    "TarStream",
]

OPAQUE_XATTR = "trusted.overlay.opaque"
# without root (no CAP_MKNOD / trusted.*): overlayfs's userxattr forms (Linux >= 6.7)
USER_OPAQUE_XATTR = "user.overlay.opaque"
USER_WHITEOUT_XATTR = "user.overlay.whiteout"
WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
_DIRFLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
BUF = 1 << 20
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread_subdirs(path: str) -> bool:
    """``chattr +T``: ext4's Orlov allocator places each new subdirectory in a fresh block group.

    Layers are unpacked in subdirectories of the store's ``tmp/``. Without this their inodes
    share a group with whatever the host just deleted there, and on ext4 without a journal each
    new inode then costs a scan past every inode freed in the last minutes (``recently_deleted``):
    ~300 us instead of ~25 us per file here. False where the file system has no such flag.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        flags = int.from_bytes(buf[:4], "little")
        if not flags & _FS_TOPDIR_FL:
            buf[:4] = (flags | _FS_TOPDIR_FL).to_bytes(4, "little")
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, buf)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class _Skip(Exception):
    pass


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


def _clean(name: str) -> list[str] | None:
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            return None
        parts.append(p)
    return parts


def is_whiteout(st: os.stat_result, path: str | None = None) -> bool:
    """An overlay whiteout: char device 0/0, or (rootless) an empty file marked by xattr."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return (
        path is not None
        and stat.S_ISREG(st.st_mode)
        and st.st_size == 0
        and _xattr(path, USER_WHITEOUT_XATTR) is not None
    )


def is_opaque(path: str) -> bool:
    return _xattr(path, OPAQUE_XATTR) == b"y" or _xattr(path, USER_OPAQUE_XATTR) == b"y"


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


def _in_userns() -> bool:
    from isle.sys.userns import in_userns

    return in_userns()


class Unpacker:
    """Extract tar members under ``root`` (an empty, private directory) without escaping it."""

    def __init__(
        self, root: str, *, owners: bool | None = None, devices: bool | None = None
    ) -> None:
        self.root = root
        self.root_fd = os.open(root, _DIRFLAGS)
        self.dirs: dict[str, int] = {}
        self.owners = os.geteuid() == 0 if owners is None else owners
        self.devices = os.geteuid() == 0 if devices is None else devices
        self.rootless = os.geteuid() != 0 or _in_userns()  # the user.* overlay forms
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.sgid_dirs: set[str] = set()  # keys of set-gid dirs: new entries take their group
        if os.fstat(self.root_fd).st_mode & stat.S_ISGID:
            self.sgid_dirs.add("")
        self.skipped: list[tuple[str, str]] = []
        # mode bits a new file may not get from open(): set-id and sticky (kept only by chmod
        # here), and the umask's
        self.mode_mask = 0o7000 | _umask()
        self.dir_meta: list[tuple[list[str], tarfile.TarInfo]] = []

    def close(self) -> None:
        self._flush_dirs()
        os.close(self.root_fd)

    def _flush_dirs(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def _dir(self, parts: list[str], create: bool) -> int:
        if not parts:
            return self.root_fd
        key = "/".join(parts)
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        parent = self._dir(parts[:-1], create)
        try:
            fd = os.open(parts[-1], _DIRFLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise _Skip(f"{key}: no such directory") from None
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
            if "/".join(parts[:-1]) in self.sgid_dirs:  # set-gid is inherited
                self.sgid_dirs.add(key)
            fd = os.open(parts[-1], _DIRFLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _Skip(f"{key} is a symlink or not a directory; not followed") from None
            raise
        self.dirs[key] = fd
        return fd

    def _forget(self, key: str) -> None:
        for k in [k for k in self.dirs if k == key or k.startswith(key + "/")]:
            os.close(self.dirs.pop(k))

    def _remove(self, parent: int, name: str, key: str) -> None:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget(key)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                for e in os.listdir(fd):
                    _rm_at(fd, e)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def extract(self, tf: tarfile.TarFile | TarStream) -> None:
        for m in tf:
            # the fd cache is trimmed only between entries: an entry holds the fds _dir gave it
            # (a hard link holds two), and a trim inside one could close and reuse their numbers
            if len(self.dirs) > 200:
                self._flush_dirs()
            try:
                self._member(tf, m)
            except _Skip as s:
                self.skipped.append((m.name, str(s)))
        self._finish_dirs()

    def _finish_dirs(self) -> None:
        self._flush_dirs()
        for parts, m in self.dir_meta:
            if len(self.dirs) > 200:
                self._flush_dirs()
            try:
                parent = self._dir(parts[:-1], False)
                os.utime(
                    parts[-1], ns=(int(m.mtime * 1e9),) * 2, dir_fd=parent, follow_symlinks=False
                )
            except (_Skip, OSError):
                pass
        self._flush_dirs()

    def _member(self, tf: tarfile.TarFile | TarStream, m: tarfile.TarInfo) -> None:
        parts = _clean(m.name)
        if parts is None:
            raise _Skip("path has '..' components; dropped")
        if not parts:
            if m.isdir():
                self._meta(self.root_fd, ".", m, None)
                if m.mode & stat.S_ISGID:
                    self.sgid_dirs.add("")
            return
        base = parts[-1]
        parent = self._dir(parts[:-1], True)
        pkey = "/".join(parts[:-1])
        key = f"{pkey}/{base}" if pkey else base
        if base.startswith(WH_PREFIX):
            self._whiteout(parent, parts, base)
            return
        # a new inode is owned by us (group: the parent's if it is set-gid): chown only if needed
        owned = m.uid == self.euid and m.gid == self.egid and pkey not in self.sgid_dirs
        if m.isdir():
            try:
                os.mkdir(base, 0o700, dir_fd=parent)
            except FileExistsError:
                st = os.stat(base, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    self._remove(parent, base, key)
                    os.mkdir(base, 0o700, dir_fd=parent)
                owned = False  # made by an earlier entry, maybe for someone else
            fd = os.open(
                base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
            )
            try:
                self._meta(fd, None, m, None, owned=owned, times=False)  # times: at the end
            finally:
                os.close(fd)
            if m.mode & stat.S_ISGID:
                self.sgid_dirs.add(key)
            else:
                self.sgid_dirs.discard(key)
            self.dir_meta.append((parts, m))
            return
        if m.isreg():
            # made with its final mode when nothing (umask, a chown that drops set-id bits)
            # would change it: one fchmod less per file
            mode = m.mode & 0o7777
            exact = owned and not mode & self.mode_mask
            fd = self._replacing(
                parent,
                base,
                key,
                lambda: os.open(
                    base,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode if exact else 0o600,
                    dir_fd=parent,
                ),
            )
            try:
                if isinstance(tf, TarStream):
                    tf.write_to(fd)
                elif m.size and (src := tf.extractfile(m)) is not None:
                    while b := src.read(BUF):
                        while b:
                            b = b[os.write(fd, b) :]
                self._meta(fd, None, m, None, owned=owned, chmod=not exact)
            finally:
                os.close(fd)
        elif m.issym():
            self._replacing(parent, base, key, lambda: os.symlink(m.linkname, base, dir_fd=parent))
            self._meta(None, base, m, parent, owned=owned)
        elif m.islnk():
            tparts = _clean(m.linkname)
            if not tparts:
                raise _Skip(f"hard link to {m.linkname!r} leaves the layer; dropped")
            tkey = "/".join(tparts)
            if tkey == key or tkey.startswith(key + "/"):
                # the link would replace its own target (or a directory holding it): the target
                # goes first, and its directory's fd with it
                raise _Skip(f"hard link to {m.linkname!r} inside the entry it replaces; dropped")
            tparent = self._dir(tparts[:-1], False)
            try:
                self._replacing(
                    parent,
                    base,
                    key,
                    lambda: os.link(
                        tparts[-1],
                        base,
                        src_dir_fd=tparent,
                        dst_dir_fd=parent,
                        follow_symlinks=False,
                    ),
                )
            except (FileNotFoundError, PermissionError) as e:
                raise _Skip(f"hard link target {m.linkname!r}: {e.strerror}") from None
        elif m.ischr() or m.isblk():
            if not self.devices:
                raise _Skip("device node not allowed here; dropped")
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            try:
                dev = os.makedev(m.devmajor, m.devminor)
                self._replacing(
                    parent, base, key, lambda: os.mknod(base, kind | 0o600, dev, dir_fd=parent)
                )
            except (PermissionError, OverflowError, ValueError) as e:  # no CAP_MKNOD (a user ns)
                raise _Skip(f"device node: {e}; dropped") from None
            self._meta(None, base, m, parent, owned=owned)
        elif m.isfifo():
            self._replacing(parent, base, key, lambda: os.mkfifo(base, 0o600, dir_fd=parent))
            self._meta(None, base, m, parent, owned=owned)
        else:
            raise _Skip(f"unsupported tar entry type {m.type!r}")

    def _replacing(self, parent: int, base: str, key: str, make: Callable[[], Any]) -> Any:
        """make() the entry; if the name is taken (a later entry wins), remove it and retry."""
        try:
            return make()
        except FileExistsError:
            self._remove(parent, base, key)
            return make()

    def _whiteout(self, parent: int, parts: list[str], base: str) -> None:
        if base == WH_OPAQUE:
            os.setxattr(
                f"/proc/self/fd/{parent}",
                USER_OPAQUE_XATTR if self.rootless else OPAQUE_XATTR,
                b"y",
            )
            return
        if base.startswith(WH_PREFIX + WH_PREFIX):
            raise _Skip("aufs metadata; dropped")
        target = base[len(WH_PREFIX) :]
        if target in ("", ".", "..") or "/" in target or "\0" in target:
            # `.wh...` would remove the layer's parent (the store's tmp/), `.wh..` the layer
            raise ImageError(
                f"layer entry {'/'.join(parts)!r}: a whiteout must name an entry of its "
                f"directory, not {target!r}; refused"
            )
        self._remove(parent, target, "/".join(parts[:-1] + [target]))
        if not self.rootless:
            os.mknod(target, stat.S_IFCHR | 0o000, 0, dir_fd=parent)
        else:
            fd = os.open(
                target,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                0o600,
                dir_fd=parent,
            )
            try:
                os.setxattr(fd, USER_WHITEOUT_XATTR, b"y")
            finally:
                os.close(fd)

    def _meta(
        self,
        fd: int | None,
        name: str | None,
        m: tarfile.TarInfo,
        parent: int | None,
        *,
        owned: bool = False,
        times: bool = True,
        chmod: bool = True,
    ) -> None:
        """Ownership, then xattrs and mode (chown clears set-id bits), then times."""
        is_link = m.issym()
        target: Any = fd if fd is not None else name
        kw: dict[str, Any] = {} if fd is not None else {"dir_fd": parent, "follow_symlinks": False}
        if name == ".":
            target, kw = self.root, {}
        if self.owners and not owned:
            try:
                os.chown(target, m.uid, m.gid, **kw)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
        if m.pax_headers:
            self._xattrs(target, fd, name, parent, m)
        if chmod and not is_link:
            os.chmod(target, m.mode & 0o7777, **kw)
        if times:
            ns = int(m.mtime * 1_000_000_000)
            try:
                os.utime(target, ns=(ns, ns), **kw)
            except OSError:
                pass

    def _xattrs(
        self, target: Any, fd: int | None, name: str | None, parent: int | None, m: tarfile.TarInfo
    ) -> None:
        for k, v in m.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                xname = k[len("SCHILY.xattr.") :]
                if xname.startswith(("trusted.overlay.", "user.overlay.")):
                    # overlayfs metadata (redirect, metacopy, origin, whiteout, opaque) comes
                    # only from whiteout entries: a layer naming it could steer overlay lookups
                    self.skipped.append((m.name, f"xattr {xname}: overlay metadata; dropped"))
                    continue
                val = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
                path = target if fd is not None or name == "." else f"/proc/self/fd/{parent}/{name}"
                try:
                    if isinstance(path, int):
                        os.setxattr(path, xname, val)
                    else:
                        os.setxattr(path, xname, val, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                    self.skipped.append((m.name, f"xattr {xname}: {e.strerror}"))


def _umask() -> int:
    """The process umask, read without changing it; unknown: every file gets its chmod."""
    m = procfs.umask()
    return 0o777 if m is None else m


def _rm_at(dirfd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
        try:
            for e in os.listdir(fd):
                _rm_at(fd, e)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dirfd)
    else:
        os.unlink(name, dir_fd=dirfd)


def unpack_layer(
    compressed: Any, dest: str, compression: str, **kw: Any
) -> tuple[str, int, list[tuple[str, str]]]:
    """Decompress + untar ``compressed`` into ``dest`` in one pass.

    Returns (diff_id, uncompressed size, skipped entries). Raises ImageError on a corrupt stream.
    """
    raw = HashReader(decompressor(compressed, compression))
    u = Unpacker(dest, **kw)
    try:
        u.extract(TarStream(raw))
        raw.drain()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ImageError(f"corrupt or truncated layer: {e}") from e
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise ImageError(f"corrupt zstd layer: {e}") from e
        raise
    finally:
        u.close()
    return raw.digest, raw.size, u.skipped


def tar_dir(
    src: str, out: IO[bytes] | BinaryIO, *, overlay_whiteouts: bool = True, prefix: str = ""
) -> None:
    """Write ``src`` as a PAX tar (sorted, numeric owners, xattrs, hard links, devices).

    With ``overlay_whiteouts`` an overlay upper dir's char 0/0 files become ``.wh.`` entries and
    opaque directories get a ``.wh..wh..opq`` entry, i.e. a standard layer diff.

    ``src`` may belong to a running container (export, commit --no-pause, a RUN step's upper
    dir): it is walked by directory fd with O_NOFOLLOW (sys/fdtree), so a directory swapped for
    a symlink mid-walk is skipped, never followed to the host; a file is read from the fd that
    was checked to be a regular file, and xattrs are read from the entry itself.
    """
    from isle.sys.fdtree import open_file, walk, xattr_path

    top = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUF) as tf:
            for drel, dfd, ents in walk(top):
                rel = drel + "/" if drel else ""
                if overlay_whiteouts and rel and _fd_opaque(dfd):
                    _add_whiteout(tf, prefix + rel + WH_OPAQUE)
                for name, st in ents:
                    xp = xattr_path(dfd, name)
                    if overlay_whiteouts and is_whiteout(st, xp):
                        _add_whiteout(tf, prefix + rel + WH_PREFIX + name)
                        continue
                    f = None
                    if stat.S_ISREG(st.st_mode):
                        try:
                            fd, st = open_file(dfd, name, st)
                        except OSError as e:
                            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                                continue  # gone or swapped since the listing
                            raise
                        f = os.fdopen(fd, "rb")
                    try:
                        try:
                            ti = _tarinfo(tf, st, prefix + rel + name, dfd, name)
                        except OSError as e:  # a symlink gone or replaced since the listing
                            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EINVAL):
                                continue
                            raise
                        if ti is None:
                            continue  # a socket: not archivable (as tar)
                        for x in _xattrs(xp):
                            if not x.startswith(("trusted.overlay.", "user.overlay.")):
                                v = _xattr(xp, x)
                                if v is not None:
                                    # typeshed says Mapping; tarfile's is a dict
                                    ti.pax_headers[  # type: ignore[index]
                                        "SCHILY.xattr." + x
                                    ] = v.decode("utf-8", "surrogateescape")
                        tf.addfile(ti, f if ti.isreg() else None)
                    finally:
                        if f is not None:
                            f.close()
    finally:
        os.close(top)


def _fd_opaque(dfd: int) -> bool:
    for x in (OPAQUE_XATTR, USER_OPAQUE_XATTR):
        try:
            if os.getxattr(dfd, x) == b"y":
                return True
        except OSError:
            pass
    return False


def _tarinfo(
    tf: tarfile.TarFile, st: os.stat_result, arc: str, dfd: int, name: str
) -> tarfile.TarInfo | None:
    """tarfile.gettarinfo from an lstat taken by fd (a symlink's target read at dfd)."""
    m = st.st_mode
    linkname = ""
    if stat.S_ISREG(m):
        inode = (st.st_ino, st.st_dev)
        # TarFile.inodes: the table gettarinfo keeps for hard links (not in typeshed)
        inodes: dict[tuple[int, int], str] = tf.inodes  # type: ignore[attr-defined]
        if st.st_nlink > 1 and inode in inodes and arc != inodes[inode]:
            kind, linkname = tarfile.LNKTYPE, inodes[inode]
        else:
            kind = tarfile.REGTYPE
            if inode[0]:
                inodes[inode] = arc
    elif stat.S_ISDIR(m):
        kind = tarfile.DIRTYPE
    elif stat.S_ISFIFO(m):
        kind = tarfile.FIFOTYPE
    elif stat.S_ISLNK(m):
        kind, linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
    elif stat.S_ISCHR(m):
        kind = tarfile.CHRTYPE
    elif stat.S_ISBLK(m):
        kind = tarfile.BLKTYPE
    else:
        return None
    ti = tf.tarinfo(arc.lstrip("/"))
    ti.mode, ti.uid, ti.gid = m, st.st_uid, st.st_gid
    ti.size = st.st_size if kind == tarfile.REGTYPE else 0
    ti.mtime, ti.type, ti.linkname = st.st_mtime, kind, linkname
    ti.uname = ti.gname = ""
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return ti


def _add_whiteout(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size = tarfile.REGTYPE, 0o644, 0
    tf.addfile(ti)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def apply_layers(layer_dirs: list[str], dest: str) -> None:
    """The copy fallback: merge overlay-form layers (lowest first) into ``dest``."""
    for layer in layer_dirs:
        for top, dirs, files in os.walk(layer):
            rel = os.path.relpath(top, layer)
            dtop = dest if rel == "." else os.path.join(dest, rel)
            if rel != "." and is_opaque(top):
                for e in os.listdir(dtop):
                    _rm_at_path(os.path.join(dtop, e))
            for name in sorted(dirs + files):
                s, d = os.path.join(top, name), os.path.join(dtop, name)
                st = os.lstat(s)
                if is_whiteout(st, s):
                    _rm_at_path(d)
                    continue
                try:
                    dst = os.lstat(d)
                    if not (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(dst.st_mode)):
                        _rm_at_path(d)
                except FileNotFoundError:
                    pass
                if stat.S_ISDIR(st.st_mode):
                    os.makedirs(d, exist_ok=True)
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(s), d)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copyfile(s, d, follow_symlinks=False)
                else:
                    os.mknod(d, st.st_mode, st.st_rdev)
                try:
                    os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
                except OSError:
                    pass
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(d, stat.S_IMODE(st.st_mode))
                for x in _xattrs(s):
                    if not x.startswith(("trusted.overlay.", "user.overlay.")):
                        v = _xattr(s, x)
                        if v is not None:
                            try:
                                os.setxattr(d, x, v, follow_symlinks=False)
                            except OSError:
                                pass
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _rm_at_path(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
