"""Run options + image config -> OCI runtime config.json (a dict). Pure: no host access.

Docker's defaults: capability set, masked and read-only /proc paths, /dev and /sys mounts,
default seccomp profile (src/isle/runtime/profiles/docker-default.json), cgroup resources.
"""

from __future__ import annotations

import os

from isle.engine.options import DEFAULT_CAPS, RunOptions, check_cpus
from isle.errors import ConfigError
from isle.oci.fastjson import loads
from isle.oci.runtime_spec import CAPABILITIES
from isle.record import field, record

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

#: every capability, in bit order (linux/capability.h)
ALL_CAPS = list(CAPABILITIES)

__all__ = ["SpecInputs", "build_spec", "process_spec", "resolve_user", "command_line",
           "host_bounding_caps",
           "merge_env", "MASKED_PATHS", "READONLY_PATHS", "load_default_seccomp"]

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PROFILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "runtime", "profiles",
                        "docker-default.json")


def load_default_seccomp() -> dict[str, Any] | None:
    try:
        with open(_PROFILE, "rb") as f:
            return loads(f.read())  # type: ignore[no-any-return]
    except OSError:
        return None


@record
class SpecInputs:
    """What the engine resolved on the host for this container (paths, ids, files)."""

    container_id: str
    rootfs: str
    image_config: dict[str, Any] = field(default_factory=dict)  # OCI image config "config" object
    hostname: str = ""
    passwd: str = ""  # contents of the rootfs /etc/passwd (for -u NAME)
    group: str = ""
    #: resolved mounts: [{"destination", "type", "source", "options"}] (binds, volumes, tmpfs)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    etc_files: dict[str, str] = field(default_factory=dict)  # /etc/hosts -> host path to bind
    netns_path: str | None = None  # None: new empty netns; "" : host network
    cgroups_path: str = ""
    init_path: str = ""  # host path of a static init (tini) for --init
    seccomp_profile: dict[str, Any] | None = None
    rootless: bool = False
    #: rootless with a delegated cgroup v2 subtree: limits apply (the runtime makes the cgroup)
    rootless_cgroup: bool = False
    #: the runtime runs the container under a guest kernel (its caps.has_guest): the guest
    #: mounts its own sysfs, never a bind of the host's
    guest_kernel: bool = False
    uid_map: list[dict[str, int]] = field(default_factory=list)
    gid_map: list[dict[str, int]] = field(default_factory=list)
    #: the capabilities isle itself may hand out (its bounding set); "all" means these
    host_caps: list[str] | None = None


def command_line(opts: RunOptions, image_config: dict[str, Any]) -> list[str]:
    """Docker's rule: entrypoint (flag or image) + (args or, if the entrypoint was not reset,
    image Cmd)."""
    if opts.entrypoint is not None:
        ep = list(opts.entrypoint)
        cmd = list(opts.command)
    else:
        ep = list(image_config.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(image_config.get("Cmd") or [])
    argv = ep + cmd
    if not argv:
        raise ConfigError("command", "no command given and the image has no Cmd or Entrypoint")
    return argv


def merge_env(opts_env: list[str], image_env: list[str], *, hostname: str, tty: bool) -> list[str]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if tty:
        env["TERM"] = "xterm"
    for kv in list(image_env) + list(opts_env):
        k, _, v = kv.partition("=")
        env[k] = v
    return [f"{k}={v}" for k, v in env.items()]


def _lookup(db: str, name: str, want_field: int) -> list[str] | None:
    for line in db.splitlines():
        parts = line.split(":")
        if len(parts) > want_field and parts[0] == name:
            return parts
    return None


def resolve_user(spec: str, passwd: str, group: str, group_add: list[str]) -> dict[str, Any]:
    """'-u name|uid[:group|gid]' against the rootfs' /etc/passwd and /etc/group -> OCI user."""
    user, _, grp = (spec or "0").partition(":")
    if user.isdigit():
        uid = int(user)
        ent = next((ln.split(":") for ln in passwd.splitlines()
                    if len(ln.split(":")) > 3 and ln.split(":")[2] == user), None)
        gid = int(ent[3]) if ent else 0
        uname = ent[0] if ent else ""
    else:
        ent = _lookup(passwd, user, 3)
        if ent is None:
            raise ConfigError("--user", f"unable to find user {user}: "
                              "no matching entries in passwd file")
        uid, gid, uname = int(ent[2]), int(ent[3]), user
    if grp:
        gid = _gid(grp, group)
    extra: list[int] = []
    if uname:
        for line in group.splitlines():
            p = line.split(":")
            if len(p) > 3 and uname in p[3].split(",") and int(p[2]) != gid:
                extra.append(int(p[2]))
    for g in group_add:
        extra.append(_gid(g, group, flag="--group-add"))
    out: dict[str, Any] = {"uid": uid, "gid": gid}
    if extra:
        out["additionalGids"] = sorted(set(extra))
    return out


def _gid(grp: str, group: str, flag: str = "--user") -> int:
    if grp.isdigit():
        return int(grp)
    ent = _lookup(group, grp, 2)
    if ent is None:
        raise ConfigError(flag, f"unable to find group {grp}: no matching entries in group file")
    return int(ent[2])


def _caps(opts: RunOptions, host_caps: list[str] | None = None) -> list[str]:
    """Docker's rules; "all" (--privileged, --cap-add ALL) is every cap isle itself holds."""
    every = list(host_caps) if host_caps is not None else list(ALL_CAPS)
    if opts.privileged:
        return every
    caps = list(DEFAULT_CAPS)
    if "ALL" in opts.cap_drop:
        caps = []
    else:
        caps = [c for c in caps if c not in opts.cap_drop]
    if "ALL" in opts.cap_add:
        caps = every
    else:
        caps += [c for c in opts.cap_add if c not in caps]
    return caps


def host_bounding_caps(status_text: str) -> list[str]:
    """CapBnd of a /proc/PID/status text -> cap names (pure)."""
    for line in status_text.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [c for i, c in enumerate(ALL_CAPS) if mask >> i & 1]
    return list(ALL_CAPS)


def process_spec(opts: RunOptions, inp: SpecInputs, *, args: list[str] | None = None,
                 env: list[str] | None = None, user: str | None = None, workdir: str | None = None,
                 tty: bool | None = None) -> dict[str, Any]:
    """The OCI "process" object; exec reuses it with its own args/env/user/workdir."""
    ic = inp.image_config
    argv = args if args is not None else command_line(opts, ic)
    if opts.init and args is None and inp.init_path:
        argv = ["/sbin/docker-init", "--"] + argv
    use_tty = opts.tty if tty is None else tty
    base_env = merge_env(opts.env, list(ic.get("Env") or []), hostname=inp.hostname, tty=use_tty)
    if env:
        base_env = merge_env(env, base_env, hostname=inp.hostname, tty=use_tty)
    u = resolve_user(user if user is not None else (opts.user or ic.get("User") or ""),
                     inp.passwd, inp.group, opts.group_add)
    caps = _caps(opts, inp.host_caps)
    proc: dict[str, Any] = {
        "terminal": use_tty,
        **({"consoleSize": {"height": opts.console_size[0], "width": opts.console_size[1]}}
           if use_tty and tty is None and len(opts.console_size) == 2 and all(opts.console_size)
           else {}),
        "user": u,
        "args": argv,
        "env": base_env,
        "cwd": workdir or opts.workdir or ic.get("WorkingDir") or "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_" + r.name.upper(), "soft": r.soft, "hard": r.hard}
                    for r in opts.ulimits],
        "noNewPrivileges": opts.no_new_privileges,
    }
    if not proc["rlimits"]:
        del proc["rlimits"]
    return proc


def _resources(opts: RunOptions) -> dict[str, Any]:
    res: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    if opts.memory:
        if opts.memory < 6 * 1024 * 1024:
            raise ConfigError("--memory", "minimum memory limit allowed is 6MB")
        mem["limit"] = opts.memory
        if opts.memory_swap == -1:
            mem["swap"] = -1
        elif opts.memory_swap:
            if opts.memory_swap < opts.memory:
                raise ConfigError("--memory-swap", "must be larger than or equal to --memory")
            mem["swap"] = opts.memory_swap
        else:
            mem["swap"] = opts.memory * 2
    elif opts.memory_swap and opts.memory_swap != -1:
        raise ConfigError("--memory-swap", "needs --memory as well")
    if opts.memory_reservation:
        mem["reservation"] = opts.memory_reservation
    if mem:
        res["memory"] = mem
    cpu: dict[str, Any] = {}
    if opts.cpus:
        check_cpus(opts.cpus)  # the API's NanoCpus too
        cpu["period"] = 100000
        cpu["quota"] = int(opts.cpus * 100000)
    if opts.cpu_shares:
        cpu["shares"] = opts.cpu_shares
    if opts.cpuset_cpus:
        cpu["cpus"] = opts.cpuset_cpus
    if cpu:
        res["cpu"] = cpu
    if opts.pids_limit:
        res["pids"] = {"limit": opts.pids_limit}
    if opts.blkio_weight:
        res["blockIO"] = {"weight": opts.blkio_weight}
    return res


_DEFAULT_DEVICES = [  # Docker's default allow list for the device cgroup
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
]


def _base_mounts(opts: RunOptions, rootless: bool,
                 guest_kernel: bool = False) -> list[dict[str, Any]]:
    sys_opts = ["nosuid", "noexec", "nodev", "ro"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
         + ([] if rootless else ["gid=5"])},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]
    if rootless and not guest_kernel:  # a guest mounts its own sysfs, never the host's
        mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    else:
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": sys_opts})
        mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    return mounts


def build_spec(opts: RunOptions, inp: SpecInputs) -> dict[str, Any]:
    """The whole config.json for one container."""
    proc = process_spec(opts, inp)
    mounts = _base_mounts(opts, inp.rootless, inp.guest_kernel)
    for dest, src in inp.etc_files.items():
        mounts.append({"destination": dest, "type": "bind", "source": src,
                       "options": ["rbind", "rprivate"] + (["ro"] if opts.read_only else [])})
    if opts.init and inp.init_path:
        mounts.append({"destination": "/sbin/docker-init", "type": "bind", "source": inp.init_path,
                       "options": ["rbind", "ro", "rprivate"]})
    mounts += inp.mounts
    namespaces: list[dict[str, Any]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if inp.netns_path is None:
        namespaces.append({"type": "network"})
    elif inp.netns_path:
        namespaces.append({"type": "network", "path": inp.netns_path})
    linux: dict[str, Any] = {"namespaces": namespaces}
    if inp.rootless:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = inp.uid_map
        linux["gidMappings"] = inp.gid_map
        if inp.rootless_cgroup and (res := _resources(opts)):
            linux["resources"] = res  # no device rules: the user namespace bounds devices
    else:
        linux["resources"] = {"devices": [{"allow": True, "access": "rwm"}] if opts.privileged
                              else list(_DEFAULT_DEVICES)}
        linux["resources"].update(_resources(opts))
        if inp.cgroups_path:
            linux["cgroupsPath"] = inp.cgroups_path
    if not opts.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if opts.seccomp != "unconfined" and inp.seccomp_profile:
            linux["seccomp"] = inp.seccomp_profile
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": proc,
        "root": {"path": inp.rootfs, "readonly": opts.read_only},
        "hostname": inp.hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": {"org.isle.isolation": opts.isolation,
                        **{f"org.isle.label.{k}": v for k, v in opts.labels.items()}},
    }
    return spec
