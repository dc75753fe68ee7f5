"""Run options (Docker's flags) as data, and the parsers that turn flag strings into them.

Pure: every parser raises ConfigError naming the flag and the bad value, never touches the host.
"""

from __future__ import annotations

from isle.errors import ConfigError
from isle.record import field, field_names, record, to_dict

TYPE_CHECKING = False  # typing is not on `isle run`'s path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "RunOptions", "MountSpec", "Ulimit", "RestartPolicy", "Healthcheck",
    "parse_bytes", "parse_cpus", "parse_volume", "parse_mount", "parse_tmpfs", "parse_ulimit",
    "parse_restart", "parse_env", "parse_env_file", "check_env_size", "parse_labels", "check_caps",
    "parse_signal",
    "parse_duration", "check_cpus", "DEFAULT_CAPS",
]

#: Docker's default capability set (moby oci/caps/defaults.go)
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


RLIMITS = {
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack", "as",
}


@record
class MountSpec:
    """One -v/--mount/--tmpfs."""
    type: str  # bind | volume | tmpfs
    target: str
    source: str = ""  # host path (bind) or volume name ("" = anonymous volume)
    readonly: bool = False
    options: list[str] = field(default_factory=list)  # tmpfs: size=..,mode=..
    anonymous: bool = False


@record
class Ulimit:
    """One --ulimit."""
    name: str
    soft: int
    hard: int


@record
class RestartPolicy:
    """--restart NAME[:MAX]."""
    name: str = "no"  # no | on-failure | always | unless-stopped
    max_retries: int = 0


@record
class Healthcheck:
    """--health-* or the image's HEALTHCHECK."""
    test: list[str] = field(default_factory=list)  # ["CMD-SHELL", "..."] or ["NONE"]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@record
class RunOptions:
    """Everything `isle create/run` accepts, already parsed and validated."""

    image: str
    command: list[str] = field(default_factory=list)
    name: str = ""
    detach: bool = False
    remove: bool = False
    interactive: bool = False
    sig_proxy: bool = True  # a foreground run forwards the signals it gets to the container
    tty: bool = False
    env: list[str] = field(default_factory=list)  # KEY=VALUE, CLI order (image env merged later)
    workdir: str = ""
    user: str = ""
    group_add: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None  # None: image's; [] : reset
    mounts: list[MountSpec] = field(default_factory=list)
    read_only: bool = False
    memory: int = 0
    memory_swap: int = 0  # 0 = default (2x memory); -1 unlimited
    cpus: float = 0.0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0
    memory_reservation: int = 0  # --memory-reservation (soft limit)
    blkio_weight: int = 0  # --blkio-weight 10..1000
    ulimits: list[Ulimit] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    seccomp: str = ""  # "" default profile, "unconfined", or a path
    no_new_privileges: bool = False
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    init: bool = False
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10
    healthcheck: Healthcheck | None = None
    runtime: str = ""
    isolation: str = "container"
    #: "" default (bridge; slirp4netns rootless) | none | host | container:NAME | NAME,NAME...
    network: str = ""
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    ip: str = ""
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    network_aliases: list[str] = field(default_factory=list)
    #: {network: {"aliases": [..]}} of `isle network connect`, kept for the next start
    network_endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_hosts: list[str] = field(default_factory=list)
    log_max_size: int = 0  # --log-opt max-size=N: conmon rotates ctr.log beyond N bytes
    #: [rows, cols] of a tty (the API's ConsoleSize)
    console_size: list[int] = field(default_factory=list)
    stdin_once: bool = True  # -i: the first attached client's EOF closes stdin (Docker's StdinOnce)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunOptions:
        known = set(field_names(cls))
        kw = {k: v for k, v in d.items() if k in known}
        kw["mounts"] = [MountSpec(**m) for m in kw.get("mounts", [])]
        kw["ulimits"] = [Ulimit(**u) for u in kw.get("ulimits", [])]
        kw["restart"] = RestartPolicy(**kw.get("restart", {}))
        if kw.get("healthcheck"):
            kw["healthcheck"] = Healthcheck(**kw["healthcheck"])
        return cls(**kw)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(flag: str, value: str) -> int:
    """'512m' -> 536870912; Docker's RAMInBytes (binary units, optional 'b' suffix)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", value.lower())
    if not m:
        raise ConfigError(flag, f"invalid size {value!r} (want a number with optional b, k, m, g)")
    n = int(float(m.group(1)) * _UNITS[m.group(2)])
    return n


def parse_cpus(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise ConfigError("--cpus", f"invalid number {value!r}") from None
    if v < 0:
        raise ConfigError("--cpus", f"must be positive, got {value!r}")
    check_cpus(v)
    return v


def check_cpus(v: float) -> None:
    """Docker's range check of --cpus (NanoCpus): 0 is no limit, else 0.01 up to the CPUs this
    process may run on (with Docker's message)."""
    import os

    if not v:
        return
    n = len(os.sched_getaffinity(0))
    if v < 0.01 or v > n:
        raise ConfigError("--cpus", f"Range of CPUs is from 0.01 to {n:.2f}, as there are only "
                          f"{n} CPUs available")


def parse_duration(flag: str, value: str) -> float:
    """'30s', '1m30s', '500ms', '2' (seconds) -> seconds."""
    import re

    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", value)
    if not parts or "".join(a + b for a, b in parts) != value:
        raise ConfigError(flag, f"invalid duration {value!r} (e.g. 30s, 1m30s, 500ms)")
    mult = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(a) * mult[b] for a, b in parts)


def parse_volume(value: str) -> MountSpec:
    """-v SRC:DST[:ro|rw] ; -v DST (anonymous volume). SRC starting with / or . is a bind."""
    parts = value.split(":")
    opts: list[str] = []
    if len(parts) == 1:
        src, dst = "", parts[0]
    elif len(parts) == 2:
        src, dst = parts
    elif len(parts) == 3:
        src, dst, o = parts
        opts = [x for x in o.split(",") if x]
    else:
        raise ConfigError("--volume", f"invalid spec {value!r} (want SRC:DST[:ro])")
    if not dst.startswith("/"):
        raise ConfigError("--volume", f"{value!r}: container path {dst!r} must be absolute")
    ro = False
    for o in opts:
        if o == "ro":
            ro = True
        elif o in ("rw", "z", "Z", "shared", "slave", "private", "rshared", "rslave", "rprivate",
                   "nocopy", "copy"):
            pass
        else:
            raise ConfigError("--volume", f"{value!r}: unknown option {o!r}")
    if not src:
        return MountSpec(type="volume", target=dst, readonly=ro, anonymous=True)
    if src.startswith("/") or src.startswith("."):
        import os

        return MountSpec(type="bind", source=os.path.abspath(src), target=dst, readonly=ro)
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", src):
        raise ConfigError("--volume", f"{value!r}: invalid volume name {src!r}")
    return MountSpec(type="volume", source=src, target=dst, readonly=ro)


def parse_mount(value: str) -> MountSpec:
    """--mount type=bind|volume|tmpfs,source=..,target=..,readonly,tmpfs-size=..,tmpfs-mode=.."""
    kv: dict[str, str] = {}
    for item in value.split(","):
        if not item:
            continue
        k, _, v = item.partition("=")
        kv[k.strip().lower()] = v.strip() if _ else "true"
    mtype = kv.pop("type", "volume")
    src = kv.pop("source", kv.pop("src", ""))
    dst = kv.pop("target", kv.pop("destination", kv.pop("dst", "")))
    ro_v = kv.pop("readonly", kv.pop("ro", "false"))
    ro = ro_v in ("true", "1", "")
    if mtype not in ("bind", "volume", "tmpfs"):
        raise ConfigError("--mount", f"{value!r}: unknown type {mtype!r} (bind, volume, tmpfs)")
    if not dst.startswith("/"):
        raise ConfigError("--mount", f"{value!r}: target must be an absolute path")
    opts: list[str] = []
    if mtype == "tmpfs":
        if src:
            raise ConfigError("--mount", f"{value!r}: tmpfs takes no source")
        if "tmpfs-size" in kv:
            opts.append(f"size={parse_bytes('--mount tmpfs-size', kv.pop('tmpfs-size'))}")
        if "tmpfs-mode" in kv:
            opts.append(f"mode={kv.pop('tmpfs-mode')}")
    for k in ("bind-propagation", "volume-nocopy", "consistency", "z"):
        kv.pop(k, None)
    if kv:
        raise ConfigError("--mount", f"{value!r}: unknown key(s) {', '.join(sorted(kv))}")
    if mtype == "bind":
        if not src:
            raise ConfigError("--mount", f"{value!r}: bind needs a source")
        import os

        return MountSpec(type="bind", source=os.path.abspath(src), target=dst, readonly=ro)
    if mtype == "volume":
        return MountSpec(type="volume", source=src, target=dst, readonly=ro, anonymous=not src)
    return MountSpec(type="tmpfs", target=dst, readonly=ro, options=opts)


def parse_tmpfs(value: str) -> MountSpec:
    """--tmpfs /path[:size=64m,mode=1777]"""
    dst, _, o = value.partition(":")
    if not dst.startswith("/"):
        raise ConfigError("--tmpfs", f"{value!r}: path must be absolute")
    opts = [x for x in o.split(",") if x]
    return MountSpec(type="tmpfs", target=dst, options=opts)


def parse_ulimit(value: str) -> Ulimit:
    """--ulimit nofile=1024[:2048]"""
    name, sep, lim = value.partition("=")
    if not sep or name not in RLIMITS:
        raise ConfigError("--ulimit", f"invalid ulimit {value!r} (want NAME=SOFT[:HARD], "
                          f"NAME one of {', '.join(sorted(RLIMITS))})")
    soft_s, _, hard_s = lim.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise ConfigError("--ulimit", f"invalid ulimit value in {value!r}") from None
    if soft > hard:
        raise ConfigError("--ulimit", f"{value!r}: soft limit {soft} exceeds hard limit {hard}")
    return Ulimit(name=name, soft=soft, hard=hard)


def parse_restart(value: str) -> RestartPolicy:
    name, _, n = value.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise ConfigError("--restart", f"invalid policy {value!r} "
                          "(no, on-failure[:N], always, unless-stopped)")
    if n and name != "on-failure":
        raise ConfigError("--restart", f"{value!r}: only on-failure takes a retry count")
    try:
        retries = int(n) if n else 0
    except ValueError:
        raise ConfigError("--restart", f"{value!r}: retry count must be a number") from None
    if retries < 0:
        raise ConfigError("--restart", f"{value!r}: retry count must be >= 0")
    return RestartPolicy(name=name, max_retries=retries)


def parse_env(values: list[str], host_env: dict[str, str]) -> list[str]:
    """-e K=V keeps V; -e K takes K from the host environment (dropped when unset), like Docker."""
    out: list[str] = []
    for v in values:
        k, sep, _ = v.partition("=")
        if not k:
            raise ConfigError("--env", f"invalid variable {v!r}")
        if sep:
            out.append(v)
        elif k in host_env:
            out.append(f"{k}={host_env[k]}")
    return out


#: Linux's execve limits, which the container's (or the VM guest's) init meets: one
#: "KEY=value" string at most MAX_ARG_STRLEN (32 pages) with its NUL; all of them together kept
#: well inside ARG_MAX (a quarter of the 8 MiB default stack), leaving room for the command
ENV_STRING_MAX = 32 * 4096 - 1
ENV_TOTAL_MAX = 1024 * 1024


def check_env_size(env: list[str]) -> None:
    """A too-large environment is refused up front, naming the limit (it would fail at exec)."""
    total = 0
    for e in env:
        n = len(e.encode(errors="surrogateescape"))
        if n > ENV_STRING_MAX:
            key = e.partition("=")[0][:60]
            raise ConfigError("--env", f"{key}: {n} bytes; one variable (KEY=value) may have at "
                              f"most {ENV_STRING_MAX} bytes (the kernel's MAX_ARG_STRLEN)")
        total += n + 1
    if total > ENV_TOTAL_MAX:
        raise ConfigError("--env", f"the environment has {total} bytes; at most {ENV_TOTAL_MAX} "
                          "(the kernel's argument and environment limit, ARG_MAX)")


def parse_env_file(path: str, host_env: dict[str, str]) -> list[str]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError("--env-file", f"{path}: {exc.strerror}") from None
    vals = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return parse_env(vals, host_env)


def parse_labels(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        k, _, val = v.partition("=")
        if not k:
            raise ConfigError("--label", f"invalid label {v!r}")
        out[k] = val
    return out


def check_caps(flag: str, caps: list[str]) -> list[str]:
    """Normalise 'net_admin' -> 'CAP_NET_ADMIN'; 'ALL' passes; unknown names are errors."""
    from isle.oci.runtime_spec import CAPABILITIES

    out = []
    for c in caps:
        u = c.upper()
        if u == "ALL":
            out.append("ALL")
            continue
        if not u.startswith("CAP_"):
            u = "CAP_" + u
        if u not in CAPABILITIES:
            raise ConfigError(flag, f"unknown capability {c!r}")
        out.append(u)
    return out


def parse_signal(flag: str, value: str) -> int:
    from isle.sys.signals import parse

    return parse(value, flag)
