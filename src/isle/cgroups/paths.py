"""Where a container's cgroup lives: OCI ``linux.cgroupsPath`` rules, the host's cgroup mounts."""

from __future__ import annotations

import os
import posixpath

from isle.errors import ConfigError
from isle.sys import procfs

__all__ = ["DEFAULT_PARENT", "V1_CONTROLLERS", "resolve", "systemd_path", "expand_slice",
           "own_cgroups", "v1_mounts", "controllers", "cgroup_mounts"]

FIELD = "linux.cgroupsPath"
DEFAULT_PARENT = "/isle"
#: v1 hierarchies a container joins when mounted ("systemd" is the named hierarchy name=systemd)
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "blkio", "pids",
                  "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc", "systemd")


def expand_slice(slice_: str) -> str:
    """systemd slice name -> cgroup path: "a-b.slice" -> "/a.slice/a-b.slice", "-.slice" -> "/"."""
    if not slice_.endswith(".slice") or "/" in slice_ or len(slice_) <= len(".slice"):
        raise ConfigError(FIELD, f"invalid systemd slice {slice_!r}")
    name = slice_[: -len(".slice")]
    if name == "-":
        return "/"
    path, prefix = "", ""
    for comp in name.split("-"):
        if not comp:
            raise ConfigError(FIELD, f"invalid systemd slice {slice_!r}")
        path += f"/{prefix}{comp}.slice"
        prefix += comp + "-"
    return path


def systemd_path(value: str) -> str:
    """"slice:prefix:name" (runc --systemd-cgroup form) -> the cgroupfs path systemd would use."""
    slice_, prefix, name = value.split(":")
    if not name:
        raise ConfigError(FIELD, f"{value!r}: the name part of slice:prefix:name is empty")
    parent = expand_slice(slice_ or "system.slice")
    if name.endswith(".slice"):
        unit = name
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if "/" in unit:
        raise ConfigError(FIELD, f"{value!r}: unit name may not contain '/'")
    return posixpath.join(parent, unit)


def _clean(path: str) -> str:
    if "\0" in path or any(p == ".." for p in path.split("/")):
        raise ConfigError(FIELD, f"{path!r} may not contain '..' or NUL")
    norm = posixpath.normpath("/" + path.lstrip("/"))
    if norm == "/":
        raise ConfigError(FIELD, f"{path!r} names the root cgroup; a container needs its own")
    return norm


def resolve(cgroups_path: str | None, container_id: str,
            own: dict[str, str] | None = None) -> tuple[str, dict[str, str] | None]:
    """Return (path, per-hierarchy bases). bases is None for absolute paths (hierarchy roots),
    else {hierarchy: the runtime's own cgroup} for a relative path, which joins each base."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ConfigError("id", f"container id {container_id!r} cannot name a cgroup")
        return f"{DEFAULT_PARENT}/{container_id}", None
    if not cgroups_path.startswith("/") and cgroups_path.count(":") == 2:
        return _clean(systemd_path(cgroups_path)), None
    if cgroups_path.startswith("/"):
        return _clean(cgroups_path), None
    rel = _clean(cgroups_path)
    return rel, own if own is not None else own_cgroups()


def own_cgroups(text: str | None = None) -> dict[str, str]:
    """/proc/self/cgroup (or text) as {controller: path}; the v2 entry is keyed "unified"."""
    if text is None:
        return procfs.cgroups()
    return procfs.parse_cgroups(text)


def controllers(directory: str) -> list[str]:
    try:
        with open(os.path.join(directory, "cgroup.controllers")) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _read_cgroup_mountinfo() -> list[tuple[str, str, str, str]]:
    return [(m.mountpoint, m.root, m.fstype, m.super_options) for m in procfs.mountinfo()
            if m.fstype in ("cgroup", "cgroup2")]


def _cache_key(mounts: list[tuple[str, str, str, str]], root: str) -> str | None:
    """Each mountpoint's device and the listing of root: a remount or a new hierarchy changes it."""
    try:
        devs = ",".join(str(os.stat(m[0]).st_dev) for m in mounts)
        return f"{devs};{os.stat(root).st_dev};{','.join(sorted(os.listdir(root)))}"
    except OSError:
        return None


def cgroup_mounts(cache: str | None = None, root: str = "/sys/fs/cgroup"
                  ) -> list[tuple[str, str, str, str]]:
    """[(mountpoint, mount root, fstype, super options)] of this mount namespace's cgroup and
    cgroup2 mounts, from /proc/self/mountinfo. With cache (a file), reused while every cached
    mountpoint keeps its device and root's listing is unchanged: reading mountinfo takes 1-9 ms
    on a host with many, changing mounts (it waits on the mount namespace's lock)."""
    if cache:
        try:
            with open(cache) as f:
                key, *rows = f.read().split("\n")
            cached = [r.split("\t") for r in rows if r]
            if cached and all(len(m) == 4 for m in cached):
                known = [(m[0], m[1], m[2], m[3]) for m in cached]
                if key == _cache_key(known, root):
                    return known
        except (OSError, ValueError):
            pass
    mounts = _read_cgroup_mountinfo()
    if cache and not any("\t" in x or "\n" in x for m in mounts for x in m):
        new_key = _cache_key(mounts, root)
        if new_key is not None:
            tmp = f"{cache}.{os.getpid()}"
            try:
                with open(tmp, "w") as f:
                    f.write(new_key + "\n" + "".join("\t".join(m) + "\n" for m in mounts))
                os.rename(tmp, cache)
            except OSError:
                pass
    return mounts


def v1_mounts(root: str, cache: str | None = None) -> dict[str, str]:
    """{controller: mountpoint} for the v1 hierarchies under root.

    Read from /proc/self/mountinfo (see cgroup_mounts for cache); a root that holds no cgroup
    mounts (a fake tree in a test) is read from its directory names instead ("cpu,cpuacct",
    "systemd", ...).
    """
    root = root.rstrip("/") or "/"
    out: dict[str, str] = {}
    for mnt, _, fstype, opts in cgroup_mounts(cache if root == "/sys/fs/cgroup" else None):
        if fstype != "cgroup" or posixpath.dirname(mnt) != root:
            continue
        for opt in opts.split(","):
            name = opt.removeprefix("name=")
            if name in V1_CONTROLLERS:
                out.setdefault(name, mnt)
    if out:
        return out
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return out
    for entry in entries:
        mnt = os.path.join(root, entry)
        if entry == "unified" or not os.path.exists(os.path.join(mnt, "cgroup.procs")):
            continue
        real = os.path.realpath(mnt)
        for name in os.path.basename(real).split(","):
            if name in V1_CONTROLLERS:
                out.setdefault(name, real)
    return out
