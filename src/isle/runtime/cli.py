"""isle-runtime: runc's command line (verbs, flags, exit codes), hand-parsed to start fast.

Errors: exit 1, the message on stderr, and in the --log file (JSON when --log-format json,
which podman reads). Only this module turns errors into exit codes.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any, Callable

__all__ = ["main", "exit_fast"]

VERSION = "0.1.0"
DEFAULT_ROOT = "/run/isle-runtime"

# flag spec: name -> (key, kind) with kind "bool" | "str" | "multi"
_GLOBAL = {"--root": ("root", "str"), "--log": ("log", "str"),
           "--log-format": ("log_format", "str"),
           "--debug": ("debug", "bool"), "--systemd-cgroup": ("systemd_cgroup", "bool"),
           "--rootless": ("rootless", "str"), "--criu": ("criu", "str"),
           "-v": ("version", "bool"), "--version": ("version", "bool"),
           "-h": ("help", "bool"), "--help": ("help", "bool")}
_CREATE = {"-b": ("bundle", "str"), "--bundle": ("bundle", "str"),
           "--console-socket": ("console_socket", "str"), "--pid-file": ("pid_file", "str"),
           "--no-pivot": ("no_pivot", "bool"), "--no-new-keyring": ("no_new_keyring", "bool"),
           "--preserve-fds": ("preserve_fds", "str"), "--pidfd-socket": ("pidfd_socket", "str")}
_RUN = dict(_CREATE, **{"-d": ("detach", "bool"), "--detach": ("detach", "bool"),
                        "--keep": ("keep", "bool"), "--no-subreaper": ("no_subreaper", "bool")})
_EXEC = {"--console-socket": ("console_socket", "str"), "--pidfd-socket": ("pidfd_socket", "str"),
         "--cwd": ("cwd", "str"), "-e": ("env", "multi"), "--env": ("env", "multi"),
         "-t": ("tty", "bool"), "--tty": ("tty", "bool"), "-u": ("user", "str"),
         "--user": ("user", "str"), "-g": ("additional_gids", "multi"),
         "--additional-gids": ("additional_gids", "multi"), "-p": ("process", "str"),
         "--process": ("process", "str"), "-d": ("detach", "bool"), "--detach": ("detach", "bool"),
         "--pid-file": ("pid_file", "str"), "--process-label": ("process_label", "str"),
         "--apparmor": ("apparmor", "str"), "--no-new-privs": ("no_new_privs", "bool"),
         "-c": ("cap", "multi"), "--cap": ("cap", "multi"),
         "--preserve-fds": ("preserve_fds", "str"),
         "--cgroup": ("cgroup", "multi"), "--ignore-paused": ("ignore_paused", "bool")}


class UsageError(Exception):
    pass


def _parse(args: list[str], spec: dict[str, tuple[str, str]],
           stop_at_positional: bool = True) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos.extend(args[i + 1:])
            break
        if not a.startswith("-") or a == "-":
            if stop_at_positional:
                pos.extend(args[i:])
                break
            pos.append(a)
            i += 1
            continue
        name, eq, val = a.partition("=")
        if name not in spec and not name.startswith("--") and len(name) > 2:
            name = "-" + name  # urfave/cli also accepts -bundle
        if name not in spec:
            raise UsageError(f"flag provided but not defined: {a.split('=')[0]}")
        key, kind = spec[name]
        if kind == "bool":
            out[key] = val.lower() not in ("false", "0") if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(args):
                    raise UsageError(f"flag needs an argument: {name}")
                val = args[i]
            if kind == "multi":
                out.setdefault(key, []).append(val)
            else:
                out[key] = val
        i += 1
    return out, pos


class _Ctx:
    def __init__(self, g: dict[str, Any]) -> None:
        self.g = g
        self.root = os.path.abspath(g.get("root") or DEFAULT_ROOT)


def _one_id(pos: list[str], verb: str) -> str:
    if len(pos) != 1:
        raise UsageError(f'"{verb}" requires exactly 1 argument (container id)')
    return pos[0]


def _opts(ctx: _Ctx, f: dict[str, Any]) -> Any:
    from isle.runtime.container import Options

    try:
        pf = int(f.get("preserve_fds") or 0)
    except ValueError:
        raise UsageError(f"--preserve-fds: not a number: {f.get('preserve_fds')!r}") from None
    if pf < 0:
        raise UsageError(f"--preserve-fds: must not be negative: {pf}")
    pf += _listen_fds()
    return Options(bundle=f.get("bundle"), pid_file=f.get("pid_file"),
                   console_socket=f.get("console_socket"), no_pivot=f.get("no_pivot"),
                   no_new_keyring=f.get("no_new_keyring"),
                   preserve_fds=pf, systemd_cgroup=ctx.g.get("systemd_cgroup"))


def _listen_fds() -> int:
    """Sockets handed over by systemd socket activation (LISTEN_FDS for this pid, from fd 3):
    the container's process gets them, as with runc; every other inherited fd is closed."""
    try:
        if int(os.environ.get("LISTEN_PID") or -1) != os.getpid():
            return 0
        return max(0, int(os.environ.get("LISTEN_FDS") or 0))
    except ValueError:
        return 0


def cmd_create(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, _CREATE)
    from isle.runtime.container import create

    create(ctx.root, _one_id(pos, "create"), _opts(ctx, f))
    return 0


def cmd_run(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, _RUN)
    from isle.runtime.container import run

    return run(ctx.root, _one_id(pos, "run"), _opts(ctx, f), bool(f.get("detach")))


def cmd_start(ctx: _Ctx, args: list[str]) -> int:
    _, pos = _parse(args, {})
    from isle.runtime.container import start

    start(ctx.root, _one_id(pos, "start"))
    return 0


def _print_json(obj: Any, indent: bool = False) -> None:
    if indent:
        import json

        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
        return
    from isle.oci.fastjson import dumps  # `state` is called often by engines: skip json's re

    sys.stdout.write(dumps(obj) + "\n")


def cmd_state(ctx: _Ctx, args: list[str]) -> int:
    _, pos = _parse(args, {})
    from isle.runtime.state import Container

    _print_json(Container(ctx.root, _one_id(pos, "state")).load().oci_state())
    return 0


def cmd_kill(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, {"-a": ("all", "bool"), "--all": ("all", "bool")})
    if len(pos) not in (1, 2):
        raise UsageError('"kill" requires 1 or 2 arguments: container id [signal]')
    from isle.runtime.container import kill
    from isle.runtime.plan import parse_signal

    kill(ctx.root, pos[0], parse_signal(pos[1] if len(pos) > 1 else "SIGTERM"),
         bool(f.get("all")))
    return 0


def cmd_delete(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, {"-f": ("force", "bool"), "--force": ("force", "bool")})
    from isle.runtime.container import delete

    if not pos:
        raise UsageError('"delete" requires at least 1 argument (container id)')
    for cid in pos:
        delete(ctx.root, cid, bool(f.get("force")))
    return 0


def cmd_pause(ctx: _Ctx, args: list[str]) -> int:
    from isle.runtime.container import pause

    pause(ctx.root, _one_id(_parse(args, {})[1], "pause"))
    return 0


def cmd_resume(ctx: _Ctx, args: list[str]) -> int:
    from isle.runtime.container import resume

    resume(ctx.root, _one_id(_parse(args, {})[1], "resume"))
    return 0


def cmd_list(ctx: _Ctx, args: list[str]) -> int:
    f, _ = _parse(args, {"-f": ("format", "str"), "--format": ("format", "str"),
                         "-q": ("quiet", "bool"), "--quiet": ("quiet", "bool")})
    from isle.runtime.state import Container

    ctrs = Container.list(ctx.root)
    if f.get("quiet"):
        for c in ctrs:
            print(c.id)
        return 0
    states = [c.oci_state() for c in ctrs]
    fmt = f.get("format") or "table"
    if fmt == "json":
        _print_json(states)
        return 0
    if fmt != "table":
        raise UsageError(f"invalid format option {fmt!r} (table or json)")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root")
             for s in states]
    w = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("   ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
    return 0


def cmd_ps(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, {"-f": ("format", "str"), "--format": ("format", "str")})
    if not pos:
        raise UsageError('"ps" requires a container id')
    from isle.runtime.state import Container

    ctr = Container(ctx.root, pos[0]).load()
    cg = ctr.cgroup()
    pids = sorted(cg.pids()) if cg is not None else ([ctr.pid] if ctr.pid else [])
    if (f.get("format") or "table") == "json":
        _print_json(pids)
        return 0
    from isle.sys.proc import run

    out = run(["ps"] + (pos[1:] or ["-ef"]), timeout=10).stdout.decode()
    lines = out.splitlines()
    if not lines:
        return 0
    hdr = lines[0].split()
    col = hdr.index("PID") if "PID" in hdr else 1
    print(lines[0])
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > col and parts[col].isdigit() and int(parts[col]) in pids:
            print(line)
    return 0


def cmd_exec(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, _EXEC)
    if not pos:
        raise UsageError('"exec" requires a container id')
    from isle.runtime.container import exec_process
    from isle.runtime.exec_spec import build_process

    cid = pos[0]
    proc = build_process(ctx.root, cid, f, pos[1:])
    opts = _opts(ctx, f)
    return exec_process(ctx.root, cid, proc, opts, bool(f.get("detach")))


def cmd_features(ctx: _Ctx, args: list[str]) -> int:
    from isle.runtime.features import features

    _print_json(features(), indent=True)
    return 0


def cmd_spec(ctx: _Ctx, args: list[str]) -> int:
    f, _ = _parse(args, {"-b": ("bundle", "str"), "--bundle": ("bundle", "str"),
                         "--rootless": ("rootless", "bool")})
    import json

    from isle.oci.runtime_spec import default_spec

    path = os.path.join(f.get("bundle") or ".", "config.json")
    if os.path.exists(path):
        raise UsageError("File config.json exists. Remove it first")
    with open(path, "w") as fh:
        fh.write(json.dumps(default_spec(bool(f.get("rootless"))), indent="\t") + "\n")
    return 0


#: runc update's per-field flags -> (resources section, key, parser)
_UPDATE_FLAGS = {
    "--memory": ("memory", "limit", "bytes"), "-m": ("memory", "limit", "bytes"),
    "--memory-reservation": ("memory", "reservation", "bytes"),
    "--memory-swap": ("memory", "swap", "bytes"), "--kernel-memory": ("memory", "kernel", "bytes"),
    "--kernel-memory-tcp": ("memory", "kernelTCP", "bytes"),
    "--cpu-shares": ("cpu", "shares", "int"), "--cpu-quota": ("cpu", "quota", "int"),
    "--cpu-period": ("cpu", "period", "int"), "--cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "--cpu-rt-period": ("cpu", "realtimePeriod", "int"), "--cpuset-cpus": ("cpu", "cpus", "str"),
    "--cpuset-mems": ("cpu", "mems", "str"), "--pids-limit": ("pids", "limit", "int"),
    "--blkio-weight": ("blockIO", "weight", "int"),
}


def _update_value(flag: str, kind: str, raw: str) -> Any:
    if kind == "str":
        return raw
    if kind == "bytes":
        if raw == "-1":
            return -1
        low = raw.strip().lower().removesuffix("b")
        mult = 1 << 10 * "kmgt".index(low[-1]) + 10 if low[-1:] in ("k", "m", "g", "t") else 1
        try:
            return int(float(low[:-1] if mult > 1 else low) * mult)
        except ValueError:
            raise UsageError(f"update: {flag}: not a size: {raw!r} (e.g. 512m)") from None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"update: {flag}: not a number: {raw!r}") from None


def cmd_update(ctx: _Ctx, args: list[str]) -> int:
    """runc update: resources as LinuxResources JSON from --resources FILE (- for stdin: what
    containerd's runc shim and podman send), or runc's per-field flags (applied over it)."""
    spec = {"-r": ("resources", "str"), "--resources": ("resources", "str")}
    spec.update({k: (k, "str") for k in _UPDATE_FLAGS})
    spec["--l3-cache-schema"] = ("l3", "str")
    spec["--mem-bw-schema"] = ("mbw", "str")
    f, pos = _parse(args, spec)
    import json

    from isle.runtime.state import Container

    cid = _one_id(pos, "update")
    if f.get("l3") or f.get("mbw"):
        raise UsageError("update: Intel RDT (--l3-cache-schema, --mem-bw-schema) is not "
                         "supported by isle-runtime")
    src = f.get("resources")
    res: dict[str, Any] = {}
    if src:
        try:
            data = sys.stdin.read() if src == "-" else open(src).read()
            res = json.loads(data) if data.strip() else {}
        except OSError as e:
            raise UsageError(f"update: --resources {src}: {e.strerror}") from None
        except ValueError as e:
            raise UsageError(f"update: --resources {src}: not JSON: {e}") from None
        if not isinstance(res, dict):
            raise UsageError(f"update: --resources {src}: not a JSON object (LinuxResources)")
    for flag, (section, key, kind) in _UPDATE_FLAGS.items():
        raw = f.get(flag)
        if raw is not None:
            res.setdefault(section, {})[key] = _update_value(flag, kind, raw)
    if not src and not res:
        raise UsageError("update: nothing to update: give --resources FILE|- or a resource flag")
    ctr = Container(ctx.root, cid).load()
    if ctr.status() == "stopped":
        raise UsageError(f"update: container {cid} is not running")
    cg = ctr.cgroup()
    if cg is None:
        raise UsageError(f"update: container {cid} has no cgroup")
    cg.set(res)
    return 0


def cmd_checkpoint(ctx: _Ctx, args: list[str]) -> int:
    raise UsageError("checkpoint: not supported by isle-runtime (no CRIU checkpoint/restore)")


def cmd_restore(ctx: _Ctx, args: list[str]) -> int:
    raise UsageError("restore: not supported by isle-runtime (no CRIU checkpoint/restore)")


def _runc_stats(st: dict[str, Any]) -> dict[str, Any]:
    """isle's cgroup stats in runc's events shape (runc types.Stats: cpu.usage.total,
    memory.usage.usage, pids.current, blkio.ioServiceBytesRecursive...), what callers of
    `runc events` parse; isle's own fields ride along under "isle"."""
    cpu, mem, pids = st.get("cpu") or {}, st.get("memory") or {}, st.get("pids") or {}
    unlimited = (1 << 63) - 4096  # runc prints the kernel's "no limit"
    raw = {k: v for k, v in (mem.get("stat") or {}).items() if isinstance(v, int)}
    return {
        "cpu": {"usage": {"total": cpu.get("usage_ns", 0), "percpu": cpu.get("percpu_ns") or [],
                          "kernel": cpu.get("system_ns", 0), "user": cpu.get("user_ns", 0)},
                "throttling": {"throttledPeriods": cpu.get("throttled_periods", 0),
                               "throttledTime": cpu.get("throttled_ns", 0)}},
        "memory": {"cache": raw.get("cache", raw.get("file", 0)),
                   "usage": {"limit": mem.get("limit") or unlimited,
                             "usage": mem.get("usage") or 0, "max": mem.get("max_usage") or 0,
                             "failcnt": mem.get("failcnt", 0)},
                   "raw": raw},
        "pids": {"current": pids.get("current") or 0,
                 "limit": pids.get("limit") if isinstance(pids.get("limit"), int) else 0},
        "blkio": {"ioServiceBytesRecursive": [
            {"major": e["major"], "minor": e["minor"], "op": e["op"].capitalize(),
             "value": e["value"]} for e in (st.get("io") or {}).get("service_bytes") or []]},
        "isle": {"oom_kills": st.get("oom_kills", 0)},
    }


def _stats_event(ctr: Any) -> dict[str, Any]:
    cg = ctr.cgroup()
    st = cg.stats() if cg is not None else {}
    if cg is not None:
        st["oom_kills"] = cg.oom_kills()
    return {"type": "stats", "id": ctr.id, "data": _runc_stats(st)}


def cmd_events(ctx: _Ctx, args: list[str]) -> int:
    """runc events: --stats prints one stats event; otherwise a stats event every --interval
    (default 5s) and an oom event for each new OOM kill, until the container stops."""
    f, pos = _parse(args, {"--stats": ("stats", "bool"), "--interval": ("interval", "str")})
    from isle.runtime.state import Container

    cid = _one_id(pos, "events")
    ctr = Container(ctx.root, cid).load()
    if f.get("stats"):
        _print_json(_stats_event(ctr))
        return 0
    iv = (f.get("interval") or "5s").strip()
    try:
        secs = float(iv[:-2]) / 1000 if iv.endswith("ms") else float(iv.rstrip("s"))
    except ValueError:
        raise UsageError(f"events: --interval: not a duration: {iv!r} (e.g. 5s)") from None
    if secs <= 0:
        raise UsageError("events: --interval must be greater than 0")
    import time

    ooms = None
    while True:
        ctr = Container(ctx.root, cid).load()
        if ctr.status() == "stopped":
            return 0
        ev = _stats_event(ctr)
        n = ev["data"]["isle"].get("oom_kills")
        if ooms is not None and n is not None and n > ooms:
            _print_json({"type": "oom", "id": cid})
        ooms = n
        _print_json(ev)
        sys.stdout.flush()
        time.sleep(secs)


COMMANDS: dict[str, Callable[[_Ctx, list[str]], int]] = {
    "create": cmd_create, "start": cmd_start, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "run": cmd_run, "exec": cmd_exec, "list": cmd_list, "ps": cmd_ps,
    "pause": cmd_pause, "resume": cmd_resume, "features": cmd_features, "spec": cmd_spec,
    "update": cmd_update, "events": cmd_events, "checkpoint": cmd_checkpoint,
    "restore": cmd_restore,
}

_USAGE = """usage: isle-runtime [global flags] COMMAND [flags] [args]

isle's runc-compatible OCI runtime.

commands: create start state kill delete run exec list ps pause resume features spec update events
          checkpoint restore (both refused: no CRIU)
global flags: --root DIR (default /run/isle-runtime) --log FILE --log-format text|json --debug
              --systemd-cgroup
"""


def _log(g: dict[str, Any], level: str, msg: str) -> None:
    path = g.get("log")
    if not path:
        return
    import time

    from isle.oci.fastjson import dumps

    t = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
    if g.get("log_format") == "json":
        line = dumps({"level": level, "msg": msg, "time": ts})
    else:
        line = f'time="{ts}" level={level} msg={dumps(msg)}'
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


#: verbs that name a container by id only: they follow a VM container's state (_vm_handoff)
_ID_VERBS = ("start", "state", "kill", "delete", "exec", "ps", "pause", "resume", "update",
             "events")


def _vm_handoff(root: str, cmd: str, args: list[str]) -> int | None:
    """The annotation hand-off (docs/design.md): a bundle whose config.json says
    org.isle.isolation=vm runs in isle's VM runtime, for callers that can name one runtime binary
    only (containerd BinaryName, podman --runtime); its state lives under <root>/vm and the
    id-only verbs follow it. None: not a VM container, isle-runtime runs it. Costs one read of
    config.json (create/run) or one stat (other verbs) on the container path."""
    if cmd in ("create", "run"):
        bundle = "."
        for i, a in enumerate(args):
            if a in ("-b", "--bundle") and i + 1 < len(args):
                bundle = args[i + 1]
            elif a.startswith("--bundle="):
                bundle = a.split("=", 1)[1]
        try:
            with open(os.path.join(bundle, "config.json"), "rb") as f:
                if b"org.isle.isolation" not in f.read():
                    return None
        except OSError:
            return None  # the verb reports it
        from isle.runtime.vm import wants_vm

        if not wants_vm(bundle):
            return None
    elif cmd in _ID_VERBS:
        if not os.path.isdir(os.path.join(root, "vm")):  # isle.runtime.vm.vm_root, unimported
            return None
        from isle.runtime.vm import owns

        if not any(owns(root, a) for a in args if not a.startswith("-")):
            return None
    else:
        return None
    from isle.runtime.vm import dispatch, vm_root

    return dispatch(["--root", vm_root(root), cmd, *args])


def main(argv: list[str] | None = None) -> int:
    from isle.errors import IsleError
    from isle.runtime.state import trace

    trace("main")

    args = sys.argv[1:] if argv is None else argv
    g: dict[str, Any] = {}
    try:
        g, rest = _parse(args, _GLOBAL)
        if g.get("version"):
            print(f"isle-runtime version {VERSION}\nspec: 1.0.2")
            return 0
        if g.get("help") or not rest:
            sys.stdout.write(_USAGE)
            return 0 if g.get("help") else 1
        if g.get("log_format") not in (None, "text", "json"):
            raise UsageError(f"--log-format: unknown format {g['log_format']!r} (text or json)")
        cmd = rest[0]
        if cmd not in COMMANDS:
            raise UsageError(f"No help topic for '{cmd}'")
        if g.get("debug"):
            _log(g, "debug", "isle-runtime " + " ".join(args))
        ctx = _Ctx(g)
        handed = _vm_handoff(ctx.root, cmd, rest[1:])
        if handed is not None:
            return handed
        return COMMANDS[cmd](ctx, rest[1:])
    except (IsleError, UsageError) as exc:
        msg = str(exc)
    except OSError as exc:
        msg = str(exc)
        if g.get("debug"):
            import traceback

            traceback.print_exc()
    except ValueError as exc:
        msg = f"invalid input: {exc}"
    except KeyboardInterrupt:
        return 130
    sys.stderr.write(f"isle-runtime: {msg}\n")
    _log(g, "error", msg)
    return 1


def exit_fast(code: int) -> None:
    """Flush stdio and _exit(code): skips the interpreter's teardown (module and GC clean-up,
    ~5 ms), which the lean launcher's caller would otherwise wait for."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    os._exit(code)
