"""Small filesystem helpers: atomic writes, private directories and advisory locks.

State is private by default: ``atomic_write`` makes 0600 files and ``private_dir`` makes (and
tightens, on every use, existing installs included) 0700 directories, so records, specs with
``-e`` secrets, logs, and rootfs trees are never readable or reachable by other host users."""

from __future__ import annotations

import fcntl
import os

__all__ = ["atomic_write", "flock", "makedirs", "private_dir", "private_file", "read_text"]


def atomic_write(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Write data to path so readers see the old or the new file, never half of one.

    durable=False skips the fsync: for run-time state that dies with the machine anyway (/run is
    not always a tmpfs, and an fsync on a busy disk costs 10-20 ms)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


class flock:  # noqa: N801 - used as a function: with flock(path) as fd
    """Hold an flock on path (created if missing) for the with-block; `as` gives the fd.

    A class, not a contextlib generator: importing contextlib (collections, functools, its ABCs)
    costs ~2 ms of every `isle` start, and this is the only use on that path."""

    __slots__ = ("path", "shared", "wait", "fd")

    def __init__(self, path: str, shared: bool = False, wait: bool = True) -> None:
        """wait=False: BlockingIOError at once when someone else holds it."""
        self.path, self.shared, self.wait, self.fd = path, shared, wait, -1

    def __enter__(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
                        | (0 if self.wait else fcntl.LOCK_NB))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return fd

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def read_text(path: str, default: str = "") -> str:
    """The file's text, or default if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def private_dir(path: str, mode: int = 0o700) -> str:
    """Make path (and missing parents) a directory with at most ``mode`` (0700): made so when
    new, and an existing one is tightened (chmod away extra bits, never widened), so installs
    made before this rule lose their world-readable modes on next use. Two syscalls when it
    exists. A symlink to a directory is followed (an admin's /var/lib/isle -> /data/isle, like
    podman's graphroot); anything else that is not a directory is a ConfigError naming path."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
        os.makedirs(parent, mode, exist_ok=True)  # parents it makes are private too
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
    st = os.stat(path)
    if st.st_mode & 0o170000 != 0o040000:
        from isle.errors import ConfigError

        raise ConfigError("", f"{path}: exists and is not a directory")
    if st.st_mode & 0o7777 & ~mode:
        os.chmod(path, st.st_mode & mode & 0o7777)
    return path


def private_file(path: str, mode: int = 0o600) -> None:
    """Create path empty with ``mode`` if missing; tighten an existing file's mode to it."""
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(path, flags, mode))
        return
    except FileExistsError:
        pass
    try:
        st = os.lstat(path)
        if st.st_mode & 0o170000 == 0o100000 and st.st_mode & 0o7777 & ~mode:
            os.chmod(path, st.st_mode & mode & 0o7777)
    except FileNotFoundError:
        pass  # gone meanwhile (sqlite drops its -wal/-shm when the last connection closes)
