"""Writing a directory (an overlay upper dir or a plain tree) as a layer tar."""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import IO, BinaryIO

from isle.image.tar.stream import BUF
from isle.image.tar.whiteout import (
    OPAQUE_XATTR,
    USER_OPAQUE_XATTR,
    WH_OPAQUE,
    WH_PREFIX,
    is_whiteout,
    xattr,
    xattr_names,
)

__all__ = ["tar_dir"]

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
                        for x in xattr_names(xp):
                            if not x.startswith(("trusted.overlay.", "user.overlay.")):
                                v = xattr(xp, x)
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
