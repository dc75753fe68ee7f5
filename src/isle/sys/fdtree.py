"""Trees walked and copied through directory file descriptors, never through joined path strings.

A tree a container can write to may change while the host reads or writes it: a directory the
host listed can be a symlink to ``/`` by the time the host opens ``top/dir/file``
(CVE-2018-15664). Here every step is one name looked up in an open directory with ``O_NOFOLLOW``
(``dir_fd=``, ``follow_symlinks=False``): a directory is entered only if what was opened is the
directory that was listed (same device and inode), a file is read only if the opened fd is a
regular file, and symlinks are read (``readlink``) and recreated, never followed. A swap can make
an entry vanish or change between listing and use; it can never make the walk leave the tree.

``resolve`` is ``realpath -m`` inside a ``Root``: where a path would land, following the root's
own symlinks (dangling ones too) the way the container would, without creating anything.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isle.sys.inroot import Root

__all__ = ["walk", "listdir", "open_dir", "open_file", "mkdir_at", "copy", "copy_fd", "copy_into",
           "resolve", "xattr_path", "Copier"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS = 40
_GONE = (2, 20, 22, 40)  # ENOENT, ENOTDIR, EINVAL (readlink of a non-link), ELOOP (O_NOFOLLOW)



def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def open_dir(dirfd: int, name: str, expect: os.stat_result | None = None) -> int:
    """Open the directory ``name`` in ``dirfd`` without following a symlink; with ``expect``
    (its lstat from a listing) FileNotFoundError unless it is still that directory."""
    fd = os.open(name, _DIR, dir_fd=dirfd)
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise FileNotFoundError(2, "changed while it was read", name)
    return fd


def open_file(dirfd: int, name: str, expect: os.stat_result | None = None
              ) -> tuple[int, os.stat_result]:
    """Open the regular file ``name`` in ``dirfd`` for reading (no symlink, no FIFO wait);
    FileNotFoundError if it is not a regular file (or not ``expect``) any more."""
    fd = os.open(name, _FILE, dir_fd=dirfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (
        expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino)
    ):
        os.close(fd)
        raise FileNotFoundError(2, "changed while it was read", name)
    return fd, st


def listdir(dirfd: int) -> list[tuple[str, os.stat_result]]:
    """The entries of an open directory, sorted by name, each with its lstat (vanished ones
    are left out)."""
    out = []
    for name in sorted(os.listdir(dirfd)):
        st = _lstat(dirfd, name)
        if st is not None:
            out.append((name, st))
    return out


def walk(topfd: int) -> Iterator[tuple[str, int, list[tuple[str, os.stat_result]]]]:
    """Top-down like os.walk, sorted: (relative dir, its open fd, [(name, lstat)]).

    ``relative dir`` is '' for the top, else 'a/b' (no slashes around). The fd is valid until
    the next step. Subdirectories are entered by fd with O_NOFOLLOW and only if they are still
    what was listed; one fd is held per level of depth."""
    top = os.open(".", _DIR, dir_fd=topfd)
    stack: list[tuple[int, str, Iterator[tuple[str, os.stat_result]]]] = []
    try:
        ents = listdir(top)
        yield "", top, ents
        stack.append((top, "", iter([e for e in ents if stat.S_ISDIR(e[1].st_mode)])))
        top = -1
        while stack:
            fd, rel, subdirs = stack[-1]
            nxt = next(subdirs, None)
            if nxt is None:
                os.close(fd)
                stack.pop()
                continue
            name, st = nxt
            try:
                sub = open_dir(fd, name, st)
            except OSError as e:
                if e.errno in _GONE:
                    continue  # gone or swapped for a symlink since the listing: not entered
                raise
            srel = f"{rel}/{name}" if rel else name
            try:
                ents = listdir(sub)
            except BaseException:
                os.close(sub)
                raise
            stack.append((sub, srel, iter([e for e in ents if stat.S_ISDIR(e[1].st_mode)])))
            yield srel, sub, ents
    finally:
        if top >= 0:
            os.close(top)
        for fd, _, _ in stack:
            os.close(fd)


def xattr_path(dirfd: int, name: str) -> str:
    """A path for *xattr(..., follow_symlinks=False) that names exactly ``name`` in ``dirfd``
    (procfs's link to the open directory; the last component is not followed)."""
    return f"/proc/self/fd/{dirfd}/{name}"


def resolve(root: Root, path: str) -> str:
    """Where ``path`` lands inside ``root`` as the container would name it ('/a/b'): every
    symlink followed inside the root (dangling ones too, like ``realpath -m``), '..' stopped at
    the root, missing parts kept as written. NotADirectoryError if a non-directory is in the
    way; OSError(ELOOP) after 40 links."""
    from isle.sys.inroot import clean

    todo = [p for p in clean(path).split("/") if p]
    done: list[str] = []
    links = 0
    cur = os.dup(root.fd)
    missing = False
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                if not missing:
                    os.close(cur)
                    cur = -1
                    cur = root.open("/".join(done), os.O_PATH | os.O_DIRECTORY)
                continue
            if missing:
                done.append(name)
                continue
            st = _lstat(cur, name)
            if st is None:
                missing = True
                done.append(name)
            elif stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(40, "too many levels of symbolic links", path)
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    done = []
                    os.close(cur)
                    cur = -1
                    cur = os.dup(root.fd)
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            elif stat.S_ISDIR(st.st_mode):
                nfd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=cur)
                os.close(cur)
                cur = nfd
                done.append(name)
            else:
                if todo:
                    raise NotADirectoryError(20, "not a directory", "/" + "/".join(done + [name]))
                done.append(name)
    finally:
        if cur >= 0:
            os.close(cur)
    return "/" + "/".join(done)


# -- copying ---------------------------------------------------------------------------------


class Copier:
    """Copy entries from one open directory to another: symlinks as symlinks, devices and FIFOs
    as nodes, sockets skipped, hard links within one copy kept. In the destination an existing
    directory is merged into; anything else in the way (a symlink included) is replaced, never
    followed; a directory in the way of a non-directory is an error."""

    def __init__(self, keep_owner: bool, *, owner: tuple[int, int] | None = None,
                 mode: int | None = None, skip: Callable[[str], bool] | None = None,
                 hardlinks: bool = True, untrusted: bool = False) -> None:
        self.keep_owner = keep_owner
        self.owner, self.mode, self.skip, self.hardlinks = owner, mode, skip, hardlinks
        # a container's files landing on the host: no device nodes (a 0666 block device the
        # container made would open the host's disk to every user) and no set-id bits
        self.untrusted = untrusted
        self.links: dict[tuple[int, int], int] = {}  # source inode -> O_PATH fd of the copy

    def close(self) -> None:
        for fd in self.links.values():
            os.close(fd)
        self.links.clear()

    def entry(self, sdir: int, sname: str, st: os.stat_result, ddir: int, dname: str,
              rel: str = "") -> None:
        m = st.st_mode
        if stat.S_ISDIR(m):
            sfd = open_dir(sdir, sname, st)
            try:
                self.tree(sfd, st, ddir, dname, rel)
            finally:
                os.close(sfd)
        elif stat.S_ISREG(m):
            sfd, fst = open_file(sdir, sname, st)
            try:
                self.file(sfd, fst, ddir, dname)
            finally:
                os.close(sfd)
        elif stat.S_ISLNK(m):
            target = os.readlink(sname, dir_fd=sdir)
            self._clear(ddir, dname)
            os.symlink(target, dname, dir_fd=ddir)
            self._meta_nofollow(ddir, dname, st)
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m) or stat.S_ISFIFO(m):
            if self.untrusted and not stat.S_ISFIFO(m):
                return
            self._clear(ddir, dname)
            os.mknod(dname, stat.S_IFMT(m) | 0o600, st.st_rdev, dir_fd=ddir)
            self._meta_nofollow(ddir, dname, st, chmod=True)
        # sockets: nothing to copy (as cp and tar)

    def tree(self, sfd: int, st: os.stat_result, ddir: int, dname: str, rel: str = "") -> None:
        """Copy the open source directory sfd to ddir/dname (merging into a directory there)."""
        dfd = mkdir_at(ddir, dname, 0o700)
        try:
            self.contents(sfd, dfd, rel)
            self._meta_fd(dfd, st)
        finally:
            os.close(dfd)

    def contents(self, sfd: int, dfd: int, rel: str = "") -> None:
        for name, est in listdir(sfd):
            erel = f"{rel}/{name}" if rel else name
            if self.skip is not None and self.skip(erel):
                continue
            try:
                self.entry(sfd, name, est, dfd, name, erel)
            except OSError as e:
                if e.errno not in _GONE:
                    raise
                # vanished, or swapped for a symlink, since it was listed: skipped (as cp does)

    def file(self, sfd: int, st: os.stat_result, ddir: int, dname: str) -> None:
        key = (st.st_dev, st.st_ino)
        if self.hardlinks and st.st_nlink > 1 and key in self.links:
            self._clear(ddir, dname)
            os.link(f"/proc/self/fd/{self.links[key]}", dname, dst_dir_fd=ddir)
            return
        self._clear(ddir, dname)
        dfd = os.open(dname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=ddir)
        try:
            _copy_data(sfd, dfd, st.st_size)
            self._meta_fd(dfd, st)
            if self.hardlinks and st.st_nlink > 1 and len(self.links) < 4096:
                self.links[key] = os.open(dname, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                                          dir_fd=ddir)
        finally:
            os.close(dfd)

    @staticmethod
    def _clear(ddir: int, dname: str) -> None:
        cur = _lstat(ddir, dname)
        if cur is None:
            return
        if stat.S_ISDIR(cur.st_mode):
            raise IsADirectoryError(21, "cannot overwrite a directory with a non-directory", dname)
        os.unlink(dname, dir_fd=ddir)

    def _ids(self, st: os.stat_result) -> tuple[int, int] | None:
        if self.owner is not None:
            return self.owner
        return (st.st_uid, st.st_gid) if self.keep_owner else None

    def _meta_fd(self, fd: int, st: os.stat_result) -> None:
        ids = self._ids(st)
        if ids is not None:
            try:
                os.fchown(fd, *ids)
            except PermissionError:
                pass
        mode = self.mode if self.mode is not None else stat.S_IMODE(st.st_mode)
        if self.untrusted and not stat.S_ISDIR(st.st_mode):
            mode &= ~0o6000
        os.fchmod(fd, mode)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _meta_nofollow(self, ddir: int, dname: str, st: os.stat_result,
                       chmod: bool = False) -> None:
        ids = self._ids(st)
        if ids is not None:
            try:
                os.chown(dname, *ids, dir_fd=ddir, follow_symlinks=False)
            except PermissionError:
                pass
        if chmod:
            _chmod_at(ddir, dname, self.mode if self.mode is not None else stat.S_IMODE(st.st_mode))
        os.utime(dname, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=ddir, follow_symlinks=False)


def mkdir_at(ddir: int, name: str, mode: int = 0o755) -> int:
    """The directory ``name`` in ``ddir``, made if missing: an fd of it (O_NOFOLLOW). Anything
    else there, a symlink included, is replaced by a new directory, never followed."""
    cur = _lstat(ddir, name)
    if cur is not None and not stat.S_ISDIR(cur.st_mode):
        os.unlink(name, dir_fd=ddir)
        cur = None
    if cur is None:
        os.mkdir(name, mode, dir_fd=ddir)
    return open_dir(ddir, name)


def _chmod_at(ddir: int, name: str, mode: int) -> None:
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=ddir)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            return
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _copy_data(sfd: int, dfd: int, size: int) -> None:
    off = 0
    while True:
        try:
            n = os.copy_file_range(sfd, dfd, 1 << 30)
        except OSError:
            break
        if n == 0:
            return
        off += n
    os.lseek(sfd, off, os.SEEK_SET)
    while b := os.read(sfd, 1 << 20):
        os.write(dfd, b)


def copy(sdir: int, sname: str, ddir: int, dname: str, *, keep_owner: bool,
         follow: bool = False, untrusted: bool = False) -> None:
    """Copy the entry ``sname`` of the open directory ``sdir`` to ``dname`` in ``ddir``.

    ``follow`` follows a symlink as ``sname`` itself (``cp -L`` for the top only); symlinks
    below are always copied as symlinks."""
    st = os.stat(sname, dir_fd=sdir, follow_symlinks=follow)
    c = Copier(keep_owner, untrusted=untrusted)
    try:
        isdir = stat.S_ISDIR(st.st_mode)
        if follow and (isdir or stat.S_ISREG(st.st_mode)):
            kind = os.O_DIRECTORY if isdir else os.O_NONBLOCK
            sfd = os.open(sname, os.O_RDONLY | kind | os.O_CLOEXEC, dir_fd=sdir)
            try:
                (c.tree if isdir else c.file)(sfd, os.fstat(sfd), ddir, dname)
            finally:
                os.close(sfd)
        else:
            c.entry(sdir, sname, st, ddir, dname)
    finally:
        c.close()


def copy_fd(sfd: int, ddir: int, dname: str, *, keep_owner: bool, untrusted: bool = False) -> None:
    """Copy what the open fd ``sfd`` is (O_PATH is fine: a directory or a regular file; any
    other type through its parent is not reachable this way) to ``dname`` in ``ddir``."""
    st = os.fstat(sfd)
    c = Copier(keep_owner, untrusted=untrusted)
    try:
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(".", _DIR, dir_fd=sfd)
            try:
                c.tree(fd, st, ddir, dname)
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            # re-open what the O_PATH fd is (procfs's link to it, not a path lookup again)
            fd = os.open(f"/proc/self/fd/{sfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fst = os.fstat(fd)
                if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                    raise FileNotFoundError(2, "changed while it was read")
                c.file(fd, fst, ddir, dname)
            finally:
                os.close(fd)
        else:
            raise OSError(95, "only directories and regular files can be copied from an fd")
    finally:
        c.close()


def copy_into(sfd: int, dfd: int, *, keep_owner: bool, untrusted: bool = False) -> None:
    """Copy the contents of the open directory ``sfd`` into the open directory ``dfd``."""
    c = Copier(keep_owner, untrusted=untrusted)
    try:
        fd = os.open(".", _DIR, dir_fd=sfd)
        try:
            c.contents(fd, dfd)
        finally:
            os.close(fd)
    finally:
        c.close()
