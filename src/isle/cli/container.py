"""Container verbs: run, create, start, stop, restart, kill, rm, ps, logs, exec, inspect, wait, ..."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["register"]

F = Callable[..., Any]


def _run_options(f: F) -> F:
    from isle.cli.runflags import RUN_FLAGS

    opts: list[Callable[[F], F]] = []
    for names, dest, kind, default in RUN_FLAGS:
        if kind == "flag":
            opts.append(click.option(*names, dest, is_flag=True))
        elif kind == "multi":
            opts.append(click.option(*names, dest, multiple=True))
        elif kind == "int":
            opts.append(click.option(*names, dest, type=int, default=default))
        else:
            opts.append(click.option(*names, dest, default=default))
    opts += [click.argument("image"),
             click.argument("command", nargs=-1, type=click.UNPROCESSED)]
    for o in reversed(opts):
        f = o(f)
    return f


def _engine(ctx: click.Context) -> Any:
    return ctx.obj.engine


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def register(cli: click.Group) -> None:
    cmds: list[click.Command] = []

    def verb(*a: Any, **k: Any) -> Callable[[F], click.Command]:
        def deco(f: F) -> click.Command:
            c = click.command(*a, **k)(f)
            cmds.append(c)
            return c
        return deco

    run_ctx = {"allow_interspersed_args": False, "ignore_unknown_options": False}

    @verb("run", context_settings=run_ctx)
    @_run_options
    @click.pass_context
    def run(ctx: click.Context, **kw: Any) -> int:
        """Create and start a container; in the foreground, exit with its exit code."""
        from isle.cli.runverbs import do_run

        return do_run(ctx.obj, kw)

    @verb("create", context_settings=run_ctx)
    @_run_options
    @click.pass_context
    def create(ctx: click.Context, **kw: Any) -> int:
        """Create a container (not started); print its id."""
        from isle.cli.runverbs import do_create

        return do_create(ctx.obj, kw)

    @verb("start")
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
        for c in containers:
            _engine(ctx).start(c)
            _out(c)
        return 0

    def _each(ctx: click.Context, refs: tuple[str, ...], fn: Callable[[str], Any]) -> int:
        from isle.errors import IsleError

        rc = 0
        for r in refs:
            try:
                fn(r)
                _out(r)
            except IsleError as exc:
                if len(refs) == 1:
                    raise
                sys.stderr.write(f"isle: error: {exc}\n")
                rc = exc.exit_code
        return rc

    @verb("stop")
    @click.option("-t", "--time", "timeout", type=int, default=None)
    @click.option("-s", "--signal", "sig", default=None)
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def stop(ctx: click.Context, timeout: int | None, sig: str | None,
             containers: tuple[str, ...]) -> int:
        """Stop containers: stop signal, then SIGKILL after the timeout."""
        return _each(ctx, containers, lambda c: _engine(ctx).stop(c, timeout))

    @verb("restart")
    @click.option("-t", "--time", "timeout", type=int, default=None)
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def restart(ctx: click.Context, timeout: int | None, containers: tuple[str, ...]) -> int:
        """Restart containers."""
        return _each(ctx, containers, lambda c: _engine(ctx).restart(c, timeout))

    @verb("kill")
    @click.option("-s", "--signal", "sig", default="KILL")
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def kill(ctx: click.Context, sig: str, containers: tuple[str, ...]) -> int:
        """Send a signal (default KILL) to containers."""
        return _each(ctx, containers, lambda c: _engine(ctx).kill(c, sig))

    @verb("rm")
    @click.option("-f", "--force", is_flag=True)
    @click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def rm(ctx: click.Context, force: bool, volumes: bool, containers: tuple[str, ...]) -> int:
        """Remove containers (-f: even running ones)."""
        return _each(ctx, containers, lambda c: _engine(ctx).rm(c, force=force, volumes=volumes))

    @verb("pause")
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def pause(ctx: click.Context, containers: tuple[str, ...]) -> int:
        """Freeze all processes of containers."""
        return _each(ctx, containers, lambda c: _engine(ctx).pause(c))

    @verb("unpause")
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def unpause(ctx: click.Context, containers: tuple[str, ...]) -> int:
        """Thaw paused containers."""
        return _each(ctx, containers, lambda c: _engine(ctx).unpause(c))

    @verb("wait")
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def wait(ctx: click.Context, containers: tuple[str, ...]) -> int:
        """Block until containers stop; print their exit codes."""
        for c in containers:
            _out(str(_engine(ctx).wait(c)))
        return 0

    @verb("rename")
    @click.argument("container")
    @click.argument("new_name")
    @click.pass_context
    def rename(ctx: click.Context, container: str, new_name: str) -> int:
        """Rename a container."""
        _engine(ctx).rename(container, new_name)
        return 0

    @verb("ps")
    @click.option("-a", "--all", "all_", is_flag=True)
    @click.option("-q", "--quiet", is_flag=True)
    @click.option("-f", "--filter", "filters", multiple=True)
    @click.option("--format", "fmt", default="")
    @click.option("-n", "--last", type=int, default=-1)
    @click.option("-l", "--latest", is_flag=True)
    @click.option("--no-trunc", is_flag=True)
    @click.option("-s", "--size", is_flag=True)
    @click.pass_context
    def ps(ctx: click.Context, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str,
           last: int, latest: bool, no_trunc: bool, size: bool) -> int:
        """List containers (running; -a all)."""
        rows = _engine(ctx).ps(all=all_, filters=list(filters), last=1 if latest else last)
        if quiet:
            for r in rows:
                _out(r.full_id if no_trunc else r.ID)
            return 0
        _print_rows(rows, fmt, no_trunc)
        return 0

    @verb("inspect")
    @click.option("-f", "--format", "fmt", default="")
    @click.option("--type", "typ", default="")
    @click.option("-s", "--size", is_flag=True)
    @click.argument("objects", nargs=-1, required=True)
    @click.pass_context
    def inspect(ctx: click.Context, fmt: str, typ: str, size: bool, objects: tuple[str, ...]) -> int:
        """Docker-compatible JSON for containers (and volumes, images)."""
        from isle.engine.views import render_template
        from isle.errors import NotFound

        eng = _engine(ctx)
        out: list[Any] = []
        rc = 0
        for o in objects:
            try:
                if typ in ("", "container"):
                    try:
                        out.append(eng.inspect(o))
                        continue
                    except NotFound:
                        if typ == "container":
                            raise
                if typ in ("", "volume"):
                    try:
                        out.append(eng.volumes.inspect(o))
                        continue
                    except NotFound:
                        if typ == "volume":
                            raise
                if typ in ("", "image"):
                    out.append(_image_inspect(eng, o))
                    continue
                raise NotFound(f"no such object: {o}")
            except NotFound as exc:
                sys.stderr.write(f"isle: error: {exc}\n")
                rc = 1
        if fmt:
            for d in out:
                _out(render_template(fmt, d))
        else:
            _out(json.dumps(out, indent=4))
        return rc

    @verb("logs")
    @click.option("-f", "--follow", is_flag=True)
    @click.option("-n", "--tail", default="all")
    @click.option("--since", default="")
    @click.option("--until", default="")
    @click.option("-t", "--timestamps", is_flag=True)
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
        for stream, data in _engine(ctx).logs(container, follow=follow, tail=n, since=since,
                                              until=until, timestamps=timestamps):
            (sys.stderr if stream == "stderr" else sys.stdout).buffer.write(data)
            if follow:
                (sys.stderr if stream == "stderr" else sys.stdout).flush()
        return 0

    @verb("exec", context_settings=run_ctx)
    @click.option("-i", "--interactive", is_flag=True)
    @click.option("-t", "--tty", is_flag=True)
    @click.option("-d", "--detach", is_flag=True)
    @click.option("-e", "--env", multiple=True)
    @click.option("--env-file", multiple=True)
    @click.option("-u", "--user", default="")
    @click.option("-w", "--workdir", default="")
    @click.option("--privileged", is_flag=True)
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

    @verb("top")
    @click.argument("container")
    @click.argument("ps_args", nargs=-1)
    @click.pass_context
    def top(ctx: click.Context, container: str, ps_args: tuple[str, ...]) -> int:
        """Show a container's processes."""
        header, rows = _engine(ctx).top(container, list(ps_args) or None)
        _table([header] + rows)
        return 0

    from isle.cli import container_more

    container_more.register(verb, _engine, _out, _table)

    for c in cmds:
        cli.add_command(c)
    grp = click.Group("container", help="Manage containers (the same verbs, grouped).")
    for c in cmds:
        grp.add_command(c)
        if c.name == "ps":
            grp.add_command(c, "ls")
        if c.name == "rm":
            grp.add_command(c, "remove")
    container_more.register_group(grp, _engine, _out)
    cli.add_command(grp)


def _image_inspect(eng: Any, ref: str) -> dict[str, Any]:
    img = eng.store.resolve(ref)
    return {"Id": img.id, "RepoTags": img.names, "RepoDigests": img.repo_digests,
            "Created": img.config.get("created", ""), "Size": img.size,
            "Architecture": img.config.get("architecture", ""), "Os": img.config.get("os", ""),
            "Config": img.config.get("config", {}), "RootFS": img.config.get("rootfs", {})}


from isle.cli.tables import _HEAD, _print_rows, _table  # noqa: E402,F401
