"""A Job: the one process a microVM runs, rendered as the shell script the guest init sources (pure)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

__all__ = ["GuestMount", "Job", "render"]

#: propagation/bind flags mean nothing inside the guest; everything else goes to mount -o
_DROP = {"bind", "rbind", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
         "runbindable"}
#: filesystems the guest kernel can make itself (host paths are not reachable from a VM)
GUEST_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "devtmpfs"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestMount:
    type: str
    destination: str
    source: str = "none"
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = ""
    #: (RLIMIT_* number, soft, hard)
    rlimits: tuple[tuple[int, int, int], ...] = ()
    no_new_privs: bool = False
    mounts: tuple[GuestMount, ...] = ()
    #: read stdin from the org.isle.stdin port (else /dev/null)
    stdin: bool = False


def _q(s: str) -> str:
    return shlex.quote(s)


def render(job: Job) -> str:
    """Shell (busybox ash) sourced by init.sh with fd 3 = control port and waitport() defined."""
    lines = ["set +e"]
    if job.hostname:
        lines.append(f"hostname {_q(job.hostname)}")
    for m in job.mounts:
        if m.type not in GUEST_FS:
            continue
        opts = [o for o in m.options if o not in _DROP]
        dest = _q("/newroot" + m.destination)
        o = f" -o {_q(','.join(opts))}" if opts else ""
        lines.append(f"mkdir -p {dest} && mount -t {m.type}{o} {_q(m.source)} {dest}"
                     f" || echo 'isle-init: mount {m.destination} failed'")
    x = ["/bin/isle-exec", "-r", "/newroot", "-w", job.cwd, "-u", str(job.uid), "-g", str(job.gid)]
    if job.additional_gids:
        x += ["-G", ",".join(map(str, job.additional_gids))]
    for res, soft, hard in job.rlimits:
        x += ["-l", f"{res}:{soft}:{hard}"]
    if job.no_new_privs:
        x += ["-n"]
    for e in job.env:
        x += ["-e", e]
    x += ["--", *job.args]
    lines += [
        "out=$(waitport org.isle.stdout) || fail 'no stdout port'",
        "err=$(waitport org.isle.stderr) || fail 'no stderr port'",
        "in=/dev/null",
    ]
    if job.stdin:
        lines.append("in=$(waitport org.isle.stdin) || fail 'no stdin port'")
    lines += [
        " ".join(_q(a) for a in x) + ' <"$in" >"$out" 2>"$err" &',
        "pid=$!",
        "echo started >&3",
        '( while read -r c a <&3; do case "$c" in kill) kill -"$a" "$pid" 2>/dev/null;; esac; done ) &',
        'wait "$pid"; code=$?',
        'echo "exit $code" >&3',
        "poweroff -f",
    ]
    return "\n".join(lines) + "\n"
