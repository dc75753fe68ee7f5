"""More container verbs: cp, stats, port, diff, commit, export, events; `container prune/cleanup`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["register", "register_group"]


def _h(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}PiB"


def register(verb: Callable[..., Any], engine: Callable[[click.Context], Any],
             out: Callable[[str], None], table: Callable[[list[list[str]]], None]) -> None:
    @verb("cp")
    @click.option("-a", "--archive", is_flag=True, help="(accepted; ownership is kept into the host)")
    @click.option("-L", "--follow-link", is_flag=True,
                  help="Follow a symlink given as the host source (container paths always "
                       "resolve inside the container).")
    @click.argument("src")
    @click.argument("dst")
    @click.pass_context
    def cp(ctx: click.Context, archive: bool, follow_link: bool, src: str, dst: str) -> int:
        """Copy files between a container and the host: CONTAINER:PATH <-> HOSTPATH."""
        engine(ctx).cp(src, dst, follow_link=follow_link)
        return 0

    @verb("stats")
    @click.option("--no-stream", is_flag=True, help="One sample, then exit.")
    @click.option("-a", "--all", "all_", is_flag=True)
    @click.option("--format", "fmt", default="")
    @click.argument("containers", nargs=-1)
    @click.pass_context
    def stats(ctx: click.Context, no_stream: bool, all_: bool, fmt: str,
              containers: tuple[str, ...]) -> int:
        """CPU %, memory usage/limit and pids of running containers, from their cgroups."""
        from isle.engine.views import render_template

        while True:
            rows = engine(ctx).stats(list(containers) or None)
            if fmt:
                for r in rows:
                    d = {k: v for k, v in r.items() if k != "cpu_percent"}
                    d["MemUsage"] = f"{_h(r['MemUsage'])} / {_h(r['MemLimit'])}"
                    out(json.dumps(d) if fmt == "json" else render_template(fmt, d))
            else:
                t = [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]]
                for r in rows:
                    t.append([r["ID"], r["Name"], r["CPUPerc"],
                              f"{_h(r['MemUsage'])} / {_h(r['MemLimit'])}", r["MemPerc"],
                              str(r["PIDs"])])
                table(t)
            sys.stdout.flush()
            if no_stream:
                return 0

    @verb("port")
    @click.argument("container")
    @click.argument("private", required=False, default="")
    @click.pass_context
    def port(ctx: click.Context, container: str, private: str) -> int:
        """List published ports of a container."""
        for line in engine(ctx).port(container, private):
            out(line)
        return 0

    @verb("diff")
    @click.argument("container")
    @click.pass_context
    def diff(ctx: click.Context, container: str) -> int:
        """Files added (A), changed (C) or deleted (D) in the container's filesystem."""
        for kind, path in engine(ctx).diff(container):
            out(f"{kind} {path}")
        return 0

    @verb("commit")
    @click.option("-c", "--change", multiple=True)
    @click.option("-m", "--message", default="")
    @click.option("-a", "--author", default="")
    @click.option("-p", "--pause/--no-pause", default=True)
    @click.argument("container")
    @click.argument("repository", required=False, default="")
    @click.pass_context
    def commit(ctx: click.Context, change: tuple[str, ...], message: str, author: str,
               pause: bool, container: str, repository: str) -> int:
        """Make a new image from a container's changes."""
        out(engine(ctx).commit(container, repository, changes=list(change), message=message,
                               author=author, pause=pause))
        return 0

    @verb("export")
    @click.option("-o", "--output", default="")
    @click.argument("container")
    @click.pass_context
    def export(ctx: click.Context, output: str, container: str) -> int:
        """Write the container's filesystem as a tar archive (stdout or -o FILE)."""
        from isle.errors import ConfigError

        if not output and sys.stdout.isatty():
            raise ConfigError("export", "refusing to write a tar to a terminal; use -o FILE or a pipe")
        if output:
            with open(output, "wb") as f:
                engine(ctx).export(container, f)
        else:
            engine(ctx).export(container, sys.stdout.buffer)
        return 0

    @verb("events")
    @click.option("--since", default="")
    @click.option("--until", default="")
    @click.option("-f", "--filter", "filters", multiple=True)
    @click.option("--format", "fmt", default="")
    @click.pass_context
    def events(ctx: click.Context, since: str, until: str, filters: tuple[str, ...], fmt: str) -> int:
        """Stream engine events (create, start, die, oom, destroy, ...)."""
        import time
        from datetime import datetime

        from isle.engine.logs import parse_since
        from isle.engine.views import render_template

        t0 = parse_since(since) if since else time.time()
        t1 = parse_since(until) if until else 0.0
        for e in engine(ctx).events(since=t0, until=t1, filters=list(filters), follow=not until):
            d = {"Type": e["type"], "Action": e["action"], "Actor": {"ID": e["actor"],
                 "Attributes": e["attrs"]}, "time": int(e["time"]), "timeNano": int(e["time"] * 1e9),
                 "status": e["action"], "id": e["actor"]}
            if fmt == "json":
                out(json.dumps(d))
            elif fmt:
                out(render_template(fmt, d))
            else:
                ts = datetime.fromtimestamp(e["time"]).astimezone().isoformat()
                attrs = ", ".join(f"{k}={v}" for k, v in e["attrs"].items())
                out(f"{ts} {e['type']} {e['action']} {e['actor']}" + (f" ({attrs})" if attrs else ""))
            sys.stdout.flush()
        return 0


def register_group(grp: click.Group, engine: Callable[[click.Context], Any],
                   out: Callable[[str], None]) -> None:
    @grp.command("prune")
    @click.option("-f", "--force", is_flag=True)
    @click.pass_context
    def prune(ctx: click.Context, force: bool) -> int:
        """Remove all stopped containers."""
        rep = engine(ctx).container_prune()
        if rep.deleted:
            out("Deleted Containers:")
            for d in rep.deleted:
                out(d)
        out(f"Total reclaimed space: {rep.reclaimed}B")
        return 0

    @grp.command("healthcheck")
    @click.option("--loop", is_flag=True, hidden=True)
    @click.argument("container")
    @click.pass_context
    def healthcheck(ctx: click.Context, loop: bool, container: str) -> int:
        """Run a container's health check now; print healthy/unhealthy/starting."""
        from isle.engine import health

        if loop:
            health.run_loop(engine(ctx), container)
            return 0
        status = health.check_once(engine(ctx), container)
        out(status)
        return 0 if status == "healthy" else 1

    @grp.command("cleanup", hidden=True)
    @click.argument("container")
    @click.pass_context
    def cleanup(ctx: click.Context, container: str) -> int:
        """(conmon's exit command) record the exit, release resources, apply restart policy."""
        engine(ctx).cleanup(container)
        return 0
