"""Execute the rootfs part of the init plan: mounts, devices, pivot_root, masked/readonly paths."""

from __future__ import annotations

import os

from isle.errors import ConfigError
from isle.runtime.plan import (
    DEV_SYMLINKS,
    PROPAGATION_FLAGS,
    Mount,
    device_plan,
    mount_plan,
    secure_join,
)
from isle.sys import libc as L

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms of start-up (it imports re)
    from collections.abc import Callable
    from typing import Any

__all__ = ["prepare_root", "do_mounts", "setup_dev", "pivot", "finalize", "mount_console"]

# statvfs f_flag bits -> mount flags that a bind remount inside a user ns must keep
_ST_LOCKED = ((1, L.MS_RDONLY), (2, L.MS_NOSUID), (4, L.MS_NODEV), (8, L.MS_NOEXEC),
              (1024, L.MS_NOATIME), (2048, L.MS_NODIRATIME), (4096, L.MS_RELATIME))


def _locked_flags(path: str) -> int:
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    return sum(mf for sf, mf in _ST_LOCKED if f & sf and mf != L.MS_RDONLY)


def _remount(sys: L.Syscalls, dest: str, flags: int) -> None:
    fl = L.MS_BIND | L.MS_REMOUNT | flags
    try:
        sys.mount(None, dest, None, fl, None)
    except PermissionError:
        sys.mount(None, dest, None, fl | _locked_flags(dest), None)


def _mountpoint_of(path: str) -> str:
    best = "/"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                    best = mp
    except OSError:
        pass
    return best


def prepare_root(sys: L.Syscalls, rootfs: str, propagation: str | None) -> None:
    """Make / non-shared (or as asked), then bind the rootfs onto itself so it can be pivoted."""
    flag = PROPAGATION_FLAGS.get(propagation or "", L.MS_SLAVE | L.MS_REC)
    if flag & L.MS_UNBINDABLE:  # the rootfs could not be bound from it: pivot() applies it later
        flag = L.MS_SLAVE | L.MS_REC
    sys.mount(None, "/", None, flag, None)
    if flag & L.MS_SHARED:
        # pivot_root refuses a shared parent mount
        sys.mount(None, _mountpoint_of(os.path.dirname(rootfs)), None, L.MS_PRIVATE, None)
    sys.mount(rootfs, rootfs, None, L.MS_BIND | L.MS_REC, None)


def _mk_target(dest: str, source_is_dir: bool) -> None:
    if source_is_dir:
        os.makedirs(dest, 0o755, exist_ok=True)
    elif not os.path.lexists(dest):
        os.makedirs(os.path.dirname(dest), 0o755, exist_ok=True)
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def do_mounts(sys: L.Syscalls, spec_mounts: list[dict[str, Any]], rootfs: str,
              bundle: str, before_cgroup: Callable[[], Any] | None = None,
              cgroup_mounts: list[tuple[str, str, str, str]] | None = None) -> None:
    """The spec's mounts under rootfs; cgroup_mounts: the host's cgroup mounts as the runtime
    read them (paths.cgroup_mounts), else /proc/self/mountinfo is read here."""
    for m in mount_plan(spec_mounts, rootfs, bundle):
        dest = secure_join(rootfs, m.dest)
        field = f"mounts[{m.index}]"
        try:
            if m.kind == "bind":
                if not os.path.exists(m.source):
                    raise ConfigError(f"{field}.source", f"{m.source}: no such file or directory")
                _mk_target(dest, os.path.isdir(m.source))
                sys.mount(m.source, dest, None, m.flags & (L.MS_BIND | L.MS_REC), None)
                if m.remount:
                    _remount(sys, dest, m.remount)
            elif m.kind == "cgroup":
                info = before_cgroup() if before_cgroup is not None else None
                _mount_cgroup(sys, m, dest, cgroup_mounts,
                              skip_v2=bool(info and info.get("join")))
            else:
                _mk_target(dest, True)
                sys.mount(m.source or m.fstype, dest, m.fstype, m.flags, m.data)
            for p in m.prop:
                sys.mount(None, dest, None, p, None)
        except ConfigError:
            raise
        except OSError as exc:
            raise ConfigError(field, f"mounting {m.source or m.fstype} on {m.dest}: "
                              f"{os.strerror(exc.errno or 0)}") from None


def _cgroup_mounts(known: list[tuple[str, str, str, str]] | None = None
                   ) -> list[tuple[str, str, str]]:
    """[(host mountpoint, mount root, fstype)] of cgroup hierarchies."""
    if known is not None:
        return [(mp, root, fstype) for mp, root, fstype, _ in known]
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype = post.split()[0] if post else ""
            if fstype in ("cgroup", "cgroup2"):
                p = pre.split()
                out.append((p[4], p[3], fstype))
    return out


def _mount_cgroup(sys: L.Syscalls, m: Mount, dest: str,
                  known: list[tuple[str, str, str, str]] | None = None,
                  skip_v2: bool = False) -> None:
    """Give the container its own cgroups at dest, bound from the host (v1, v2 or hybrid).
    skip_v2: on a hybrid host, the container has no cgroup of its own in the unified
    hierarchy (none of its limits go there): bind none rather than the runtime's."""
    mine: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            mine[ctrls] = path
    mounts = _cgroup_mounts(known)
    ro = m.flags & L.MS_RDONLY
    base = m.flags & (L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    unified = [mp for mp, _, t in mounts if t == "cgroup2"]
    if set(mine) == {""} and unified:  # pure v2
        src = unified[0] + mine[""]
        _mk_target(dest, True)
        sys.mount(src, dest, None, L.MS_BIND | L.MS_REC, None)
        _remount(sys, dest, base | ro)
        return
    _mk_target(dest, True)
    sys.mount("tmpfs", dest, "tmpfs", base, "mode=755")
    for mp, root, fstype in mounts:
        if not mp.startswith("/sys/fs/cgroup/"):
            continue
        name = mp[len("/sys/fs/cgroup/"):]
        if skip_v2 and fstype == "cgroup2":
            continue
        key = "" if fstype == "cgroup2" else None
        if key is None:
            for ctrls in mine:
                opts = ctrls.replace("name=", "")
                if opts and (opts == name or set(opts.split(",")) == set(name.split(","))):
                    key = ctrls
                    break
        if key is None or key not in mine:
            continue
        rel = mine[key]
        if root != "/" and rel.startswith(root):
            rel = rel[len(root):]
        src = mp + rel
        if not os.path.isdir(src):
            continue
        target = os.path.join(dest, name)
        os.makedirs(target, 0o755, exist_ok=True)
        sys.mount(src, target, None, L.MS_BIND | L.MS_REC, None)
        _remount(sys, target, base | ro)
    if ro:
        sys.mount(None, dest, None, L.MS_REMOUNT | L.MS_RDONLY | base, "mode=755")


def setup_dev(sys: L.Syscalls, rootfs: str, devices: list[dict[str, Any]], in_userns: bool) -> None:
    """Default devices + linux.devices (mknod, or bind from the host in a user ns) + symlinks."""
    for step in device_plan(devices, in_userns):
        path = secure_join(rootfs, step[1])
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        if step[0] == "bind":
            if not os.path.exists(step[1]):
                continue
            _mk_target(path, False)
            sys.mount(step[1], path, None, L.MS_BIND, None)
            continue
        _, _, mode, ma, mi, uid, gid = step
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.mknod(path, mode, os.makedev(ma, mi))
        os.chmod(path, mode & 0o7777)
        os.chown(path, uid, gid)
    for target, link in DEV_SYMLINKS:
        p = os.path.join(rootfs, link.lstrip("/"))
        if link == "/dev/ptmx" and os.path.exists(p) and not os.path.islink(p):
            os.unlink(p)
        try:
            os.symlink(target, p)
        except FileExistsError:
            pass
    if os.path.exists("/proc/kcore"):
        try:
            os.symlink("/proc/kcore", os.path.join(rootfs, "dev/core"))
        except FileExistsError:
            pass


def pivot(sys: L.Syscalls, rootfs: str, no_pivot: bool, propagation: str | None = None) -> None:
    os.chdir(rootfs)
    if no_pivot:
        sys.mount(rootfs, "/", None, L.MS_MOVE, None)
        os.chroot(".")
    else:
        sys.pivot_root(".", ".")
        # the old root is stacked under "."; detach it without telling the host
        sys.mount(None, ".", None, L.MS_SLAVE | L.MS_REC, None)
        sys.umount2(".", L.MNT_DETACH)
    os.chdir("/")
    if propagation:  # the new root was bound from a private parent: give it what was asked
        sys.mount(None, "/", None, PROPAGATION_FLAGS[propagation], None)


def mount_console(sys: L.Syscalls, slave_path: str) -> None:
    if not os.path.lexists("/dev/console"):
        os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    sys.mount(slave_path, "/dev/console", None, L.MS_BIND, None)


def finalize(sys: L.Syscalls, linux: dict[str, Any], readonly_root: bool) -> None:
    """After pivot_root: sysctls, readonly and masked paths, read-only root."""
    for k, v in (linux.get("sysctl") or {}).items():
        try:
            with open("/proc/sys/" + k.replace(".", "/"), "w") as f:
                f.write(v)
        except OSError as exc:
            raise ConfigError(f"linux.sysctl.{k}", f"cannot set to {v!r}: "
                              f"{os.strerror(exc.errno or 0)}") from None
    for i, p in enumerate(linux.get("readonlyPaths") or []):
        try:
            sys.mount(p, p, None, L.MS_BIND | L.MS_REC, None)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"linux.readonlyPaths[{i}]", os.strerror(exc.errno or 0)) from None
        _remount(sys, p, L.MS_RDONLY | L.MS_REC | _locked_flags(p))
    for i, p in enumerate(linux.get("maskedPaths") or []):
        try:
            if os.path.isdir(p):
                sys.mount("tmpfs", p, "tmpfs", L.MS_RDONLY, None)
            elif os.path.exists(p):
                sys.mount("/dev/null", p, None, L.MS_BIND, None)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"linux.maskedPaths[{i}]", os.strerror(exc.errno or 0)) from None
    if readonly_root:
        _remount(sys, "/", L.MS_RDONLY | _locked_flags("/"))

