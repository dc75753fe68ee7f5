"""Per-container state of the VM runtime: <root>/<id>/state.json, written atomically (as runc's)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from isle.errors import AlreadyExists, ConfigError, NotFound
from isle.sys.fs import atomic_write

__all__ = ["State", "load", "save", "create_dir", "remove", "list_ids", "pid_alive",
           "starttime", "signal_if_same"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(slots=True, kw_only=True)
class State:
    id: str
    bundle: str
    status: str = "creating"  # creating | created | running | paused | stopped
    pid: int = 0  # the monitor (parent of QEMU; exits with the guest program's exit code)
    qemu_pid: int = 0
    #: start times (clock ticks since boot, /proc/PID/stat field 22) of pid and qemu_pid: a pid
    #: whose start time differs was recycled and is not ours to signal (None: not recorded)
    pid_start: int | None = None
    qemu_start: int | None = None
    rundir: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    annotations: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    #: why the VM ended abnormally (the runner's "error" note: a QEMU crash, a guest that
    #: went away): `state` reports it, as exitCode, for an engine whose monitor is gone
    error: str = ""
    #: the host cgroup QEMU runs in (isle.cgroups to_state()), removed by delete
    cgroup: dict[str, Any] | None = None
    #: the network namespace the guest is connected to and its veth (runtime.vm.network)
    netns: str = ""
    veth: str = ""

    def oci(self) -> dict[str, Any]:
        """What `state` prints (runtime-spec 'state')."""
        return {
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "bundle": self.bundle,
            "rootfs": os.path.join(self.bundle, "rootfs"),
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
            **({"exitCode": self.exit_code} if self.exit_code is not None else {}),
            **({"error": self.error} if self.error else {}),
        }


def _dir(root: str, cid: str) -> str:
    if not _ID.match(cid):
        raise ConfigError("container-id", f"{cid!r} is not a valid id")
    return os.path.join(root, cid)


def pid_alive(pid: int, start: int | None = None) -> bool:
    """pid runs (not a zombie) and, when start is given, is the process that started then."""
    from isle.runtime.state import alive

    return pid > 0 and alive(pid, start)


def starttime(pid: int) -> int | None:
    from isle.runtime.state import proc_starttime

    return proc_starttime(pid) if pid > 0 else None


def signal_if_same(pid: int, start: int | None, sig: int) -> bool:
    """Send sig to pid only if it is still the process that started at start: through a pidfd
    opened first and checked after, so a pid recycled in between is never signalled."""
    import signal as _signal

    if pid <= 0:
        return False
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not pid_alive(pid, start):
            return False
        _signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def create_dir(root: str, cid: str) -> str:
    d = _dir(root, cid)
    os.makedirs(root, mode=0o700, exist_ok=True)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        raise AlreadyExists(f"container {cid} already exists") from None
    return d


def save(root: str, st: State) -> None:
    atomic_write(os.path.join(_dir(root, st.id), "state.json"), json.dumps(asdict(st)).encode(),
                 durable=False)


def load(root: str, cid: str) -> State:
    path = os.path.join(_dir(root, cid), "state.json")
    try:
        with open(path) as f:
            st = State(**json.load(f))
    except FileNotFoundError:
        raise NotFound(f"container {cid} does not exist") from None
    try:  # the monitor records the guest's exit code when the program ends
        with open(os.path.join(root, cid, "exit")) as f:
            st.exit_code = int(f.read().strip())
            st.status = "stopped"
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, cid, "error")) as f:
            st.error = f.read().strip()[:2000]
    except OSError:
        pass
    if st.status in ("created", "running", "paused") and not pid_alive(st.pid, st.pid_start):
        st.status = "stopped"
    return st


def remove(root: str, cid: str) -> None:
    shutil.rmtree(_dir(root, cid), ignore_errors=True)


def list_ids(root: str) -> list[str]:
    try:
        return sorted(
            d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "state.json"))
        )
    except FileNotFoundError:
        return []
