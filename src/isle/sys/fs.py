"""Small filesystem helpers: atomic writes and advisory locks."""

from __future__ import annotations

import fcntl
import os

__all__ = ["atomic_write", "flock", "makedirs"]


def atomic_write(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
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

    __slots__ = ("path", "shared", "fd")

    def __init__(self, path: str, shared: bool = False) -> None:
        self.path, self.shared, self.fd = path, shared, -1

    def __enter__(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return fd

    def __exit__(self, *exc: object) -> bool:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        return False


def makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)
