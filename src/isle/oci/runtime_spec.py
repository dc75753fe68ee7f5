"""OCI runtime-spec config.json: load and validate, with errors naming the bad field.

Pure data: the validated config stays a plain dict (cheap to import and to pass around);
``load(path)`` / ``validate(cfg)`` raise ``ConfigError("linux.namespaces[3].type", ...)``.
``default_spec()`` is what ``isle-runtime spec`` writes (runc's default).
"""

from __future__ import annotations

from isle.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["load", "validate", "unknown_capabilities", "default_spec", "CAPABILITIES",
           "NAMESPACE_TYPES", "RLIMITS", "HOOK_KINDS", "PROPAGATIONS"]

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

#: capability name -> number (linux/capability.h)
CAPABILITIES = {name: i for i, name in enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
))}

RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
           "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
           "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO",
           "RLIMIT_RTTIME")

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")

PROPAGATIONS = ("", "shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate",
                "runbindable")

CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def load(path: str) -> dict[str, Any]:
    """Read and validate a bundle's config.json."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError("config.json", f"not found: {path}") from None
    except OSError as exc:
        raise ConfigError("config.json", f"cannot read {path}: {exc.strerror}") from None
    try:
        from isle.oci.fastjson import loads

        cfg = loads(raw)
    except ValueError as exc:
        raise ConfigError("config.json", f"malformed JSON: {exc}") from None
    return validate(cfg)


def _t(v: Any, typ: type | tuple[type, ...], field: str, what: str) -> Any:
    # bool is an int in Python; never accept it where a number is meant
    if not isinstance(v, typ) or (isinstance(v, bool) and bool not in (
            typ if isinstance(typ, tuple) else (typ,))):
        raise ConfigError(field, f"must be {what}, got {type(v).__name__} {v!r}"[:200])
    return v


def _opt(d: dict[str, Any], key: str, typ: type | tuple[type, ...], field: str, what: str) -> Any:
    v = d.get(key)
    if v is None:
        return None
    return _t(v, typ, f"{field}.{key}" if field else key, what)


def _strs(v: Any, field: str) -> list[str]:
    _t(v, list, field, "a list of strings")
    for i, s in enumerate(v):
        _t(s, str, f"{field}[{i}]", "a string")
    return v  # type: ignore[no-any-return]


def _abs(v: Any, field: str) -> str:
    _t(v, str, field, "an absolute path")
    if not v.startswith("/"):
        raise ConfigError(field, f"must be an absolute path, got {v!r}")
    return v  # type: ignore[no-any-return]


def _uint(v: Any, field: str, bits: int = 32) -> int:
    _t(v, int, field, "a non-negative integer")
    if v < 0 or v >= 1 << bits:
        raise ConfigError(field, f"out of range: {v}")
    return v  # type: ignore[no-any-return]


def unknown_capabilities(proc: dict[str, Any] | None) -> list[str]:
    """Capability names this host cannot map (e.g. newer than its kernel), ignored with a warning.

    The spec asks for an error here, but runc and crun ignore them with a warning so that one
    config serves old and new kernels (containerd and podman list the newest capabilities); tools
    that drive runc rely on that, so isle-runtime does the same.
    """
    out: list[str] = []
    for lst in ((proc or {}).get("capabilities") or {}).values():
        for c in lst or []:
            u = c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
            if u not in CAPABILITIES and c not in out:
                out.append(c)
    return out


def validate(cfg: Any) -> dict[str, Any]:
    """Check a parsed config; return it unchanged or raise ConfigError naming the field."""
    _t(cfg, dict, "config.json", "a JSON object")
    _t(cfg.get("ociVersion"), str, "ociVersion", "a string")
    root = _t(cfg.get("root"), dict, "root", "an object with a path")
    _t(root.get("path"), str, "root.path", "a string")
    if not root["path"]:
        raise ConfigError("root.path", "must not be empty")
    _opt(root, "readonly", bool, "root", "a boolean")
    for k in ("hostname", "domainname"):
        _opt(cfg, k, str, "", "a string")
    ann = _opt(cfg, "annotations", dict, "", "an object")
    for k, v in (ann or {}).items():
        _t(v, str, f"annotations.{k}", "a string")
    proc = cfg.get("process")
    if proc is not None:
        _process(_t(proc, dict, "process", "an object"), "process")
    for i, m in enumerate(_opt(cfg, "mounts", list, "", "a list") or []):
        f = f"mounts[{i}]"
        _t(m, dict, f, "an object")
        _abs(m.get("destination"), f"{f}.destination")
        _opt(m, "type", str, f, "a string")
        _opt(m, "source", str, f, "a string")
        if m.get("options") is not None:
            _strs(m["options"], f"{f}.options")
    hooks = _opt(cfg, "hooks", dict, "", "an object")
    for kind, lst in (hooks or {}).items():
        if kind not in HOOK_KINDS:
            raise ConfigError(f"hooks.{kind}",
                              f"unknown hook kind (known: {', '.join(HOOK_KINDS)})")
        for i, h in enumerate(_t(lst, list, f"hooks.{kind}", "a list")):
            f = f"hooks.{kind}[{i}]"
            _t(h, dict, f, "an object")
            _abs(h.get("path"), f"{f}.path")
            for k in ("args", "env"):
                if h.get(k) is not None:
                    _strs(h[k], f"{f}.{k}")
            t = _opt(h, "timeout", int, f, "an integer")
            if t is not None and t <= 0:
                raise ConfigError(f"{f}.timeout", f"must be > 0, got {t}")
    linux = cfg.get("linux")
    if linux is not None:
        _linux(_t(linux, dict, "linux", "an object"))
    return cfg  # type: ignore[no-any-return]


def _process(p: dict[str, Any], f: str) -> None:
    args = p.get("args")
    if args is None or args == []:
        raise ConfigError(f"{f}.args", "must be a non-empty list (the command to run)")
    _strs(args, f"{f}.args")
    for i, e in enumerate(_strs(p.get("env") or [], f"{f}.env")):
        if "=" not in e:
            raise ConfigError(f"{f}.env[{i}]", f"must be KEY=VALUE, got {e!r}")
    cwd = p.get("cwd")
    if cwd is None or cwd == "":
        raise ConfigError(f"{f}.cwd", "is required (an absolute path)")
    _abs(cwd, f"{f}.cwd")
    _opt(p, "terminal", bool, f, "a boolean")
    _opt(p, "noNewPrivileges", bool, f, "a boolean")
    u = _opt(p, "user", dict, f, "an object")
    if u is not None:
        _uint(u.get("uid", 0), f"{f}.user.uid")
        _uint(u.get("gid", 0), f"{f}.user.gid")
        for i, g in enumerate(_t(u.get("additionalGids") or [], list, f"{f}.user.additionalGids",
                                 "a list")):
            _uint(g, f"{f}.user.additionalGids[{i}]")
        if u.get("umask") is not None:
            _uint(u["umask"], f"{f}.user.umask", 12)
    seen: set[str] = set()
    for i, r in enumerate(_opt(p, "rlimits", list, f, "a list") or []):
        rf = f"{f}.rlimits[{i}]"
        _t(r, dict, rf, "an object")
        if r.get("type") not in RLIMITS:
            raise ConfigError(f"{rf}.type", f"unknown rlimit {r.get('type')!r}")
        if r["type"] in seen:
            raise ConfigError(f"{rf}.type", f"duplicate rlimit {r['type']}")
        seen.add(r["type"])
        hard = _uint(r.get("hard"), f"{rf}.hard", 64)
        soft = _uint(r.get("soft"), f"{rf}.soft", 64)
        if soft > hard:
            raise ConfigError(f"{rf}.soft", f"soft limit {soft} exceeds hard limit {hard}")
    caps = _opt(p, "capabilities", dict, f, "an object")
    for k, lst in (caps or {}).items():
        if k not in CAP_SETS:
            raise ConfigError(f"{f}.capabilities.{k}", "unknown capability set")
        _strs(lst or [], f"{f}.capabilities.{k}")  # unknown names: see unknown_capabilities
    o = _opt(p, "oomScoreAdj", int, f, "an integer")
    if o is not None and not -1000 <= o <= 1000:
        raise ConfigError(f"{f}.oomScoreAdj", f"must be in -1000..1000, got {o}")
    for k in ("apparmorProfile", "selinuxLabel"):
        _opt(p, k, str, f, "a string")
    cs = _opt(p, "consoleSize", dict, f, "an object")
    if cs is not None:
        _uint(cs.get("height", 0), f"{f}.consoleSize.height", 16)
        _uint(cs.get("width", 0), f"{f}.consoleSize.width", 16)


def _linux(lx: dict[str, Any]) -> None:
    types: set[str] = set()
    for i, ns in enumerate(_opt(lx, "namespaces", list, "linux", "a list") or []):
        f = f"linux.namespaces[{i}]"
        _t(ns, dict, f, "an object")
        t = ns.get("type")
        if t not in NAMESPACE_TYPES:
            raise ConfigError(f"{f}.type", f"unknown namespace {t!r}")
        if t in types:
            raise ConfigError(f"{f}.type", f"duplicate namespace {t!r}")
        types.add(t)
        if ns.get("path") not in (None, ""):
            _abs(ns["path"], f"{f}.path")
    for key in ("uidMappings", "gidMappings"):
        maps = _opt(lx, key, list, "linux", "a list") or []
        if maps and "user" not in types:
            raise ConfigError(f"linux.{key}", "needs a user namespace in linux.namespaces")
        for i, m in enumerate(maps):
            f = f"linux.{key}[{i}]"
            _t(m, dict, f, "an object")
            for k in ("containerID", "hostID", "size"):
                _uint(m.get(k), f"{f}.{k}")
            if m["size"] == 0:
                raise ConfigError(f"{f}.size", "must be > 0")
    if "user" in types and not any(n.get("path") for n in lx["namespaces"] if n["type"] == "user"):
        if not lx.get("uidMappings") or not lx.get("gidMappings"):
            raise ConfigError("linux.uidMappings",
                              "a new user namespace needs uidMappings and gidMappings")
    for i, d in enumerate(_opt(lx, "devices", list, "linux", "a list") or []):
        f = f"linux.devices[{i}]"
        _t(d, dict, f, "an object")
        _abs(d.get("path"), f"{f}.path")
        if d.get("type") not in ("c", "b", "u", "p"):
            raise ConfigError(f"{f}.type", f"must be one of c, b, u, p; got {d.get('type')!r}")
        if d["type"] != "p":
            _uint(d.get("major"), f"{f}.major")
            _uint(d.get("minor"), f"{f}.minor")
        for k in ("fileMode", "uid", "gid"):
            if d.get(k) is not None:
                _uint(d[k], f"{f}.{k}")
    for k, v in (_opt(lx, "sysctl", dict, "linux", "an object") or {}).items():
        _t(v, str, f"linux.sysctl.{k}", "a string")
        if "/" in k or ".." in k:
            raise ConfigError(f"linux.sysctl.{k}", "bad sysctl name")
    for key in ("maskedPaths", "readonlyPaths"):
        for i, pth in enumerate(_strs(lx.get(key) or [], f"linux.{key}")):
            _abs(pth, f"linux.{key}[{i}]")
    prop = _opt(lx, "rootfsPropagation", str, "linux", "a string")
    if prop is not None and prop not in PROPAGATIONS:
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    _opt(lx, "cgroupsPath", str, "linux", "a string")
    _opt(lx, "resources", dict, "linux", "an object")
    _opt(lx, "seccomp", dict, "linux", "an object")
    _opt(lx, "mountLabel", str, "linux", "a string")
    for clock, off in (_opt(lx, "timeOffsets", dict, "linux", "an object") or {}).items():
        f = f"linux.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(f, "unknown clock (monotonic or boottime)")
        _t(off, dict, f, "an object")
        _t(off.get("secs", 0), int, f"{f}.secs", "an integer")
        _uint(off.get("nanosecs", 0), f"{f}.nanosecs")
    if lx.get("timeOffsets") and "time" not in types:
        raise ConfigError("linux.timeOffsets", "needs a time namespace in linux.namespaces")


_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """runc's ``spec`` output: sh in a rootfs/ beside config.json, default caps and mounts."""
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_DEFAULT_CAPS) for k in
                             ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        import os

        lx = spec["linux"]
        lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "network"]
        lx["namespaces"].append({"type": "user"})
        lx["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        lx.pop("resources", None)
        ms = [m for m in spec["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        ms.append({"destination": "/sys", "type": "none", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        for m in ms:
            if m["destination"] in ("/dev/pts", "/dev/mqueue"):
                m["options"] = [o for o in m.get("options", []) if o != "gid=5"]
        spec["mounts"] = ms
    return spec
