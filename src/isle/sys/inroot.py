"""Paths inside a container's root, resolved by the kernel so they can never lead out of it.

A container's root is a directory the container controls: any component of a path in it may be a
symlink (absolute, or full of ``..``), and the container may swap a directory for a symlink while
the host works on it (CVE-2018-15664). Joining strings (``os.path.join(rootfs, path)``) and then
opening the result follows those symlinks on the host. Here every lookup is ``openat2`` with
``RESOLVE_IN_ROOT`` against a file descriptor of the root: the kernel treats that directory as
``/`` for the whole walk, symlinks included, atomically; magic links (``/proc/self/fd/N``) are
refused. Callers then work with ``*at`` calls on the returned descriptors (``dir_fd=`` in Python)
and never with a joined host path::

    with Root(rootfs) as r:
        fd = r.open("etc/passwd")               # what the container sees as /etc/passwd
        d, name = r.parent("/d/file")     # the directory, resolved inside; name is a plain name
        os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=d)
        r.mkdirs("/srv/app")                     # creates missing dirs, following symlinks inside

Needs Linux >= 5.6 (openat2); older kernels get a clear error rather than an unsafe fallback.
"""

from __future__ import annotations

import os

from isle.sys import libc as L

__all__ = ["Root", "openat2", "RESOLVE_IN_ROOT", "RESOLVE_BENEATH", "RESOLVE_NO_SYMLINKS",
           "RESOLVE_NO_MAGICLINKS", "RESOLVE_NO_XDEV", "clean", "procfs", "open_proc"]

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_NR_OPENAT2 = {"x86_64": 437, "aarch64": 437}
_MAX_LINKS = 40  # the kernel's own limit on symlinks in one lookup (ELOOP)
_EAGAIN_TRIES = 256
_NR: list[int] = []


def _nr() -> int:
    _NR.append(_NR_OPENAT2[os.uname().machine])
    return _NR[0]


def openat2(dirfd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): a new fd, or OSError naming the path."""
    c = L.ctypes
    mode = mode if flags & (os.O_CREAT | os.O_TMPFILE) == os.O_CREAT or flags & os.O_TMPFILE == \
        os.O_TMPFILE else 0
    raw = b"".join(v.to_bytes(8, "little") for v in (flags | os.O_CLOEXEC, mode, resolve))
    how = c.create_string_buffer(raw, 24)  # struct open_how {u64 flags, mode, resolve}
    p = path.encode() if isinstance(path, str) else path
    nr = _NR[0] if _NR else _nr()
    for _ in range(_EAGAIN_TRIES):
        fd = L.libc().syscall(c.c_long(nr), c.c_int(dirfd), c.c_char_p(p), how, c.c_size_t(24))
        # EAGAIN: a '..' was walked while some rename or mount happened anywhere on the host, so
        # the kernel could not prove the walk stayed inside; the lookup is simply retried
        if fd >= 0 or c.get_errno() != 11:
            break
    if fd < 0:
        err = c.get_errno()
        if err == 38:  # ENOSYS
            raise OSError(err, "openat2 is not available (Linux >= 5.6 is needed to resolve paths "
                               "inside a container's root safely)")
        raise OSError(err, os.strerror(err), p.decode(errors="replace"))
    return int(fd)


def clean(path: str) -> str:
    """A path inside the root as the container names it, relative to its '/' ("" for the root).

    Only lexical clean-up of '.' and empty components; '..' is left for the kernel, which stops
    it at the root."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/".join(parts)


class Root:
    """A directory used as '/' for every lookup made through it."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o644, *,
             follow: bool = True) -> int:
        """Open path as the container sees it; follow=False refuses a symlink as the last part."""
        if not follow:
            flags |= os.O_NOFOLLOW
        return openat2(self.fd, clean(path) or ".", flags, mode,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

    def opendir(self, path: str, *, follow: bool = True) -> int:
        """A directory fd (readable, usable with os.fwalk/scandir and dir_fd=)."""
        return self.open(path, os.O_RDONLY | os.O_DIRECTORY, follow=follow)

    def parent(self, path: str) -> tuple[int, str]:
        """(fd of the directory that holds path, resolved inside the root; path's last name).

        The name is a single component, never '', '.' or '..': use it with dir_fd= and
        follow_symlinks=False / O_NOFOLLOW so that it too stays inside."""
        rel = clean(path)
        if not rel:
            raise IsADirectoryError(21, "the container's root itself has no parent", path)
        head, _, name = rel.rpartition("/")
        if name == "..":
            # 'a/..' names a directory the kernel must resolve: hand back its parent instead
            fd = self.opendir(rel)
            try:
                return self.parent_of_fd(fd)
            finally:
                os.close(fd)
        return self.opendir(head), name

    def parent_of_fd(self, fd: int) -> tuple[int, str]:
        """For a directory fd inside the root: (its parent's fd, its name); the root refuses."""
        st = os.fstat(fd)
        rst = os.fstat(self.fd)
        if (st.st_dev, st.st_ino) == (rst.st_dev, rst.st_ino):
            raise IsADirectoryError(21, "the container's root itself has no parent", self.path)
        pfd = openat2(fd, "..", os.O_RDONLY | os.O_DIRECTORY, 0, RESOLVE_BENEATH)
        for e in os.scandir(pfd):
            if e.inode() == st.st_ino and e.is_dir(follow_symlinks=False):
                return pfd, e.name
        os.close(pfd)
        raise FileNotFoundError(2, "directory vanished while resolving it", self.path)

    def mkdirs(self, path: str, mode: int = 0o755) -> int:
        """Make path and its missing parents inside the root; return the final directory's fd.

        Existing components that are symlinks are followed inside the root (as Docker does for
        WORKDIR and COPY destinations); a dangling one has its target made. A component that
        exists and is not a directory is an error naming it."""
        return self._mkdirs(clean(path), mode, 0)

    def _mkdirs(self, rel: str, mode: int, depth: int) -> int:
        if depth > _MAX_LINKS:
            raise OSError(40, "too many levels of symbolic links", "/" + rel)
        parts = rel.split("/") if rel else []
        cur = os.dup(self.fd)
        done: list[str] = []
        try:
            for i, name in enumerate(parts):
                try:
                    nxt = openat2(self.fd, "/".join(done + [name]) or ".",
                                  os.O_PATH | os.O_DIRECTORY, 0,
                                  RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
                except FileNotFoundError:
                    nxt = -1
                except NotADirectoryError:
                    raise NotADirectoryError(20, "exists and is not a directory",
                                             "/" + "/".join(done + [name])) from None
                if nxt < 0:
                    try:
                        os.mkdir(name, mode, dir_fd=cur)
                    except FileExistsError:
                        target = _readlink(cur, name)
                        if target is None:
                            raise
                        # a dangling symlink: make its target (resolved inside the root) instead
                        base = "/".join(done)
                        new = target if target.startswith("/") else f"{base}/{target}"
                        rest = "/".join(parts[i + 1:])
                        os.close(cur)
                        cur = -1
                        return self._mkdirs(clean(f"{new}/{rest}"), mode, depth + 1)
                    nxt = openat2(cur, name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, 0,
                                  RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
                os.close(cur)
                cur = nxt
                done.append(name)
            fd = openat2(cur, ".", os.O_RDONLY | os.O_DIRECTORY, 0, RESOLVE_BENEATH)
            return fd
        finally:
            if cur >= 0:
                os.close(cur)

    def realpath(self, path: str) -> str:
        """What path resolves to inside the root, as the container would name it ('/...')."""
        fd = self.open(path, os.O_PATH)
        try:
            return self.name_of(fd)
        finally:
            os.close(fd)

    def name_of(self, fd: int) -> str:
        """The container-side name of an fd inside this root (from /proc/self/fd, checked)."""
        host = os.readlink(f"/proc/self/fd/{fd}")
        base = os.readlink(f"/proc/self/fd/{self.fd}")
        if host == base:
            return "/"
        if not host.startswith(base.rstrip("/") + "/"):
            raise PermissionError(1, "resolved outside the container's root", host)
        return host[len(base.rstrip("/")):]


def _readlink(dirfd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dirfd)
    except OSError:
        return None


def procfs(path: str = "/proc") -> int:
    """An O_PATH fd of the procfs mounted at path, checked to be the root of a real procfs
    (fstatfs PROC_SUPER_MAGIC, inode 1): not a directory, tmpfs or bind mount a container
    put there (CVE-2025-52881)."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if L.fstatfs_type(fd) != L.PROC_SUPER_MAGIC or os.fstat(fd).st_ino != 1:
            raise OSError(18, "not the root of a procfs", path)  # EXDEV
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_proc(rel: str, flags: int, proc_fd: int | None = None) -> int:
    """Open rel (e.g. 'self/oom_score_adj', 'sys/net/ipv4/ip_forward') on the real procfs at
    /proc (or proc_fd): no magic links, nothing absolute, and no mount crossed on the way, so
    a bind mount or symlink planted over a /proc file cannot take the write elsewhere."""
    pfd = procfs() if proc_fd is None else proc_fd
    try:
        try:
            fd = openat2(pfd, rel, flags, 0,
                         RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
        except OSError as exc:
            if exc.errno == 18:  # EXDEV: something is mounted on the way
                raise OSError(18, "something is mounted over it (not the container's procfs)",
                              "/proc/" + rel) from None
            raise
        if L.fstatfs_type(fd) != L.PROC_SUPER_MAGIC:
            os.close(fd)
            raise OSError(18, "not on a procfs", "/proc/" + rel)
        return fd
    finally:
        if proc_fd is None:
            os.close(pfd)
