"""Unpacking a layer into overlayfs form without escaping its root (see layers.py)."""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

from isle.errors import ImageError
from isle.image.tar.stream import BUF, HashReader, TarStream, decompressor
from isle.image.tar.whiteout import (
    OPAQUE_XATTR,
    USER_OPAQUE_XATTR,
    USER_WHITEOUT_XATTR,
    WH_OPAQUE,
    WH_PREFIX,
    clean_name,
)
from isle.sys import procfs

__all__ = ["Unpacker", "unpack_layer"]


class _Skip(Exception):
    """An entry left out (the reason goes to Unpacker.skipped)."""

_DIRFLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        _rm_at(parent, name, st)

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
        parts = clean_name(m.name)
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
            if not m.linkname:  # symlink(2) refuses an empty target (ENOENT)
                raise _Skip("symlink with an empty target; dropped")
            self._replacing(parent, base, key, lambda: os.symlink(m.linkname, base, dir_fd=parent))
            self._meta(None, base, m, parent, owned=owned)
        elif m.islnk():
            tparts = clean_name(m.linkname)
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


def _rm_at(dirfd: int, name: str, st: os.stat_result | None = None) -> None:
    """Remove name in dirfd, a directory with all it holds (never following a symlink)."""
    if st is None:
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
