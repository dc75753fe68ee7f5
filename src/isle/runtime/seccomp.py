"""The OCI ``linux.seccomp`` section compiled to a BPF filter (libseccomp, cached) and loaded.

Three steps, each usable alone::

    prog = compile_filter(spec["linux"]["seccomp"])      # bytes of struct sock_filter[]
    fd = install_filter(prog, flags=filter_flags(spec["linux"]["seccomp"]))
    if fd is not None:                                   # the profile uses SCMP_ACT_NOTIFY
        send_listener(seccomp["listenerPath"], fd, state,
                      metadata=seccomp.get("listenerMetadata", ""))

``plan()`` is the pure part (validation + translation to libseccomp rules, errors name the field);
``compile_filter`` runs the plan through libseccomp only on a cache miss. A cache hit costs one
canonical ``json.dumps``, one sha256 and one file read: no ctypes, no libseccomp.

Rule semantics follow runc (libcontainer/seccomp): SCMP_ACT_KILL is KILL_THREAD; ERRNO/TRACE
default to EPERM; a rule whose action equals the default action is dropped; conditions on the
same argument index are split into one rule per condition (libseccomp refuses them in one rule);
NOTIFY is refused as the default action and for ``write``; more than 32 syscall names turn on
libseccomp's binary-tree optimisation; unless the default action lets calls through, syscalls
numbered above the profile's largest (per arch) get ENOSYS, not the default errno
(``seccomp_bpf.enosys_prologue``), so libc falls back from syscalls newer than the profile.

Syscall names (where isle is deliberately stricter than runc, which ignores any name its
libseccomp cannot resolve): a name that is not syntactically a syscall name (``[a-z_][a-z0-9_]*``)
is a ConfigError; so is a name libseccomp knows on *no* architecture (libseccomp resolves names
of every arch it supports, e.g. ``socketcall`` on x86_64 gives a pseudo-number, so "unknown" means
a typo or a syscall newer than the installed libseccomp). Names of other arches are kept: libseccomp
applies them only where they exist. ``compile_filter(..., unknown_names="ignore")`` restores runc's
behaviour for profiles that list syscalls newer than libseccomp 2.5.4.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

from isle.errors import ConfigError, Unsupported
from isle.runtime.seccomp_cache import MAGIC as _MAGIC
from isle.runtime.seccomp_cache import cache_path
from isle.runtime.seccomp_cache import lib_path as _lib_path
from isle.runtime.seccomp_cache import read_cached as _read_cached

try:  # the builtin module imports in ~1 ms; hashlib (OpenSSL) in ~7 ms
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python >= 3.12 renamed it
    from hashlib import sha256

__all__ = [
    "ACTIONS", "OPERATORS", "ARCHITECTURES", "FLAGS", "Rule", "Plan", "plan", "compile_plan",
    "compile_filter", "cache_path", "filter_flags", "install_filter", "send_listener",
    "default_profile", "DEFAULT_PROFILE_PATH", "FLAG_NEW_LISTENER", "FLAG_TSYNC_ESRCH", "features",
]

F = "linux.seccomp"

#: OCI action -> libseccomp action (errno-carrying ones get the errno in the low 16 bits)
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,  # = KILL_THREAD, as in runc and libseccomp
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1
_ERRNO_ENOSYS = 0x00050000 | 38

#: OCI operator -> enum scmp_compare
OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

#: OCI architecture -> libseccomp arch name (seccomp_arch_resolve_name)
ARCHITECTURES = {
    f"SCMP_ARCH_{a.upper()}": a
    for a in ("x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32", "mipsel",
              "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390", "s390x", "parisc",
              "parisc64", "riscv64", "loongarch64", "m68k", "sh", "sheb")
}

#: OCI flag -> SECCOMP_FILTER_FLAG_* bit for seccomp(2)
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
FLAG_NEW_LISTENER = 8
FLAG_TSYNC_ESRCH = 16
_WAIT_KILLABLE_RECV = FLAGS["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
_NEEDS = {_WAIT_KILLABLE_RECV: FLAG_NEW_LISTENER}  # the kernel takes it only with a listener

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}\Z")
_U64 = (1 << 64) - 1
_OPTIMIZE_ABOVE = 32  # runc: binary tree above 32 syscalls (its specconv makes one entry a name)

DEFAULT_PROFILE_PATH = os.path.join(os.path.dirname(__file__), "profiles", "docker-default.json")


class Rule(NamedTuple):
    """One seccomp_rule_add_array call; args are (index, op, value, valueTwo)."""

    field: str
    syscall: str
    action: int
    args: tuple[tuple[int, int, int, int], ...] = ()


class Plan(NamedTuple):
    """Everything libseccomp is asked to do, in order, for one OCI seccomp section."""

    default_action: int
    arches: tuple[tuple[str, str], ...]  # (field, libseccomp arch name)
    rules: tuple[Rule, ...]
    optimize: bool
    flags: int
    names: tuple[tuple[str, str], ...] = ()  # (field, name) of every syscall named, kept or not
    enosys: bool = False  # prepend the -ENOSYS prologue (seccomp_bpf) for unknown-newer syscalls


def _obj(v: Any, field: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(field, f"must be an object, got {type(v).__name__}")
    return v


def _list(v: Any, field: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ConfigError(field, f"must be an array, got {type(v).__name__}")
    return v


def _uint(v: Any, field: str, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise ConfigError(field, f"must be an integer in 0..{hi}, got {v!r}")
    return int(v)


def _action(name: Any, errno_ret: Any, field: str, errno_field: str) -> int:
    if name not in ACTIONS:
        raise ConfigError(field, f"unknown action {json.dumps(name)}")
    act = ACTIONS[name]
    if errno_ret is not None and name not in _WITH_ERRNO:
        raise ConfigError(errno_field, f"is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, "
                                       f"not {name}")
    if name in _WITH_ERRNO:
        act |= _EPERM if errno_ret is None else _uint(errno_ret, errno_field, 0xFFFF)
    return act


def filter_flags(seccomp: dict[str, Any]) -> int:
    """The flags for seccomp(2): OCI ``flags``, plus NEW_LISTENER if any rule uses SCMP_ACT_NOTIFY
    (and TSYNC_ESRCH with TSYNC then, which the kernel requires alongside NEW_LISTENER).
    WAIT_KILLABLE_RECV is dropped when there is no listener: it means nothing then and the
    kernel would refuse it."""
    flags = 0
    for i, name in enumerate(_list(seccomp.get("flags"), f"{F}.flags")):
        if name not in FLAGS:
            raise ConfigError(f"{F}.flags[{i}]", f"unknown flag {json.dumps(name)}")
        flags |= FLAGS[name]
    if any(isinstance(s, dict) and s.get("action") == "SCMP_ACT_NOTIFY"
           for s in _list(seccomp.get("syscalls"), f"{F}.syscalls")):
        flags |= FLAG_NEW_LISTENER
        if flags & FLAGS["SECCOMP_FILTER_FLAG_TSYNC"]:
            flags |= FLAG_TSYNC_ESRCH
    else:
        flags &= ~_WAIT_KILLABLE_RECV
    return flags


def _rule_args(args: list[Any], field: str) -> list[tuple[int, int, int, int]]:
    out = []
    for k, a in enumerate(args):
        af = f"{field}.args[{k}]"
        a = _obj(a, af)
        if "index" not in a:
            raise ConfigError(f"{af}.index", "is required")
        if "op" not in a:
            raise ConfigError(f"{af}.op", "is required")
        index = _uint(a["index"], f"{af}.index", 5)
        if a["op"] not in OPERATORS:
            raise ConfigError(f"{af}.op", f"unknown operator {json.dumps(a['op'])}")
        value = _uint(a.get("value", 0), f"{af}.value", _U64)
        two = _uint(a.get("valueTwo", 0), f"{af}.valueTwo", _U64)
        out.append((index, OPERATORS[a["op"]], value, two))
    return out


def plan(seccomp: dict[str, Any]) -> Plan:
    """Validate an OCI seccomp section and translate it to libseccomp calls (pure)."""
    seccomp = _obj(seccomp, F)
    if "defaultAction" not in seccomp:
        raise ConfigError(f"{F}.defaultAction", "is required")
    if seccomp["defaultAction"] == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{F}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")
    default = _action(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"),
                      f"{F}.defaultAction", f"{F}.defaultErrnoRet")
    arches = []
    for i, a in enumerate(_list(seccomp.get("architectures"), f"{F}.architectures")):
        if a not in ARCHITECTURES:
            raise ConfigError(f"{F}.architectures[{i}]", f"unknown architecture {json.dumps(a)}")
        arches.append((f"{F}.architectures[{i}]", ARCHITECTURES[a]))
    flags = filter_flags(seccomp)
    for key in ("listenerPath", "listenerMetadata"):
        if not isinstance(seccomp.get(key, ""), str):
            raise ConfigError(f"{F}.{key}", "must be a string")
    if flags & FLAG_NEW_LISTENER and not seccomp.get("listenerPath"):
        raise ConfigError(f"{F}.listenerPath", "is required when an action is SCMP_ACT_NOTIFY")
    syscalls = _list(seccomp.get("syscalls"), f"{F}.syscalls")
    rules: list[Rule] = []
    all_names: list[tuple[str, str]] = []
    for i, sc in enumerate(syscalls):
        field = f"{F}.syscalls[{i}]"
        sc = _obj(sc, field)
        names = _list(sc.get("names"), f"{field}.names")
        if not names:
            raise ConfigError(f"{field}.names", "must list at least one syscall")
        if "action" not in sc:
            raise ConfigError(f"{field}.action", "is required")
        act = _action(sc["action"], sc.get("errnoRet"), f"{field}.action", f"{field}.errnoRet")
        args = _rule_args(_list(sc.get("args"), f"{field}.args"), field)
        for j, name in enumerate(names):
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(f"{field}.names[{j}]", f"not a syscall name: {json.dumps(name)}")
            all_names.append((f"{field}.names[{j}]", name))
            if sc["action"] == "SCMP_ACT_NOTIFY" and name == "write":
                raise ConfigError(f"{field}.names[{j}]", "SCMP_ACT_NOTIFY cannot be used for write "
                                  "(the runtime needs it to hand over the listener fd)")
        if act == default:  # libseccomp refuses rules equal to the default action; runc drops them
            continue
        indexes = [a[0] for a in args]
        groups = [[a] for a in args] if len(set(indexes)) < len(indexes) else [args]
        for j, name in enumerate(names):
            for group in groups:
                rules.append(Rule(f"{field}.names[{j}]", name, act, tuple(group)))
    # like runc: no ENOSYS prologue when the default lets calls through (allow, log, trace)
    lenient = default in (ACTIONS["SCMP_ACT_ALLOW"], ACTIONS["SCMP_ACT_LOG"]) \
        or default & 0xFFFF0000 == ACTIONS["SCMP_ACT_TRACE"] or default == _ERRNO_ENOSYS
    return Plan(default, tuple(arches), tuple(rules), len(all_names) > _OPTIMIZE_ABOVE, flags,
                tuple(all_names), not lenient)


# ---- libseccomp: only on a cache miss ------------------------------------------------------

def compile_plan(p: Plan, *, unknown_names: str = "error") -> bytes:
    """Run a plan through libseccomp and export the BPF program."""
    from isle.sys.seccomp_lib import ATTR_CTL_OPTIMIZE, NR_SCMP_ERROR, Libseccomp

    path = _lib_path()
    if path is None:
        raise Unsupported("seccomp: libseccomp.so.2 not found (Debian package libseccomp2)")
    lib = Libseccomp(path)
    version = ".".join(map(str, lib.version()))
    try:
        flt = lib.new_filter(p.default_action)
    except OSError as e:
        raise ConfigError(f"{F}.defaultAction", f"libseccomp {version} refused it: {e}") from e
    unknown = set()
    for field, name in p.names:
        if lib.resolve(name) == NR_SCMP_ERROR:
            if unknown_names != "ignore":
                raise ConfigError(field, f"unknown syscall {json.dumps(name)} (libseccomp "
                                  f"{version} knows no such syscall on any architecture)")
            unknown.add(name)
    tokens = [lib.arch_native()]
    with flt:
        for field, arch in p.arches:
            token = lib.arch_token(arch)
            if token == 0:
                raise ConfigError(field, f"architecture {arch} is not supported by "
                                         f"libseccomp {version}")
            flt.arch_add(token)
            tokens.append(token)
        if p.optimize and p.rules:
            flt.attr_set(ATTR_CTL_OPTIMIZE, 2)
        for r in p.rules:
            if r.syscall in unknown:
                continue
            nr = lib.resolve(r.syscall)
            try:
                flt.rule_add(r.action, nr, list(r.args))
            except OSError as e:
                raise ConfigError(r.field, f"libseccomp {version} refused the rule for "
                                  f"{r.syscall}: {e.strerror}") from e
        prog = flt.export_bpf()
    if not p.enosys:
        return prog
    from isle.runtime.seccomp_bpf import AUDIT_ARCH_X86_64, enosys_prologue

    x32 = lib.arch_token("x32")
    maxima: dict[int, dict[str, int]] = {}
    for token in dict.fromkeys(tokens):
        audit, half = (AUDIT_ARCH_X86_64, "x32") if token == x32 else (token, "native")
        nrs = [lib.resolve(name, token) for _, name in p.names if name not in unknown]
        if any(nr >= 0 for nr in nrs):
            maxima.setdefault(audit, {})[half] = max(nr for nr in nrs if nr >= 0)
    return enosys_prologue(maxima) + prog


def _write_cached(path: str, prog: bytes) -> None:
    from isle.sys.fs import atomic_write

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, _MAGIC + sha256(prog).digest() + prog, mode=0o600)
    except OSError:
        pass  # a read-only or full cache only costs the next start a recompile


def compile_filter(seccomp: dict[str, Any], *, cache_dir: str | None = None,
                   use_cache: bool = True, unknown_names: str = "error") -> bytes:
    """The BPF program (bytes of struct sock_filter[]) for an OCI ``linux.seccomp`` section.

    Raises ConfigError naming the bad field. Cached under ``$ISLE_SECCOMP_CACHE``, else
    ``$ISLE_CACHE/seccomp``, else /var/cache/isle/seccomp (~/.cache/isle/seccomp rootless);
    a hit neither validates again nor touches libseccomp.
    """
    if unknown_names not in ("error", "ignore"):
        raise ValueError(f"unknown_names must be 'error' or 'ignore', not {unknown_names!r}")
    path = cache_path(seccomp, cache_dir=cache_dir, unknown_names=unknown_names) \
        if use_cache else None
    if path is not None:
        prog = _read_cached(path)
        if prog is not None:
            return prog
    prog = compile_plan(plan(seccomp), unknown_names=unknown_names)
    if path is not None:
        _write_cached(path, prog)
    return prog


# ---- loading and the notify listener --------------------------------------------------------

def install_filter(prog: bytes, *, flags: int = 0) -> int | None:
    """Load prog into the calling thread (with TSYNC: the process). Needs no_new_privs set or
    CAP_SYS_ADMIN. Returns the notify listener fd when flags has FLAG_NEW_LISTENER, else None.

    After this, the caller's own syscalls are filtered: with a listener, hand the fd out with
    ``write`` only (NOTIFY on write is refused by ``plan``), e.g. write its number to the parent,
    which takes it with pidfd_getfd and calls ``send_listener`` from the host side, as runc does;
    calling ``send_listener`` in the filtered process works only if connect/sendmsg are not
    themselves notified."""
    from isle.sys.seccomp_lib import seccomp_set_mode_filter

    ret = seccomp_set_mode_filter(prog, flags)
    return ret if flags & FLAG_NEW_LISTENER else None


def send_listener(listener_path: str, fd: int, state: dict[str, Any], *, metadata: str = "",
                  oci_version: str = "1.0.2") -> None:
    """Hand the notify fd to the seccomp agent at listener_path (OCI "container process state"):
    one message of JSON with the fd attached as SCM_RIGHTS, over a unix stream socket."""
    import socket

    if "metadata" in state:  # tolerate callers that put listenerMetadata into the state
        state = dict(state)
        metadata = metadata or str(state.pop("metadata") or "")
    msg = {
        "ociVersion": state.get("ociVersion", oci_version),
        "fds": ["seccompFd"],
        "pid": state.get("pid", 0),
        "metadata": metadata,
        "state": state,
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(listener_path)
            socket.send_fds(s, [json.dumps(msg).encode()], [fd])
        except OSError as e:
            raise ConfigError(f"{F}.listenerPath",
                              f"cannot hand the seccomp fd to {listener_path}: {e.strerror}") from e


def default_profile() -> dict[str, Any]:
    """Docker's default profile as an OCI ``linux.seccomp`` section (see profiles/README.md)."""
    with open(DEFAULT_PROFILE_PATH, "rb") as f:
        data: dict[str, Any] = json.loads(f.read())
    return data


def features() -> dict[str, Any]:
    """The ``linux.seccomp`` object of ``isle-runtime features`` (OCI runtime-spec features.md):
    actions and operators isle maps, arches this libseccomp knows, flags this kernel takes."""
    from isle.sys.seccomp_lib import Libseccomp, seccomp_flag_supported

    path = _lib_path()
    if path is None:
        return {"enabled": False}
    lib = Libseccomp(path)
    return {
        "enabled": True,
        "actions": sorted(ACTIONS),
        "operators": sorted(OPERATORS),
        "archs": sorted(a for a, name in ARCHITECTURES.items() if lib.arch_token(name)),
        "knownFlags": sorted(FLAGS),
        "supportedFlags": sorted(f for f, bit in FLAGS.items()
                                 if seccomp_flag_supported(bit | _NEEDS.get(bit, 0))),
    }
