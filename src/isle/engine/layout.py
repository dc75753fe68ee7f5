"""Where one container's files live, and cheap liveness facts about its processes.

    <root>/containers/<id>/       bundle: config.json, rootfs/ (mount), upper/, work/, ctr.log,
                                  hostname, hosts, resolv.conf, attach socket (conmon)
    <runroot>/containers/<id>/    pidfile, conmon.pid, exit, oom  (conmon's persist dir);
                                  starter: "PID START" of the process starting it (isle's)
    <runroot>/exits/<id>          conmon's exit file;  <runroot>/socket/<short id> -> bundle
    <runroot>/locks/<id>.lock     per-container flock (start/stop/cleanup/rm serialise on it)
"""

from __future__ import annotations

import os

from isle.config import Settings
from isle.record import record

__all__ = ["ContainerPaths", "proc_start_time", "alive", "read_int", "write_file", "rmtree"]


@record(frozen=True)
class ContainerPaths:
    """The files and directories of one container (see the module docstring)."""
    bundle: str
    run: str
    exit_dir: str
    socket_dir: str
    lock: str

    @classmethod
    def of(cls, s: Settings, cid: str) -> ContainerPaths:
        return cls(
            bundle=os.path.join(s.containers_dir, cid),
            run=os.path.join(s.runroot, "containers", cid),
            exit_dir=os.path.join(s.runroot, "exits"),
            socket_dir=os.path.join(s.runroot, "socket"),
            lock=os.path.join(s.runroot, "locks", cid + ".lock"),
        )

    @property
    def config(self) -> str:
        return os.path.join(self.bundle, "config.json")

    @property
    def rootfs(self) -> str:
        return os.path.join(self.bundle, "rootfs")

    @property
    def upper(self) -> str:
        return os.path.join(self.bundle, "upper")

    @property
    def log(self) -> str:
        return os.path.join(self.bundle, "ctr.log")

    @property
    def exit_file(self) -> str:
        return os.path.join(self.run, "exit")

    @property
    def oom_file(self) -> str:
        return os.path.join(self.run, "oom")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.run, "pidfile")

    @property
    def monitor_pidfile(self) -> str:
        return os.path.join(self.run, "conmon.pid")

    @property
    def starter(self) -> str:
        return os.path.join(self.run, "starter")


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (0 if gone or a zombie): pid + start time name one process."""
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    if rest[0] in (b"Z", b"X"):
        return 0
    return int(rest[19])


def alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and proc_start_time(pid) == start


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            s = f.read().strip()
    except OSError:
        return None
    try:
        return int(s)
    except ValueError:
        return None


def write_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace path atomically (rename) without fsync: bundle files die with the container anyway.

    Private (0600) unless told: config.json and exec specs carry ``-e`` secrets. Files the
    container itself reads through a bind mount (hosts, resolv.conf, hostname) pass 0o644."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def rmtree(path: str) -> None:
    """shutil.rmtree(path, ignore_errors=True) without importing shutil (~2 ms of every container
    start, with its compression modules): symlinks are removed, never followed."""
    if os.path.islink(path):
        return
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                rmtree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass
