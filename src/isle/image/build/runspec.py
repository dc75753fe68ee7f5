"""How a build RUN step runs: the sandbox interface, the runner, and image-side lookups.

The step's config.json is not made here: the engine hands the builder a ``StepSandbox`` whose
``prepare`` builds it with the very code ``isle run`` uses (``engine/buildrun.py`` over
``engine/spec.build_spec``: Docker's capabilities, seccomp profile, masked /proc, device cgroup,
own network namespace), so a RUN step and a container cannot drift apart. ``run_spec`` below is
only a bare spec for tests that drive a runtime by hand; the builder never uses it.

Every path of the image read here is resolved inside its rootfs (``sys/inroot``): a symlinked
/etc/passwd or a ``..`` can never make the host's files the image's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from isle.errors import CommandError, ConfigError
from isle.sys import proc, procfs
from isle.sys.inroot import Root

if TYPE_CHECKING:
    import subprocess

__all__ = ["StepSandbox", "run_spec", "run_in_bundle", "resolve_user", "resolve_runtime",
           "mount_points_absent", "drop_mount_points", "DEFAULT_CAPS"]


class StepSandbox(Protocol):
    """What the builder needs from the engine for each RUN step."""

    def prepare(self, cid: str, rootfs: str, bundle: str, argv: list[str], env: list[str],
                cwd: str, user: str, *, network: str | None = None) -> dict[str, Any]:
        """The step's config.json; sets up what it needs on the host (network). bundle holds
        the overlay at bundle/rootfs; network is the step's ``RUN --network`` (None: the
        build's)."""

    def release(self, cid: str, *, done: bool = True) -> None:
        """Undo prepare (idempotent): after the step (done=False: its network), and once its
        bundle is unmounted and removed (done=True: nothing of it is left to sweep)."""

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
    """A bare spec for tests that drive a runtime by hand (no seccomp, no device rules, the
    caller's network): never a build step's, which comes from the engine's StepSandbox."""
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
    """/etc/NAME of the image, resolved inside its rootfs; absent or not a regular file: []."""
    import stat

    try:
        with Root(rootfs) as r:
            fd = r.open("/etc/" + name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        text = f.read(1 << 22).decode(errors="replace")
    return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]


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
    """``RUNTIME --root STATE run --pid-file F --bundle BUNDLE CID``; output line by line to out.

    However it ends (the step fails, is killed, times out, or the build is interrupted), the
    step's container is gone afterwards: its init (from the pid file, checked to be the
    runtime's child) is killed, which ends its pid namespace, and the runtime is given time to
    remove the container's cgroups and state before ``delete --force`` makes sure."""
    fd = os.open(os.path.join(bundle, "config.json"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    os.makedirs(state_root, mode=0o700, exist_ok=True)
    runtime = resolve_runtime(runtime)
    pid_file = os.path.join(bundle, "step.pid")
    argv = [runtime, "--root", state_root, "run", "--pid-file", pid_file, "--bundle", bundle, cid]
    p = proc.spawn(argv, stdin=proc.DEVNULL, stdout=proc.PIPE, stderr=proc.STDOUT)
    tail: list[str] = []
    try:
        assert p.stdout is not None
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail = (tail + [line])[-5:]
            out(line)
        rc = p.wait(timeout)
    except BaseException:
        _stop(p, pid_file)
        proc.run([runtime, "--root", state_root, "delete", "--force", cid], check=False, timeout=30)
        raise
    if rc != 0:
        proc.run([runtime, "--root", state_root, "delete", "--force", cid], check=False, timeout=30)
        raise CommandError(argv, rc, "\n".join(tail))


def _stop(p: subprocess.Popen[bytes], pid_file: str) -> None:
    """Kill the step's container init (the runtime's child), then the runtime if it lingers."""
    import signal

    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid > 0 and _ppid(pid) == p.pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.wait(p, 10) is None:  # the runtime reaps its init and removes the cgroups it made
        p.kill()
        p.wait()


def _ppid(pid: int) -> int:
    p = procfs.ppid(pid)
    return -1 if p is None else p


def mount_points_absent(rootfs: str, spec: dict[str, Any]) -> list[str]:
    """Destinations of the spec's mounts that do not exist in the rootfs yet (the runtime will
    create them as mount points; they must not end up in the step's layer)."""
    missing = []
    with Root(rootfs) as r:
        for m in spec.get("mounts") or []:
            dest = m.get("destination") or ""
            try:
                parent, name = r.parent(dest)
            except OSError:
                missing.append(dest)
                continue
            try:
                os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                missing.append(dest)
            except OSError:
                pass
            finally:
                os.close(parent)
    return missing


def drop_mount_points(upper: str, dests: list[str]) -> None:
    """Remove, from a step's upper dir, the empty files and directories the runtime made as
    mount points at dests (deepest first); anything with content is the step's and stays."""
    import stat

    with Root(upper) as r:
        for dest in sorted(dests, key=lambda d: d.count("/"), reverse=True):
            try:
                parent, name = r.parent(dest)
            except OSError:
                continue
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(name, dir_fd=parent)
                elif stat.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=parent)  # only if empty (ENOTEMPTY otherwise)
            except OSError:
                pass
            finally:
                os.close(parent)
