"""cgroups: pick the host's setup (v1, v2, hybrid) and build a manager for a container's cgroup.

    m = manager_for(spec["linux"].get("cgroupsPath"), container_id)
    m.create(); m.set(spec["linux"].get("resources") or {}); m.apply(pid)
    state["cgroup"] = m.to_state()      # later: manager_from_state(state["cgroup"]).destroy()
"""

from __future__ import annotations

import os

from isle.errors import ConfigError, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at start-up; only type checkers need it
    from typing import Any

    from isle.cgroups.base import CgroupManager, Write
    from isle.cgroups.resources import DEFAULT_ALLOWED_DEVICES
    from isle.cgroups.v1 import V1Manager
    from isle.cgroups.v2 import V2Manager

#: names imported on first use (PEP 562): the runtime reads isle.cgroups.paths before it forks
#: the init and builds the manager after, while the init sets up (~1.4 ms of imports)
_LAZY = {"CgroupManager": "base", "Write": "base", "DEFAULT_ALLOWED_DEVICES": "resources",
         "V1Manager": "v1", "V2Manager": "v2"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'isle.cgroups' has no attribute {name!r}")
    import sys

    __import__(f"isle.cgroups.{mod}")
    value = getattr(sys.modules[f"isle.cgroups.{mod}"], name)
    globals()[name] = value
    return value

__all__ = ["CgroupManager", "Write", "V1Manager", "V2Manager", "detect_setup", "manager_for",
           "manager_from_state", "remove_everywhere", "DEFAULT_ALLOWED_DEVICES"]

ROOT = "/sys/fs/cgroup"


def detect_setup(root: str = ROOT) -> str:
    """"v2" if root is a cgroup2 mount, "hybrid" if v1 with cgroup2 at root/unified, else "v1".

    A cgroup2 root (real or a test's fake tree) is the one with cgroup.controllers."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        return "hybrid"
    return "v1"


def manager_for(cgroups_path: str | None, container_id: str, *, setup: str | None = None,
                root: str = ROOT, self_cgroup: str | None = None,
                mounts_cache: str | None = None) -> CgroupManager:
    """A manager for the container's cgroup, by OCI ``linux.cgroupsPath`` rules:

    - "/a/b": under each hierarchy's root; "a/b": under the runtime's own cgroup
      (``self_cgroup``: /proc/self/cgroup text, for tests); None: "/isle/<id>";
    - "slice:prefix:name" (systemd driver form, e.g. podman's "machine.slice:libpod:<id>"):
      the cgroupfs path systemd would use, "/machine.slice/libpod-<id>.scope".
    Nothing is created until create(). mounts_cache: a file that keeps the host's cgroup
    mounts between calls (see paths.cgroup_mounts).
    """
    from isle.cgroups.paths import controllers, own_cgroups, resolve, v1_mounts
    from isle.cgroups.v1 import V1Manager
    from isle.cgroups.v2 import V2Manager

    setup = setup or detect_setup(root)
    if setup not in ("v1", "v2", "hybrid"):
        raise ConfigError("cgroups.setup", f"{setup!r} is not v1, v2 or hybrid")
    own = own_cgroups(self_cgroup) if self_cgroup is not None else None
    path, bases = resolve(cgroups_path, container_id, own)
    if setup == "v2":
        return V2Manager(_join(bases.get("unified", "/"), path) if bases is not None else path,
                         root)
    mounts = v1_mounts(root, mounts_cache)
    if not mounts:
        raise Unsupported(f"no cgroup v1 hierarchies are mounted under {root}")
    paths: dict[str, str] = {}
    if bases is not None:
        for ctrl, mnt in mounts.items():
            paths[mnt] = _join(bases.get(ctrl, "/"), path)
    unified = None
    if setup == "hybrid":
        uroot = os.path.join(root, "unified")
        ctrls = controllers(uroot)
        if ctrls:  # join the unified hierarchy only when it carries controllers
            upath = _join(bases.get("unified", "/"), path) if bases is not None else path
            unified = V2Manager(upath, uroot, wanted=ctrls, lazy=True)
    return V1Manager(path, mounts, paths=paths, unified=unified, setup=setup)


def manager_from_state(d: dict[str, Any]) -> CgroupManager:
    """Rebuild the manager persisted by ``to_state()`` (no probing of the host)."""
    if d.get("setup") == "v2":
        from isle.cgroups.v2 import V2Manager

        return V2Manager.from_state(d)
    if d.get("setup") in ("v1", "hybrid"):
        from isle.cgroups.v1 import V1Manager

        return V1Manager.from_state(d)
    raise ConfigError("cgroup.setup", f"unknown cgroup state {d.get('setup')!r}")


def _join(base: str, rel: str) -> str:
    return "/" + "/".join(p for p in (base + "/" + rel).split("/") if p)



def remove_everywhere(path: str, *, root: str = ROOT, kill: bool = True,
                      tries: int = 50) -> bool:
    """Fallback removal when no manager state is left: in every hierarchy under root (root
    itself on cgroup v2, each v1 mount and a hybrid host's unified one otherwise) SIGKILL what is
    still in cgroup path (relative to the hierarchy, "x" or "/isle/x") when kill, and rmdir it,
    retrying while its tasks die. Returns whether any of them is still there.

    On v2 the entries of root are child cgroups, not hierarchies: root/<child>/<path> is another
    cgroup's, never looked at."""
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise ConfigError("cgroup", f"{path!r} cannot name a container's cgroup")
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        hierarchies = ["."]  # cgroup v2: one hierarchy, root itself
    else:
        try:
            hierarchies = os.listdir(root)  # v1 mounts (and hybrid's unified)
        except OSError:
            return False
    left = False
    for h in hierarchies:
        d = os.path.normpath(os.path.join(root, h, rel))
        if not os.path.isdir(d):
            continue
        for _ in range(max(1, tries)):
            if kill:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids = [int(x) for x in f.read().split()]
                except (OSError, ValueError):
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, 9)  # SIGKILL (signal builds enums: ~4 ms of `isle run`)
                    except OSError:
                        pass
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                import time  # only when a task is still dying

                time.sleep(0.02)
        else:
            left = True
    return left
