"""Rootless id maps: the caller's uid as container root, its /etc/subuid range for 1..N."""

from __future__ import annotations

import os
import pwd

from isle.errors import ConfigError

__all__ = ["id_maps", "sub_range"]


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


def id_maps() -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    uid, gid = os.getuid(), os.getgid()
    name = pwd.getpwuid(uid).pw_name
    maps = []
    for path, own in (("/etc/subuid", uid), ("/etc/subgid", gid)):
        m = [{"containerID": 0, "hostID": own, "size": 1}]
        r = sub_range(path, uid, name)
        if r is None:
            raise ConfigError("rootless", f"no {path} entry for {name}: add one "
                              f"(e.g. usermod --add-subuids 100000-165535 {name})")
        m.append({"containerID": 1, "hostID": r[0], "size": r[1]})
        maps.append(m)
    return maps[0], maps[1]
