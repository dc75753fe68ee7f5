"""Pure planning for the init sequence: mount flags, namespace split, devices, caps, signals.

Everything here turns validated config data into plain steps; ``rootfs.py`` and ``init.py``
execute them.  No syscalls, so all of it is unit-tested without root.
"""

from __future__ import annotations

import os

from isle.errors import ConfigError
from isle.oci.runtime_spec import CAPABILITIES
from isle.sys import libc as L
from isle.sys import signals

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["parse_mount_options", "split_namespaces", "mount_plan", "device_plan",
           "cap_mask", "parse_signal", "DEFAULT_DEVICES", "DEV_SYMLINKS",
           "PROPAGATION_FLAGS"]

#: option -> (clear?, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, L.MS_RDONLY), "rw": (True, L.MS_RDONLY),
    "nosuid": (False, L.MS_NOSUID), "suid": (True, L.MS_NOSUID),
    "nodev": (False, L.MS_NODEV), "dev": (True, L.MS_NODEV),
    "noexec": (False, L.MS_NOEXEC), "exec": (True, L.MS_NOEXEC),
    "sync": (False, L.MS_SYNCHRONOUS), "async": (True, L.MS_SYNCHRONOUS),
    "dirsync": (False, L.MS_DIRSYNC), "remount": (False, L.MS_REMOUNT),
    "mand": (False, L.MS_MANDLOCK), "nomand": (True, L.MS_MANDLOCK),
    "atime": (True, L.MS_NOATIME), "noatime": (False, L.MS_NOATIME),
    "diratime": (True, L.MS_NODIRATIME), "nodiratime": (False, L.MS_NODIRATIME),
    "bind": (False, L.MS_BIND), "rbind": (False, L.MS_BIND | L.MS_REC),
    "relatime": (False, L.MS_RELATIME), "norelatime": (True, L.MS_RELATIME),
    "strictatime": (False, L.MS_STRICTATIME), "nostrictatime": (True, L.MS_STRICTATIME),
    "lazytime": (False, L.MS_LAZYTIME), "nolazytime": (True, L.MS_LAZYTIME),
    "silent": (False, L.MS_SILENT), "loud": (True, L.MS_SILENT),
    "nosymfollow": (False, L.MS_NOSYMFOLLOW), "symfollow": (True, L.MS_NOSYMFOLLOW),
    "defaults": (False, 0),
}

PROPAGATION_FLAGS = {
    "private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC,
    "shared": L.MS_SHARED, "rshared": L.MS_SHARED | L.MS_REC,
    "slave": L.MS_SLAVE, "rslave": L.MS_SLAVE | L.MS_REC,
    "unbindable": L.MS_UNBINDABLE, "runbindable": L.MS_UNBINDABLE | L.MS_REC,
}

# runc extensions and idmap options we accept and ignore
_IGNORED = {"tmpcopyup", "notmpcopyup", "copyup", "nocopyup", "rro", "rrw", "z", "Z",
            "idmap", "ridmap", "U", "private-to-container"}


def parse_mount_options(options: list[str]) -> tuple[int, list[int], str]:
    """-> (mount flags, propagation flag list, data string of the rest)."""
    flags = 0
    prop: list[int] = []
    data: list[str] = []
    for o in options:
        if o in _FLAGS:
            clear, f = _FLAGS[o]
            flags = flags & ~f if clear else flags | f
        elif o in PROPAGATION_FLAGS:
            prop.append(PROPAGATION_FLAGS[o])
        elif o in _IGNORED:
            continue
        else:
            data.append(o)
    return flags, prop, ",".join(data)


def split_namespaces(namespaces: list[dict[str, str]]) -> tuple[int, list[tuple[str, str]]]:
    """-> (clone flags of namespaces to create, [(type, path)] to join), user first."""
    new = 0
    join: list[tuple[str, str]] = []
    for ns in namespaces:
        if ns.get("path"):
            join.append((ns["type"], ns["path"]))
        else:
            new |= L.NAMESPACE_FLAGS[ns["type"]]
    join.sort(key=lambda t: t[0] != "user")
    return new, join


class Mount:
    """One planned mount: where, what, flags, and how to finish it."""

    __slots__ = ("source", "dest", "fstype", "flags", "prop", "data", "bind", "remount", "kind",
                 "index")

    def __init__(self, *, source: str, dest: str, fstype: str | None, flags: int,
                 prop: list[int], data: str | None, bind: bool, remount: int, kind: str,
                 index: int) -> None:
        self.source, self.dest, self.fstype, self.flags = source, dest, fstype, flags
        self.prop, self.data, self.bind, self.remount = prop, data, bind, remount
        self.kind, self.index = kind, index

    def __repr__(self) -> str:
        return "Mount(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def mount_plan(mounts: list[dict[str, Any]], rootfs: str, bundle: str) -> list[Mount]:
    """Spec mounts -> Mount steps with absolute targets (not yet symlink-resolved)."""
    out = []
    for i, m in enumerate(mounts):
        flags, prop, data = parse_mount_options(m.get("options") or [])
        fstype = m.get("type") or ""
        bind = bool(flags & L.MS_BIND) or fstype == "bind"
        src = m.get("source") or ""
        if bind:
            if not src:
                raise ConfigError(f"mounts[{i}].source", "a bind mount needs a source")
            if not src.startswith("/"):
                src = os.path.join(bundle, src)
            flags |= L.MS_BIND
        kind = "bind" if bind else ("cgroup" if fstype == "cgroup" else "fs")
        if not bind and not fstype:
            raise ConfigError(f"mounts[{i}].type", "required unless the mount is a bind mount")
        # a bind mount ignores most flags on the first call; they need a remount
        remount = flags & ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT) if bind else 0
        out.append(Mount(source=src, dest=m["destination"], fstype=fstype if not bind else None,
                         flags=flags, prop=prop, data=data or None, bind=bind, remount=remount,
                         kind=kind, index=i))
    return out


#: (path, type, major, minor, mode)
DEFAULT_DEVICES = [
    ("/dev/null", "c", 1, 3, 0o666), ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666), ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666), ("/dev/tty", "c", 5, 0, 0o666),
]

DEV_SYMLINKS = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
                ("pts/ptmx", "/dev/ptmx")]


def device_plan(devices: list[dict[str, Any]], in_userns: bool) -> list[tuple[Any, ...]]:
    """-> [("mknod", path, mode, major, minor, uid, gid) | ("bind", path) ...]; spec devices win."""
    by_path: dict[str, tuple[Any, ...]] = {}
    for path, t, ma, mi, mode in DEFAULT_DEVICES:
        by_path[path] = (path, t, ma, mi, mode, 0, 0)
    for d in devices:
        by_path[d["path"]] = (d["path"], d["type"], d.get("major", 0), d.get("minor", 0),
                              d.get("fileMode", 0o666) & 0o7777, d.get("uid", 0), d.get("gid", 0))
    import stat

    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    out: list[tuple[Any, ...]] = []
    for path, t, ma, mi, mode, uid, gid in by_path.values():
        if in_userns and t != "p":
            out.append(("bind", path))
        else:
            out.append(("mknod", path, kinds[t] | mode, ma, mi, uid, gid))
    return out


def cap_mask(names: list[str] | None) -> int:
    mask = 0
    for n in names or []:
        n = n.upper()
        bit = CAPABILITIES.get(n if n.startswith("CAP_") else "CAP_" + n)
        if bit is not None:  # unknown names were warned about at create
            mask |= 1 << bit
    return mask


def parse_signal(s: str) -> int:
    """'9', 'KILL', 'SIGKILL', 'sigterm', 'RTMIN+3' -> number (isle.sys.signals)."""
    return signals.parse(s)
