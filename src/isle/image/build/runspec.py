"""The OCI runtime config.json a build RUN step executes with (pure data), and the runner."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

from isle.errors import CommandError, ConfigError
from isle.sys import proc

__all__ = ["run_spec", "run_in_bundle", "resolve_user", "resolve_runtime", "DEFAULT_CAPS"]

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


def run_spec(
    args: list[str], env: list[str], cwd: str, uid: int, gid: int, hostname: str = "isle-build"
) -> dict[str, Any]:
    caps = {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")}
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    if os.path.exists("/etc/resolv.conf"):
        mounts.append(
            {
                "destination": "/etc/resolv.conf",
                "type": "bind",
                "source": os.path.realpath("/etc/resolv.conf"),
                "options": ["rbind", "ro"],
            }
        )
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": caps,
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def _read_db(rootfs: str, name: str) -> list[list[str]]:
    p = os.path.join(rootfs, "etc", name)
    if os.path.islink(p) or not os.path.isfile(p):
        return []
    with open(p, errors="replace") as f:
        return [ln.split(":") for ln in f.read().splitlines() if ln and not ln.startswith("#")]


def resolve_user(rootfs: str, user: str) -> tuple[int, int]:
    """USER value (name/uid[:group/gid]) -> (uid, gid) using the image's /etc/passwd and group."""
    if not user:
        return 0, 0
    u, _, g = user.partition(":")
    uid = gid = None
    if u.isdigit():
        uid = int(u)
    for ent in _read_db(rootfs, "passwd"):
        if len(ent) >= 4 and (ent[0] == u or (uid is not None and ent[2] == str(uid))):
            uid, gid = int(ent[2]), int(ent[3])
            break
    if uid is None:
        raise ConfigError("USER", f"no user {u!r} in the image's /etc/passwd")
    if g:
        if g.isdigit():
            gid = int(g)
        else:
            for ent in _read_db(rootfs, "group"):
                if ent[0] == g and len(ent) >= 3:
                    gid = int(ent[2])
                    break
            else:
                raise ConfigError("USER", f"no group {g!r} in the image's /etc/group")
    return uid, gid if gid is not None else 0


def resolve_runtime(name: str) -> str:
    """A runtime name on PATH, or beside this Python (the venv's isle-runtime), or a path."""
    if "/" in name:
        return name
    found = proc.which(name)
    if found:
        return found
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


def run_in_bundle(
    runtime: str,
    state_root: str,
    bundle: str,
    cid: str,
    spec: dict[str, Any],
    out: Callable[[str], None],
    timeout: float = 3600,
) -> None:
    """``RUNTIME --root STATE run --bundle BUNDLE CID``; its output goes line by line to out."""
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    os.makedirs(state_root, exist_ok=True)
    runtime = resolve_runtime(runtime)
    argv = [runtime, "--root", state_root, "run", "--bundle", bundle, cid]
    p = proc.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail: list[str] = []
    try:
        assert p.stdout is not None
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail = (tail + [line])[-5:]
            out(line)
        rc = p.wait(timeout)
    except BaseException:
        p.kill()
        p.wait()
        proc.run([runtime, "--root", state_root, "delete", "--force", cid], check=False, timeout=30)
        raise
    if rc != 0:
        proc.run([runtime, "--root", state_root, "delete", "--force", cid], check=False, timeout=30)
        raise CommandError(argv, rc, "\n".join(tail))
