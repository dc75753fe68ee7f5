"""virtiofsd: the host side of a virtio-fs share (QEMU's own daemon from Debian's qemu-system).

One virtiofsd per shared directory, started before QEMU (which connects to its vhost-user socket
at start) and gone with it: virtiofsd exits when QEMU disconnects, and dies with its parent.
A read-only share is a read-only bind mount of the directory in virtiofsd's own mount namespace
(QEMU 7.2's C virtiofsd has no --readonly), so the guest cannot write through it whatever it
mounts, and nothing is mounted on the host. A share with `expose` serves a read-only tmpfs there
holding the directory (bound) under that name, so that the guest can bind TAG/NAME: its mountinfo
then names the directory, as a bind mount on a host does (OCI runtime-tools checks it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from isle.errors import VMError
from isle.sys import proc
from isle.vm.config import FsShare

__all__ = ["find", "start", "stop"]

_CANDIDATES = ("/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "/usr/bin/virtiofsd")


def find() -> str:
    """virtiofsd's path, or VMError saying which package brings it."""
    for p in _CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    raise VMError("virtiofsd not found (Debian's qemu-system-x86 ships /usr/lib/qemu/virtiofsd): "
                  "it is needed to share a volume or bind mount with a VM")


def _child_setup(source: str, readonly: bool, cgroup_files: tuple[str, ...] = (),
                 staging: str = "", expose: str = "") -> None:
    """In the forked child before exec: die with the parent, join the container's cgroup (its
    memory and pids bound virtiofsd too); a private ro view of source, or of staging holding it
    as expose."""
    from isle.sys.libc import (
        CLONE_NEWNS,
        MS_BIND,
        MS_PRIVATE,
        MS_RDONLY,
        MS_REC,
        MS_REMOUNT,
        LinuxSyscalls,
    )

    sc = LinuxSyscalls()
    sc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    for f in cgroup_files:
        fd = os.open(f, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    if readonly or expose:
        sc.unshare(CLONE_NEWNS)
        sc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    if expose:  # all in this namespace: nothing is mounted on the host
        sc.mount("isle-share", staging, "tmpfs", 0, "mode=0755,size=16k")
        os.mkdir(os.path.join(staging, expose), 0o755)
        sc.mount(source, os.path.join(staging, expose), None, MS_BIND | MS_REC)
        source = os.path.join(staging, expose)
        sc.mount(None, staging, None, MS_REMOUNT | MS_RDONLY)
    if readonly:
        sc.mount(source, source, None, MS_BIND | MS_REC)
        sc.mount(None, source, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def start(share: FsShare, log: str, timeout: float = 10.0,
          cgroup_files: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """virtiofsd serving share.source on share.socket, once the socket exists.

    virtiofsd needs root's CAP_DAC_READ_SEARCH, FOWNER, CHOWN... to serve files of any owner, so
    it is not dropped to a uid; it runs its own sandbox (-o sandbox=namespace: new mount, pid and
    net namespaces, pivot_root into the shared directory, its seccomp filter, capabilities cut to
    what file serving needs) and sits in the container's cgroup. The caller hands the socket to
    QEMU's uid."""
    if not os.path.isdir(share.source):
        raise VMError(f"cannot share {share.source} with a VM: not a directory")
    if os.geteuid() != 0:
        # QEMU 7.2's C virtiofsd sandboxes itself (setgroups, new namespaces) and cannot in a
        # user namespace of the caller's own ids: fail here, clearly, not in virtiofsd's log
        raise VMError(f"cannot share {share.source} with a VM without root: virtiofsd needs "
                      "root here (run the VM without volumes or bind mounts, or as root)")
    exe = find()
    served = share.source
    if share.expose:
        if "/" in share.expose or share.expose in (".", ".."):
            raise VMError(f"cannot share {share.source} as {share.expose!r}: not a name")
        served = share.socket + ".d"  # beside the socket, in the VM's run directory
        os.makedirs(served, mode=0o700, exist_ok=True)
    with open(log, "ab") as out:
        p = proc.spawn(
            [exe, f"--socket-path={share.socket}", "-o", f"source={served}",
             "-o", "cache=auto", "-o", "xattr", "-o", "sandbox=namespace"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            env={"PATH": "/usr/bin:/bin"},
            preexec_fn=lambda: _child_setup(share.source, share.readonly, cgroup_files, served,
                                            share.expose))
    deadline = time.monotonic() + timeout
    while not os.path.exists(share.socket):
        if p.poll() is not None:
            raise VMError(f"virtiofsd for {share.source} exited {p.returncode}: "
                          f"{_tail(log)}")
        if time.monotonic() > deadline:
            stop(p)
            raise VMError(f"virtiofsd for {share.source} made no socket in {timeout:.0f}s")
        time.sleep(0.002)
    return p


def stop(p: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """virtiofsd ends by itself once QEMU is gone; make sure of it."""
    if p.poll() is None:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-500:].decode(errors="replace").strip()
    except OSError:
        return "(no log)"
