"""isle-runtime: runc's command line (verbs, flags, exit codes), hand-parsed to start fast.

Errors: exit 1, the message on stderr, and in the --log file (JSON when --log-format json,
which podman reads). Only this module turns errors into exit codes.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms of start-up (it imports re)
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


def cmd_update(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, {"-r": ("resources", "str"), "--resources": ("resources", "str")},)
    import json

    from isle.runtime.state import Container

    ctr = Container(ctx.root, _one_id(pos, "update")).load()
    src = f.get("resources")
    if not src:
        raise UsageError("update: only --resources FILE (or - for stdin) is supported")
    data = sys.stdin.read() if src == "-" else open(src).read()
    cg = ctr.cgroup()
    if cg is None:
        raise UsageError("update: container has no cgroup")
    cg.set(json.loads(data))
    return 0


def cmd_events(ctx: _Ctx, args: list[str]) -> int:
    f, pos = _parse(args, {"--stats": ("stats", "bool"), "--interval": ("interval", "str")})
    from isle.runtime.state import Container

    ctr = Container(ctx.root, _one_id(pos, "events")).load()
    cg = ctr.cgroup()
    data = cg.stats() if cg is not None else {}
    if cg is not None:
        data["oom_kills"] = cg.oom_kills()
    _print_json({"type": "stats", "id": ctr.id, "data": data})
    return 0


COMMANDS: dict[str, Callable[[_Ctx, list[str]], int]] = {
    "create": cmd_create, "start": cmd_start, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "run": cmd_run, "exec": cmd_exec, "list": cmd_list, "ps": cmd_ps,
    "pause": cmd_pause, "resume": cmd_resume, "features": cmd_features, "spec": cmd_spec,
    "update": cmd_update, "events": cmd_events,
}

_USAGE = """usage: isle-runtime [global flags] COMMAND [flags] [args]

isle's runc-compatible OCI runtime.

commands: create start state kill delete run exec list ps pause resume features spec update events
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
        return COMMANDS[cmd](_Ctx(g), rest[1:])
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
