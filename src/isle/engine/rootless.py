"""Rootless: id maps (the caller's uid as container root, its /etc/subuid range for 1..N) and
the createRuntime hook that starts slirp4netns (``python -m isle.engine.rootless``)."""

from __future__ import annotations

import os
import pwd

from isle.errors import ConfigError

__all__ = ["id_maps", "sub_range", "slirp_hook", "cgroup_delegated", "python_argv"]


def sub_range(path: str, uid: int, name: str) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)):
                    return int(parts[1]), int(parts[2])
    except (OSError, ValueError):
        return None
    return None


def cgroup_delegated() -> bool:
    """Whether this user's containers get a cgroup (and so limits): a writable cgroup v2
    subtree (systemd's user@UID.service delegation); never on v1 or hybrid hosts."""
    from isle.runtime.cgroup import delegated_base

    return delegated_base() is not None


def id_maps() -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    uid, gid = os.getuid(), os.getgid()
    name = pwd.getpwuid(uid).pw_name
    maps = []
    for path, own in (("/etc/subuid", uid), ("/etc/subgid", gid)):
        m = [{"containerID": 0, "hostID": own, "size": 1}]
        r = sub_range(path, uid, name)
        if r is None:
            raise ConfigError("rootless", f"no {path} entry for {name}: add one (e.g. usermod "
                              f"--add-sub{path[-3:]}s 100000-165535 {name})")
        m.append({"containerID": 1, "hostID": r[0], "size": r[1]})
        maps.append(m)
    return maps[0], maps[1]


def slirp_hook(root: str, runroot: str, cid: str, name: str, ports: list[dict[str, object]],
               host_loopback: bool = False) -> dict[str, object]:
    """An OCI hook running this module: slirp4netns for the init's pid (from the state on
    stdin), recorded in the network store like after_start's. The interpreter is the one
    running now (a venv's python may be a symlink its user cannot follow: /proc/self/exe is
    the real file); the hook sees isle's import path and PATH, nothing else of our environment."""
    import json
    import sys

    exe = os.path.realpath("/proc/self/exe")
    paths = [p for p in sys.path if p.startswith("/") and os.path.isdir(p)]
    return {"path": exe,
            "args": [exe, "-S", "-m", "isle.engine.rootless", root, runroot, cid, name,
                     json.dumps(ports), "host-loopback" if host_loopback else "no-host-loopback"],
            "env": [f"PYTHONPATH={':'.join(paths)}",
                    f"PATH={os.environ.get('PATH') or '/usr/bin:/bin'}"],
            "timeout": 30}


def python_argv(module: str) -> list[str]:
    """argv that runs ``python -m module`` as this user: sys.executable if we may run it, else
    the interpreter running now with isle's import path (a venv made by root may point at an
    interpreter under /root, which launchers avoid but `-m` helpers would not)."""
    import sys

    if os.access(sys.executable, os.X_OK):
        return [sys.executable, "-m", module]
    exe = os.path.realpath("/proc/self/exe")
    paths = [p for p in sys.path if p.startswith("/") and os.path.isdir(p)]
    return [exe, "-S", "-c", f"import sys; sys.path[:0] = {paths!r}; import runpy; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"]


def _hook_main(argv: list[str]) -> int:
    import json
    import sys

    from isle.config import Settings
    from isle.engine.networks import network_manager
    from isle.errors import IsleError
    from isle.net.rootless import connect_slirp
    from isle.net.types import PortMapping

    root, runroot, cid, name, ports, loopback = argv
    try:
        pid = int(json.load(sys.stdin)["pid"])
        nm = network_manager(Settings(root=root, runroot=runroot))
        connect_slirp(nm, cid, pid, [PortMapping.from_dict(p) for p in json.loads(ports)],
                      name=name, host_loopback=loopback == "host-loopback")
    except (IsleError, OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"isle: slirp4netns for {name}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_hook_main(sys.argv[1:]))
