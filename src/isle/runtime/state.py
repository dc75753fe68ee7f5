"""Container state on disk (root/<id>/state.json, atomic, under a lock) and its derived status.

Status is derived as runc does: no live init -> stopped; exec.fifo still there -> created;
cgroup frozen -> paused; else running.
"""

from __future__ import annotations

import os
import time

from isle.errors import ConfigError, NotFound
from isle.oci import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["Container", "valid_id", "private_root", "proc_starttime", "alive", "now_rfc3339"]

CREATED, RUNNING, STOPPED, PAUSED, CREATING = "created", "running", "stopped", "paused", "creating"


_TRACE = os.environ.get("ISLE_RUNTIME_TRACE")


def trace(label: str) -> None:
    """With ISLE_RUNTIME_TRACE set: a monotonic timestamp per step on stderr (for profiling)."""
    if _TRACE:
        os.write(2, f"T {os.getpid()} {time.monotonic_ns() / 1e6:.3f} {label}\n".encode())


def valid_id(cid: str) -> str:
    ok = cid and len(cid) <= 1024 and all(c.isalnum() or c in "._-+" for c in cid)
    if not ok or cid in (".", ".."):
        raise ConfigError("container id", f"invalid id {cid!r} (letters, digits, . _ - + only)")
    return cid


def private_root(root: str) -> None:
    """The runtime's --root: 0700 like runc's /run/runc, an older wider one tightened. The
    rule of isle.sys.fs.private_dir, without its import (fcntl: ~0.5 ms of every create)."""
    try:
        os.mkdir(root, 0o700)
        return
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(root, 0o700, exist_ok=True)
        return
    mode = os.stat(root).st_mode  # a symlinked root (/run/isle-runtime -> ...) is followed
    if mode & 0o077:
        os.chmod(root, mode & 0o7700)


def proc_starttime(pid: int) -> int | None:
    """The process's start time in ticks, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def alive(pid: int | None, starttime: int | None) -> bool:
    if not pid:
        return False
    st = proc_starttime(pid)
    return st is not None and (starttime is None or st == starttime)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class _Flock:
    """An exclusive flock on path (created if missing) for a with-block. Not isle.sys.fs.flock:
    its contextlib import (collections) costs `delete` ~2-5 ms of start-up."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> int:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class Container:
    """One container's directory under the runtime root."""

    def __init__(self, root: str, cid: str) -> None:
        self.id = valid_id(cid)
        self.root = root
        self.dir = os.path.join(root, cid)
        self.state_path = os.path.join(self.dir, "state.json")
        self.fifo = os.path.join(self.dir, "exec.fifo")
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def load(self) -> Container:
        try:
            with open(self.state_path, "rb") as f:
                self.data = json.loads(f.read())
        except FileNotFoundError:
            if not self.exists():
                raise NotFound(f"container {self.id!r} does not exist") from None
            self.data = {"id": self.id, "status": CREATING}
        except ValueError:
            self.data = {"id": self.id, "status": CREATING}
        return self

    def save(self) -> None:
        # atomic (rename) but not fsync'd: the runtime root is a tmpfs under /run, gone at reboot
        tmp = f"{self.state_path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(self.data).encode())
        finally:
            os.close(fd)
        os.rename(tmp, self.state_path)

    def lock(self) -> _Flock:
        return _Flock(os.path.join(self.dir, ".lock"))

    @property
    def pid(self) -> int | None:
        return self.data.get("pid")

    def cgroup(self) -> Any:
        st = self.data.get("cgroup")
        if not st:
            return None
        from isle.runtime.cgroup import from_state

        return from_state(st)

    def status(self) -> str:
        d = self.data
        if d.get("status") == CREATING and not d.get("pid"):
            return STOPPED
        if not alive(d.get("pid"), d.get("starttime")):
            return STOPPED
        if os.path.exists(self.fifo):
            return CREATED
        cg = self.cgroup()
        if cg is not None:
            try:
                if cg.frozen():
                    return PAUSED
            except OSError:
                pass
        return RUNNING

    def oci_state(self) -> dict[str, Any]:
        d = self.data
        status = self.status()
        out = {
            "ociVersion": d.get("ociVersion", "1.0.2"),
            "id": self.id,
            "pid": d.get("pid") or 0 if status != STOPPED else 0,
            "status": status,
            "bundle": d.get("bundle", ""),
            "rootfs": d.get("rootfs", ""),
            "created": d.get("created", ""),
            "owner": "",
        }
        ann = dict(d.get("annotations") or {})
        cg = self.cgroup()
        if cg is not None:
            try:
                ann["org.isle.oom_kills"] = str(cg.oom_kills())
            except Exception:  # noqa: BLE001 -- stats are best effort in `state`
                pass
        if ann:
            out["annotations"] = ann
        return out

    def hook_state(self, status: str | None = None) -> dict[str, Any]:
        d = self.data
        st = {"ociVersion": d.get("ociVersion", "1.0.2"), "id": self.id,
              "status": status or self.status(), "pid": d.get("pid") or 0,
              "bundle": d.get("bundle", "")}
        if d.get("annotations"):
            st["annotations"] = d["annotations"]
        return st

    @staticmethod
    def list(root: str) -> list[Container]:
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if os.path.isdir(os.path.join(root, n)):
                try:
                    out.append(Container(root, n).load())
                except (NotFound, ConfigError):
                    continue
        return out
