"""The runtime's door to isle.cgroups: a manager for a container, with runc's default devices."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms of start-up (it imports re)
    from typing import Any


__all__ = ["manager", "from_state", "resources_with_defaults", "kick_attach"]


def manager(cgroups_path: str | None, cid: str, mounts_cache: str | None = None) -> Any:
    from isle.cgroups import manager_for

    return manager_for(cgroups_path, cid, mounts_cache=mounts_cache)


def cgroup_mounts(mounts_cache: str | None = None) -> list[tuple[str, str, str, str]]:
    from isle.cgroups.paths import cgroup_mounts as cm

    return cm(mounts_cache)


def from_state(st: dict[str, Any]) -> Any:
    from isle.cgroups import manager_from_state

    return manager_from_state(st)


def resources_with_defaults(resources: dict[str, Any] | None,
                            devices: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Like runc's specconv: after the spec's device rules, allow linux.devices and the defaults."""
    res = dict(resources or {})
    if res.get("devices") is None:
        return res
    from isle.cgroups.resources import DEFAULT_ALLOWED_DEVICES

    extra = [{"allow": True, "type": "c" if d["type"] == "u" else d["type"],
              "major": d.get("major"), "minor": d.get("minor"), "access": "rwm"}
             for d in devices or [] if d["type"] in ("c", "b", "u")]
    res["devices"] = list(res["devices"]) + extra + list(DEFAULT_ALLOWED_DEVICES)
    return res


def kick_attach(root: str = "/sys/fs/cgroup") -> None:
    """Start, in a thread, the RCU grace period the kernel waits for on the first cgroup.procs
    write after a quiet spell (~11 ms: cgroup_threadgroup_rwsem's writer side), so that the
    container's real attach a few ms later finds it passed and costs ~0.1 ms.

    The thread writes this process's pid into the cgroup it is already in (the unified
    hierarchy's where there is one): the kernel takes the lock and moves nothing. Best effort:
    an unwritable or absent cgroupfs (rootless, read-only) makes it a no-op. Imports nothing
    heavy, so the runtime calls it first thing.
    """
    if os.geteuid() != 0:
        return
    try:
        with open("/proc/self/cgroup", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return
    target = None
    for ln in lines:
        hid, _, rest = ln.partition(b":")
        ctrls, _, path = rest.partition(b":")
        if hid == b"0" and not ctrls:
            mnt = root if os.path.exists(root + "/cgroup.procs") else root + "/unified"
        elif ctrls and b"," not in ctrls and not ctrls.startswith(b"name="):
            mnt = root + "/" + ctrls.decode()
        else:
            continue
        target = mnt + path.decode().rstrip("/") + "/cgroup.procs"
        break
    if target is None:
        return
    pid = str(os.getpid()).encode()

    def kick() -> None:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.write(fd, pid)
        except OSError:
            pass
        finally:
            os.close(fd)

    import _thread

    _thread.start_new_thread(kick, ())
