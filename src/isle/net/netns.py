"""Persistent network namespaces: a netns bind-mounted on a file, so it outlives its processes.

Created with util-linux ``unshare --net=FILE`` (which also runs ``ip link set lo up`` inside),
removed by a lazy unmount and unlink. A container joins it with setns (OCI
``linux.namespaces[{"type": "network", "path": FILE}]``).
"""

from __future__ import annotations

import errno
import os

from isle.sys import proc
from isle.sys.libc import MNT_DETACH, LinuxSyscalls

__all__ = ["create", "remove", "is_netns", "run_in"]


def is_netns(path: str) -> bool:
    """True if path is a mounted network namespace (nsfs), not just a file."""
    try:
        st = os.stat(path)
        ref = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return st.st_dev == ref.st_dev


def create(path: str) -> str:
    """A new network namespace bound on path, with loopback up."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o644)
    os.close(fd)
    try:
        proc.run([proc.UNSHARE, f"--net={path}", proc.IP, "link", "set", "lo", "up"], timeout=30)
    except BaseException:
        remove(path)
        raise
    return path


def remove(path: str) -> None:
    """Unmount and delete; a missing or unmounted file is fine (idempotent)."""
    try:
        LinuxSyscalls().umount2(path, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_in(path: str, argv: list[str], timeout: float = 30) -> bytes:
    """Run argv inside the namespace at path (nsenter); returns stdout."""
    return proc.run(["nsenter", f"--net={path}", "--", *argv], timeout=timeout).stdout or b""
