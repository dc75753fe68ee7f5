"""Container verbs: run, create, start, stop, restart, kill, rm, pause, unpause, wait, rename,
update, ps, inspect, logs, exec, top, cp, stats, port, diff, commit, export, events, and the
`container` group (the same verbs, plus ls, remove, prune, healthcheck).

Every verb is a module-level click command added by `register`; `run`/`create` are built from the
flag table in cli/run.py, which also serves them without click on the fast path.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from isle.cli.tables import _print_rows, _table, human_size, print_pruned

__all__ = ["register", "COMMANDS"]

F = Callable[..., Any]
COMMANDS: list[click.Command] = []
RUN_CTX = {"allow_interspersed_args": False, "ignore_unknown_options": False}


def _verb(*a: Any, **k: Any) -> Callable[[F], click.Command]:
    def deco(f: F) -> click.Command:
        c: click.Command = click.command(*a, **k)(f)
        COMMANDS.append(c)
        return c
    return deco


def _run_options(f: F) -> F:
    from isle.cli.run import RUN_FLAGS

    opts: list[Callable[[F], F]] = []
    for names, dest, kind, default, help_ in RUN_FLAGS:
        if kind == "flag":
            opts.append(click.option(*names, dest, is_flag=True, help=help_))
        elif kind == "bool":  # --x/--no-x; cli/main.py turns podman's --x=false into --no-x
            opts.append(click.option(*(f"{n}/--no-{n[2:]}" for n in names), dest,
                                     default=default, help=help_))
        elif kind == "multi":
            opts.append(click.option(*names, dest, multiple=True, help=help_))
        elif kind == "int":
            opts.append(click.option(*names, dest, type=int, default=default, help=help_))
        else:
            opts.append(click.option(*names, dest, default=default, help=help_))
    opts += [click.argument("image"),
             click.argument("command", nargs=-1, type=click.UNPROCESSED)]
    for o in reversed(opts):
        f = o(f)
    return f


def _engine(ctx: click.Context) -> Any:
    return ctx.obj.engine


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def _h(n: float) -> str:
    return human_size(n, binary=True)


def _or_vm(ctx: click.Context, what: str, fn: Callable[[str], Any],
           **kw: Any) -> Callable[[str], Any]:
    """fn, or for a name that is no container but a whole-OS VM, the VM's verb (engine.vmos)."""
    def run(ref: str) -> Any:
        from isle.errors import NotFound

        try:
            return fn(ref)
        except NotFound:
            from isle.engine import vmos

            if not vmos.verb(ctx.obj.settings, what, ref, **kw):
                raise
            return None
    return run


def _each(refs: tuple[str, ...], fn: Callable[[str], Any], echo: bool = True) -> int:
    """Apply fn to each container as Docker does: print each name done, report each failure
    (naming the container as the user named it), exit non-zero if any failed."""
    from isle.errors import IsleError, NotFound

    rc = 0
    for r in refs:
        try:
            try:
                fn(r)
            except NotFound as exc:
                if "no such container" in str(exc).lower():  # e.g. a lost race with another rm
                    raise NotFound(f"no such container: {r}") from None
                raise
            if echo:
                _out(r)
        except IsleError as exc:
            if len(refs) == 1:
                raise
            sys.stderr.write(f"isle: error: {exc}\n")
            rc = exc.exit_code
    return rc


# -- create and run -------------------------------------------------------------------------------
@_verb("run", context_settings=RUN_CTX)
@_run_options
@click.pass_context
def run(ctx: click.Context, /, **kw: Any) -> int:
    """Create and start a container from IMAGE; in the foreground, exit with its exit code.

    The image is pulled first when it is not here (--pull)."""
    from isle.cli.run import do_run

    return do_run(ctx.obj, kw)


@_verb("create", context_settings=RUN_CTX)
@_run_options
@click.pass_context
def create(ctx: click.Context, /, **kw: Any) -> int:
    """Create a container from IMAGE (not started); print its id."""
    from isle.cli.run import do_create

    return do_create(ctx.obj, kw)


# -- lifecycle -------------------------------------------------------------------------------------
@_verb("start")
@click.option("-a", "--attach", is_flag=True, help="Stream its output; exit with its code.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def start(ctx: click.Context, attach: bool, containers: tuple[str, ...]) -> int:
    """Start one or more created or stopped containers."""
    if attach:
        if len(containers) != 1:
            from isle.errors import ConfigError

            raise ConfigError("--attach", "attach to one container at a time")
        return int(_engine(ctx).start(containers[0], attach=True).exit_code or 0)
    return _each(containers, _or_vm(ctx, "start", lambda c: _engine(ctx).start(c)))


@_verb("stop")
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="Seconds to wait after the stop signal before SIGKILL (default: the "
                   "container's --stop-timeout).")
@click.option("-s", "--signal", "sig", default=None, help="(accepted) signal to stop with.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: int | None, sig: str | None,
         containers: tuple[str, ...]) -> int:
    """Stop containers: the stop signal, then SIGKILL after the timeout."""
    return _each(containers, _or_vm(ctx, "stop", lambda c: _engine(ctx).stop(c, timeout),
                                    timeout=timeout))


@_verb("restart")
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="Seconds to wait for the stop before SIGKILL.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def restart(ctx: click.Context, timeout: int | None, containers: tuple[str, ...]) -> int:
    """Restart containers."""
    return _each(containers, _or_vm(ctx, "restart", lambda c: _engine(ctx).restart(c, timeout),
                                    timeout=timeout))


@_verb("kill")
@click.option("-s", "--signal", "sig", default="KILL", show_default=True,
              help="Signal to send (name or number).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def kill(ctx: click.Context, sig: str, containers: tuple[str, ...]) -> int:
    """Send a signal to containers."""
    return _each(containers, _or_vm(ctx, "kill", lambda c: _engine(ctx).kill(c, sig)))


@_verb("rm")
@click.option("-f", "--force", is_flag=True, help="Kill and remove running containers too.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, volumes: bool, containers: tuple[str, ...]) -> int:
    """Remove containers (-f: even running ones)."""
    return _each(containers, _or_vm(ctx, "rm",
                                    lambda c: _engine(ctx).rm(c, force=force, volumes=volumes),
                                    force=force))


@_verb("pause")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def pause(ctx: click.Context, containers: tuple[str, ...]) -> int:
    """Freeze all processes of containers."""
    return _each(containers, lambda c: _engine(ctx).pause(c))


@_verb("unpause")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def unpause(ctx: click.Context, containers: tuple[str, ...]) -> int:
    """Thaw paused containers."""
    return _each(containers, lambda c: _engine(ctx).unpause(c))


@_verb("wait")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def wait(ctx: click.Context, containers: tuple[str, ...]) -> int:
    """Block until containers stop; print their exit codes."""
    return _each(containers, lambda c: _out(str(_engine(ctx).wait(c))), echo=False)


@_verb("rename")
@click.argument("container")
@click.argument("new_name")
@click.pass_context
def rename(ctx: click.Context, container: str, new_name: str) -> int:
    """Rename a container."""
    _engine(ctx).rename(container, new_name)
    return 0


@_verb("update")
@click.option("-m", "--memory", default=None, help="Memory limit (e.g. 512m).")
@click.option("--memory-swap", default=None,
              help="Memory plus swap limit (-1: unlimited swap).")
@click.option("--memory-reservation", default=None, help="Memory soft limit.")
@click.option("--cpus", default=None, help="Number of CPUs (e.g. 1.5).")
@click.option("-c", "--cpu-shares", default=None, help="CPU shares (relative weight).")
@click.option("--cpu-period", default=None, help="CFS period in microseconds (with --cpu-quota).")
@click.option("--cpu-quota", default=None, help="CFS quota in microseconds per period.")
@click.option("--cpuset-cpus", default=None, help="CPUs to run on (0-3, 0,1).")
@click.option("--pids-limit", default=None, help="Process limit (-1: unlimited).")
@click.option("--blkio-weight", default=None, help="Block IO weight (10 to 1000).")
@click.option("--restart", default=None, help="Restart policy (no, on-failure[:N], always, "
              "unless-stopped).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def update(ctx: click.Context, /, containers: tuple[str, ...], **kw: str | None) -> int:
    """Change containers' resource limits and restart policy (live, and kept for restarts)."""
    from isle.errors import ConfigError

    try:
        return _update(ctx, containers, kw)
    except ConfigError as exc:
        exc.exit_code = 125  # docker update's code for a bad flag value
        raise


def _update(ctx: click.Context, containers: tuple[str, ...], kw: dict[str, str | None]) -> int:
    from isle.engine import options as o
    from isle.errors import ConfigError

    def num(flag: str, raw: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(flag, f"invalid number {raw!r}") from None

    changes: dict[str, Any] = {}
    for key in ("memory", "memory_swap", "memory_reservation"):
        raw = kw[key]
        flag = "--" + key.replace("_", "-")
        if raw is not None:
            changes[key] = -1 if raw.strip() == "-1" else o.parse_bytes(flag, raw)
    for key in ("cpu_shares", "pids_limit", "blkio_weight"):
        if kw[key] is not None:
            changes[key] = num("--" + key.replace("_", "-"), str(kw[key]))
    if kw["cpus"] is not None:
        changes["cpus"] = o.parse_cpus(kw["cpus"])
    if kw["cpu_quota"] is not None:
        quota = num("--cpu-quota", kw["cpu_quota"])
        period = num("--cpu-period", kw["cpu_period"]) if kw["cpu_period"] else 100000
        if quota <= 0 or period <= 0:
            raise ConfigError("--cpu-quota", "--cpu-quota and --cpu-period must be positive")
        changes["cpus"] = quota / period
    elif kw["cpu_period"] is not None:
        raise ConfigError("--cpu-period", "needs --cpu-quota as well")
    if kw["cpuset_cpus"] is not None:
        changes["cpuset_cpus"] = kw["cpuset_cpus"]
    restart = o.parse_restart(kw["restart"]) if kw["restart"] is not None else None
    if not changes and restart is None:
        raise ConfigError("", "you must provide one or more flags when using this command")

    def one(ref: str) -> None:
        _, warnings = _engine(ctx).update(ref, changes, restart)
        for w in warnings:
            sys.stderr.write(f"WARNING: {w}\n")
    return _each(containers, one)


# -- looking at containers -------------------------------------------------------------------------
@_verb("ps")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Show all containers, not only running ones.")
@click.option("-q", "--quiet", is_flag=True, help="Only container ids.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="KEY=VALUE: id, name, label, status, exited, ancestor, network, volume, "
                   "isolation.")
@click.option("--format", "fmt", default="",
              help="table (default), json, a Go template, or 'table TEMPLATE'.")
@click.option("-n", "--last", type=int, default=-1, help="The N most recently created containers.")
@click.option("-l", "--latest", is_flag=True, help="The most recently created container.")
@click.option("--no-trunc", is_flag=True, help="Full ids and commands.")
@click.option("-s", "--size", is_flag=True, help="(accepted) show sizes.")
@click.pass_context
def ps(ctx: click.Context, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str,
       last: int, latest: bool, no_trunc: bool, size: bool) -> int:
    """List containers (running; -a all)."""
    rows = _engine(ctx).ps(all=all_, filters=list(filters), last=1 if latest else last)
    if not filters or list(filters) == ["isolation=vm-os"]:  # whole-OS VMs too
        from isle.engine import vmos

        rows = rows + vmos.ps_rows(ctx.obj.settings, all=all_)
    if quiet:
        for r in rows:
            _out(r.full_id if no_trunc else r.ID)
        return 0
    _print_rows(rows, fmt, no_trunc)
    return 0


@_verb("inspect")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template per object.")
@click.option("--type", "typ",
              type=click.Choice(["", "container", "vm", "image", "volume", "network"]),
              default="", help="Only look for this kind of object.")
@click.option("-s", "--size", is_flag=True, help="(accepted) show sizes.")
@click.argument("objects", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str, typ: str, size: bool, objects: tuple[str, ...]) -> int:
    """Docker-compatible JSON of containers, images, volumes or networks."""
    from isle.cli.templates import format_one
    from isle.errors import IsleError, NotFound

    eng = _engine(ctx)
    finders: list[tuple[str, Callable[[str], Any]]] = [
        ("container", eng.inspect), ("vm", lambda o: _vm_inspect(ctx, o)),
        ("image", lambda o: _image_inspect(eng, o)),
        ("volume", eng.volumes.inspect), ("network", lambda o: _network_inspect(ctx, o))]
    out: list[Any] = []
    rc = 0
    for o in objects:
        for kind, find in finders:
            if typ and kind != typ:
                continue
            try:
                out.append(find(o))
                break
            except NotFound:
                continue
            except IsleError:  # e.g. not a valid image reference: not an image, then
                continue
        else:
            sys.stderr.write(f"isle: error: no such {typ or 'object'}: {o}\n")
            rc = 1
    if fmt:
        for d in out:
            _out(format_one(fmt, d))
    else:
        _out(json.dumps(out, indent=4))
    return rc


def _is_container(ctx: click.Context, ref: str) -> bool:
    from isle.errors import NotFound

    try:
        _engine(ctx).get(ref)
        return True
    except NotFound:
        return False


def _vm_inspect(ctx: click.Context, ref: str) -> dict[str, Any]:
    from isle.engine import vmos
    from isle.errors import NotFound

    if not vmos.is_vm(ctx.obj.settings, ref):
        raise NotFound(f"no VM {ref}")
    return vmos.inspect_dict(ctx.obj.settings, ref)


def _image_inspect(eng: Any, ref: str) -> dict[str, Any]:
    """The same object `isle image inspect` prints (Docker's image JSON)."""
    from isle.engine.images import inspect_dict

    return inspect_dict(eng.store.resolve(ref))


def _network_inspect(ctx: click.Context, name: str) -> Any:
    from isle.cli.network import _nets

    return _nets(ctx).inspect(name)


@_verb("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new output.")
@click.option("-n", "--tail", default="all", help="Only the last N lines (or all).")
@click.option("--since", default="", help="Only output after this time (RFC 3339 or e.g. 10m).")
@click.option("--until", default="", help="Only output before this time.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with its time.")
@click.argument("container")
@click.pass_context
def logs(ctx: click.Context, follow: bool, tail: str, since: str, until: str,
         timestamps: bool, container: str) -> int:
    """Show a container's output (stdout and stderr kept apart)."""
    from isle.errors import ConfigError

    if tail == "all":
        n = -1
    elif tail.isdigit():
        n = int(tail)
    else:
        raise ConfigError("--tail", f"invalid number {tail!r}")
    from isle.engine import vmos

    if vmos.is_vm(ctx.obj.settings, container) and not _is_container(ctx, container):
        data = vmos.console_log(ctx.obj.settings, container)  # a whole-OS VM: its console
        if n >= 0:
            data = b"".join(data.splitlines(keepends=True)[-n:]) if n else b""
        sys.stdout.buffer.write(data)
        return 0
    for stream, data in _engine(ctx).logs(container, follow=follow, tail=n, since=since,
                                          until=until, timestamps=timestamps):
        (sys.stderr if stream == "stderr" else sys.stdout).buffer.write(data)
        if follow:
            (sys.stderr if stream == "stderr" else sys.stdout).flush()
    return 0


@_verb("exec", context_settings=RUN_CTX)
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open and connect it.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a pseudo-terminal.")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-e", "--env", multiple=True, help="Set an environment variable: KEY=VALUE.")
@click.option("--env-file", multiple=True, help="Read environment variables from a file.")
@click.option("-u", "--user", default="", help="Run as USER[:GROUP].")
@click.option("-w", "--workdir", default="", help="Working directory for the command.")
@click.option("--privileged", is_flag=True, help="Give the command every capability.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, interactive: bool, tty: bool, detach: bool, env: tuple[str, ...],
          env_file: tuple[str, ...], user: str, workdir: str, privileged: bool,
          container: str, command: tuple[str, ...]) -> int:
    """Run a command in a running container."""
    from isle.engine import options as O

    host = dict(os.environ)
    envs: list[str] = []
    for p in env_file:
        envs += O.parse_env_file(p, host)
    envs += O.parse_env(list(env), host)
    return int(_engine(ctx).exec(container, list(command), interactive=interactive, tty=tty,
                                 env=envs, user=user, workdir=workdir, detach=detach,
                                 privileged=privileged))


exec_.name = "exec"


@_verb("top")
@click.argument("container")
@click.argument("ps_args", nargs=-1)
@click.pass_context
def top(ctx: click.Context, container: str, ps_args: tuple[str, ...]) -> int:
    """Show a container's processes (PS_ARGS as ps(1) takes them)."""
    header, rows = _engine(ctx).top(container, list(ps_args) or None)
    _table([header] + rows)
    return 0


@_verb("cp")
@click.option("-a", "--archive", is_flag=True, help="(accepted; ownership is kept into the host)")
@click.option("-L", "--follow-link", is_flag=True,
              help="Follow a symlink given as the host source (container paths always "
                   "resolve inside the container).")
@click.argument("src")
@click.argument("dst")
@click.pass_context
def cp(ctx: click.Context, archive: bool, follow_link: bool, src: str, dst: str) -> int:
    """Copy files between a container and the host: CONTAINER:PATH <-> HOSTPATH."""
    _engine(ctx).cp(src, dst, follow_link=follow_link)
    return 0


_STATS_HEAD = {"ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
               "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "PIDs": "PIDS",
               "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "Container": "CONTAINER",
               "HostPSS": "HOST PSS"}


@_verb("stats")
@click.option("--no-stream", is_flag=True, help="One sample, then exit.")
@click.option("-a", "--all", "all_", is_flag=True, help="(accepted) all containers.")
@click.option("--format", "fmt", default="",
              help="table, json, a Go template, or 'table TEMPLATE'.")
@click.option("--no-trunc", is_flag=True, help="Full container ids.")
@click.argument("containers", nargs=-1)
@click.pass_context
def stats(ctx: click.Context, no_stream: bool, all_: bool, fmt: str, no_trunc: bool,
          containers: tuple[str, ...]) -> int:
    """CPU %, memory usage/limit and pids of running containers, from their cgroups."""
    from isle.cli.templates import format_rows
    from isle.engine import vmos

    vm_refs = [c for c in containers if vmos.is_vm(ctx.obj.settings, c)
               and not _is_container(ctx, c)]
    containers = tuple(c for c in containers if c not in vm_refs)
    if not containers and not vm_refs:
        vm_refs = vmos.vm_names(ctx.obj.settings)
    while True:
        rows = _engine(ctx).stats(list(containers) or None) if containers or not vm_refs else []
        rows += vmos.stats_rows(ctx.obj.settings, vm_refs)
        ds = []
        for r in rows:
            d = {k: v for k, v in r.items() if k != "cpu_percent"}
            d["MemUsage"] = f"{_h(r['MemUsage'])} / {_h(r['MemLimit'])}"
            d.setdefault("Container", d.get("ID", ""))
            ds.append(d)

        def default(ds: list[dict[str, Any]] = ds) -> None:
            # a VM container's memory is its guest's; what it costs the host is QEMU's PSS
            pss = any(d.get("HostPSS") for d in ds)
            t = [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]
                 + (["HOST PSS"] if pss else [])]
            for d in ds:
                t.append([d["ID"], d["Name"], d["CPUPerc"], d["MemUsage"], d["MemPerc"],
                          str(d["PIDs"])]
                         + ([_h(d["HostPSS"]) if d.get("HostPSS") else "--"] if pss else []))
            _table(t)

        format_rows(fmt, ds, default, _STATS_HEAD)
        sys.stdout.flush()
        if no_stream:
            return 0


@_verb("port")
@click.argument("container")
@click.argument("private", required=False, default="")
@click.pass_context
def port(ctx: click.Context, container: str, private: str) -> int:
    """List published ports of a container (or where PRIVATE[/PROTO] is published)."""
    for line in _engine(ctx).port(container, private):
        _out(line)
    return 0


@_verb("diff")
@click.argument("container")
@click.pass_context
def diff(ctx: click.Context, container: str) -> int:
    """Files added (A), changed (C) or deleted (D) in the container's filesystem."""
    for kind, path in _engine(ctx).diff(container):
        _out(f"{kind} {path}")
    return 0


@_verb("commit")
@click.option("-c", "--change", multiple=True,
              help="A Containerfile instruction to apply (CMD, ENV, ...).")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-a", "--author", default="", help="Author of the image.")
@click.option("-p", "--pause/--no-pause", default=True,
              help="Pause the container while committing.")
@click.argument("container")
@click.argument("repository", required=False, default="")
@click.pass_context
def commit(ctx: click.Context, change: tuple[str, ...], message: str, author: str,
           pause: bool, container: str, repository: str) -> int:
    """Make a new image from a container's changes."""
    _out(_engine(ctx).commit(container, repository, changes=list(change), message=message,
                             author=author, pause=pause))
    return 0


@_verb("export")
@click.option("-o", "--output", default="", help="Write to this file instead of stdout.")
@click.argument("container")
@click.pass_context
def export(ctx: click.Context, output: str, container: str) -> int:
    """Write the container's filesystem as a tar archive (stdout or -o FILE)."""
    from isle.errors import ConfigError

    if not output and sys.stdout.isatty():
        raise ConfigError("export", "refusing to write a tar to a terminal; use -o FILE or a pipe")
    if output:  # written beside FILE and renamed: a refused export leaves nothing behind
        tmp = f"{output}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                _engine(ctx).export(container, f)
            os.replace(tmp, output)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    else:
        _engine(ctx).export(container, sys.stdout.buffer)
    return 0


@_verb("events")
@click.option("--since", default="", help="Events from this time (RFC 3339 or e.g. 10m).")
@click.option("--until", default="", help="Events until this time; stop there.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="KEY=VALUE: type, event, container, ...")
@click.option("--format", "fmt", default="", help="json or a Go template per event.")
@click.pass_context
def events(ctx: click.Context, since: str, until: str, filters: tuple[str, ...], fmt: str) -> int:
    """Stream engine events (create, start, die, oom, destroy, ...)."""
    import time
    from datetime import datetime

    from isle.cli.templates import format_one
    from isle.engine.logs import parse_since

    t0 = parse_since(since) if since else time.time()
    t1 = parse_since(until) if until else 0.0
    for e in _engine(ctx).events(since=t0, until=t1, filters=list(filters), follow=not until):
        d = {"Type": e["type"], "Action": e["action"], "Actor": {"ID": e["actor"],
             "Attributes": e["attrs"]}, "time": int(e["time"]), "timeNano": int(e["time"] * 1e9),
             "status": e["action"], "id": e["actor"]}
        if fmt:
            _out(format_one(fmt, d))
        else:
            ts = datetime.fromtimestamp(e["time"]).astimezone().isoformat()
            attrs = ", ".join(f"{k}={v}" for k, v in e["attrs"].items())
            _out(f"{ts} {e['type']} {e['action']} {e['actor']}" + (f" ({attrs})" if attrs else ""))
        sys.stdout.flush()
    return 0


# -- the `container` group's own verbs -------------------------------------------------------------
@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask (isle never asks).")
@click.pass_context
def prune(ctx: click.Context, force: bool) -> int:
    """Remove all stopped containers."""
    print_pruned("Containers", _engine(ctx).container_prune())
    return 0


@click.command("healthcheck")
@click.option("--loop", is_flag=True, hidden=True)
@click.argument("container")
@click.pass_context
def healthcheck(ctx: click.Context, loop: bool, container: str) -> int:
    """Run a container's health check now; print healthy/unhealthy/starting."""
    from isle.engine import health

    if loop:
        health.run_loop(_engine(ctx), container)
        return 0
    status = health.check_once(_engine(ctx), container)
    _out(status)
    return 0 if status == "healthy" else 1


@click.command("cleanup", hidden=True)
@click.argument("container")
@click.pass_context
def cleanup(ctx: click.Context, container: str) -> int:
    """(conmon's exit command) record the exit, release resources, apply restart policy."""
    _engine(ctx).cleanup(container)
    return 0


def register(cli: click.Group) -> None:
    """Every container verb at the top level and in the `container` group."""
    grp = click.Group("container", help="Manage containers (the same verbs, grouped).")
    for c in COMMANDS:
        cli.add_command(c)
        grp.add_command(c)
    grp.add_command(ps, "ls")
    grp.add_command(rm, "remove")
    for c in (prune, healthcheck, cleanup):
        grp.add_command(c)
    cli.add_command(grp)

