"""Apply ``process`` settings to the calling process: rlimits, oom score, user, caps, NNP, LSMs.

Shared by the container's init and by ``exec``; the order follows runc: rlimits and oom score
while still privileged, bounding set, user switch with keep-caps, then the other cap sets.
"""

from __future__ import annotations

import os

from isle.errors import ConfigError, Unsupported
from isle.runtime.plan import cap_mask
from isle.sys import inroot
from isle.sys import libc as L

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["set_rlimits", "set_oom_score", "set_user_and_caps", "lsm_labels", "lookup_exec",
           "LAST_CAP"]


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


LAST_CAP = _last_cap()


def set_rlimits(rlimits: list[dict[str, Any]]) -> None:
    if not rlimits:
        return
    import resource

    for i, r in enumerate(rlimits):
        res = getattr(resource, r["type"], None)
        if res is None:
            raise Unsupported(f"process.rlimits[{i}].type: {r['type']} not supported here")
        try:
            resource.setrlimit(res, (r["soft"], r["hard"]))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"process.rlimits[{i}]", f"{r['type']} soft={r['soft']} "
                              f"hard={r['hard']}: {exc}") from None


def set_oom_score(adj: int | None) -> None:
    if adj is None:
        return
    try:
        _write_proc("self/oom_score_adj", str(adj))
    except OSError as exc:
        raise ConfigError("process.oomScoreAdj", f"{adj}: {os.strerror(exc.errno or 0)}") from None


def set_user_and_caps(sys: L.Syscalls, proc: dict[str, Any], in_new_userns: bool = False) -> None:
    """Bounding set, groups/gid/uid (caps kept across setuid), then eff/perm/inh/ambient."""
    caps = proc.get("capabilities")
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    if caps is not None:
        bounding = cap_mask(caps.get("bounding"))
        for c in range(LAST_CAP + 1):
            if not bounding & (1 << c):
                sys.prctl(L.PR_CAPBSET_DROP, c)
        sys.prctl(L.PR_SET_KEEPCAPS, 1)
    try:
        if "additionalGids" in user or not in_new_userns:
            os.setgroups(list(user.get("additionalGids") or []))
    except PermissionError:
        if user.get("additionalGids"):
            raise ConfigError("process.user.additionalGids", "setgroups denied") from None
    try:
        os.setresgid(gid, gid, gid)
    except OSError as exc:
        raise ConfigError("process.user.gid", f"{gid}: {os.strerror(exc.errno or 0)} "
                          "(is it mapped into the user namespace?)") from None
    try:
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise ConfigError("process.user.uid", f"{uid}: {os.strerror(exc.errno or 0)} "
                          "(is it mapped into the user namespace?)") from None
    if "umask" in user and user["umask"] is not None:
        os.umask(user["umask"])
    if caps is None:
        return
    sys.prctl(L.PR_SET_KEEPCAPS, 0)
    eff, perm, inh = (cap_mask(caps.get(k)) for k in ("effective", "permitted", "inheritable"))
    amb = cap_mask(caps.get("ambient"))
    sys.capset(eff, perm | eff, inh | amb)
    sys.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
    for c in range(LAST_CAP + 1):
        if amb & (1 << c):
            try:
                sys.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, c)
            except OSError:
                pass  # runc: ambient caps not in permitted+inheritable are skipped


def lsm_labels(proc: dict[str, Any]) -> None:
    """Ask the kernel to apply apparmorProfile/selinuxLabel at exec; 'unsupported' if absent."""
    prof = proc.get("apparmorProfile")
    if prof:
        if not os.path.exists("/sys/kernel/security/apparmor") and not os.path.isdir(
                "/sys/module/apparmor"):
            raise Unsupported(f"process.apparmorProfile: {prof!r}: AppArmor is unsupported on "
                              "this host")
        try:
            _write_proc("self/attr/apparmor/exec", f"exec {prof}")
        except FileNotFoundError:
            _write_proc("self/attr/exec", f"exec {prof}")
    label = proc.get("selinuxLabel")
    if label:
        if not os.path.exists("/sys/fs/selinux/enforce"):
            raise Unsupported(f"process.selinuxLabel: {label!r}: SELinux is unsupported on "
                              "this host")
        _write_proc("self/attr/exec", label)


def _write_proc(rel: str, data: str) -> None:
    """Write /proc/<rel> on the real procfs, never through a symlink or a mount the container
    put over it (CVE-2025-52881: a redirected write of an LSM label or oom score)."""
    fd = inroot.open_proc(rel, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def lookup_exec(args0: str, env: list[str]) -> str:
    """Find args[0] using the process's PATH, like execvp would; error names the program."""
    if "/" in args0:
        if not os.access(args0, os.X_OK):
            raise ConfigError("process.args[0]", f"{args0!r}: not found or not executable")
        return args0
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for e in env:
        if e.startswith("PATH="):
            path = e[5:]
    for d in path.split(":"):
        cand = os.path.join(d or ".", args0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ConfigError("process.args[0]", f'exec: "{args0}": executable file not found in $PATH')
