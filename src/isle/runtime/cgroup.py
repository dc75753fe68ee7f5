"""The runtime's door to isle.cgroups: a manager for a container, with runc's default devices."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any


__all__ = ["manager", "from_state", "resources_with_defaults", "kick_attach"]


#: why an unprivileged runtime runs this container without a cgroup ("" while it has one)
_no_cgroup = ""
_unpriv: bool | None = None


def unprivileged() -> bool:
    """Not root, or root only in a user namespace (a rootless build's, engine/buildns.py): the
    host's cgroups are not ours to make or write either way (runc's RunningInUserNS)."""
    global _unpriv
    if _unpriv is None:
        _unpriv = os.geteuid() != 0
        if not _unpriv:
            try:
                with open("/proc/self/uid_map", "rb") as f:
                    _unpriv = f.read().split() != [b"0", b"0", b"4294967295"]
            except OSError:
                pass
    return _unpriv


def manager(cgroups_path: str | None, cid: str, mounts_cache: str | None = None) -> Any:
    """The container's cgroup manager; None when unprivileged and no cgroup is delegated to us
    (then resources_with_defaults refuses limits, which nothing could enforce)."""
    from isle.cgroups import manager_for

    if unprivileged():
        return _rootless_manager(cgroups_path, cid)
    return manager_for(cgroups_path, cid, mounts_cache=mounts_cache)


def delegated_base(root: str = "/sys/fs/cgroup", self_cgroup: str | None = None) -> str | None:
    """The cgroup2 directory under which this unprivileged process may make cgroups: the parent
    of its own cgroup (a systemd user manager's delegated subtree: that one has no processes,
    so controllers can be enabled for a child; runc's choice) else its own, if writable by us.
    None on cgroup v1 and hybrid hosts (v1 hierarchies are never delegated) or without one."""
    from isle.cgroups import detect_setup
    from isle.cgroups.paths import own_cgroups

    if detect_setup(root) != "v2":
        return None
    try:
        own = own_cgroups(self_cgroup).get("unified")
    except OSError:
        return None
    if not own or not own.startswith("/"):
        return None
    own = own.rstrip("/") or "/"
    for rel in (os.path.dirname(own), own):
        d = root + rel.rstrip("/")
        if rel != "/" and os.access(d, os.W_OK | os.X_OK) and os.access(
                d + "/cgroup.procs", os.W_OK):
            return rel
    return None


def _rootless_manager(cgroups_path: str | None, cid: str, root: str = "/sys/fs/cgroup",
                      self_cgroup: str | None = None) -> Any:
    global _no_cgroup
    from isle.cgroups import detect_setup
    from isle.cgroups.paths import resolve
    from isle.cgroups.v2 import V2Manager

    base = delegated_base(root, self_cgroup)
    if base is None:
        setup = detect_setup(root)
        _no_cgroup = (f"uid {os.geteuid()} has no delegated cgroup on this host "
                      f"(cgroup {'v2' if setup == 'v2' else 'v1'})")
        return None
    path, bases = resolve(cgroups_path or f"isle-{cid}", cid, {"unified": base})
    if bases is None:  # an absolute path: it must lie inside the delegated subtree
        if not path.startswith(base.rstrip("/") + "/"):  # strictly below it
            from isle.errors import ConfigError

            raise ConfigError("linux.cgroupsPath", f"{path!r} is outside the cgroup delegated "
                              f"to uid {os.geteuid()} ({base})")
    else:
        path = "/" + "/".join(p for p in (base + "/" + path).split("/") if p)
    _no_cgroup = ""
    return V2Manager(path, root)


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
    if unprivileged():
        # no device cgroup without privilege (a BPF program on v2): the user namespace leaves
        # the container no device the caller could not open anyway (runc rootless does the same)
        res.pop("devices", None)
        if _no_cgroup:
            asked = sorted(k for k, v in res.items() if v)
            if asked:
                from isle.errors import Unsupported

                raise Unsupported(f"linux.resources.{asked[0]}: cannot be enforced: "
                                  f"{_no_cgroup}")
        return res
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
    if unprivileged():
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
