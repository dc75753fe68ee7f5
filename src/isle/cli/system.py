"""`isle info`, `isle version`, `isle system df/prune/info`, and `isle demo`."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

__all__ = ["register"]


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def register(cli: click.Group) -> None:
    @click.command("info")
    @click.option("-f", "--format", "fmt", default="")
    @click.pass_context
    def info(ctx: click.Context, fmt: str) -> int:
        """Facts about this host and isle's state."""
        from isle.engine.views import render_template

        d = ctx.obj.engine.info()
        if fmt == "json":
            _out(json.dumps(d, indent=2))
        elif fmt:
            _out(render_template(fmt, d))
        else:
            for k, v in d.items():
                _out(f"{k}: {v}")
        return 0

    @click.command("version")
    @click.option("-f", "--format", "fmt", default="")
    def version(fmt: str) -> int:
        """isle's version and the versions of what it drives."""
        import platform
        from importlib.metadata import version as v

        d = {"Client": {"Version": v("isle"), "Python": platform.python_version(),
                        "Os": "linux", "Arch": platform.machine()}}
        if fmt == "json":
            _out(json.dumps(d))
        else:
            for k, x in d["Client"].items():
                _out(f"{k}: {x}")
        return 0

    @click.command("demo")
    @click.pass_context
    def demo(ctx: click.Context) -> int:
        """Run busybox through the engine and say what happened."""
        from isle.cli.demo import run_demo

        return run_demo(ctx.obj)

    @click.group("system")
    def system() -> None:
        """Manage isle itself."""

    @system.command("df")
    @click.option("-v", "--verbose", is_flag=True)
    @click.pass_context
    def df(ctx: click.Context, verbose: bool) -> int:
        """Disk usage of images, containers and volumes."""
        rows = ctx.obj.engine.system_df()
        _out(f"{'TYPE':<16}{'TOTAL':<8}{'ACTIVE':<8}{'SIZE':<12}RECLAIMABLE")
        for r in rows:
            _out(f"{r['Type']:<16}{r['Total']:<8}{r['Active']:<8}{_h(r['Size']):<12}"
                 f"{_h(r['Reclaimable'])}")
        return 0

    @system.command("prune")
    @click.option("-f", "--force", is_flag=True)
    @click.option("-a", "--all", "all_", is_flag=True)
    @click.option("--volumes", is_flag=True)
    @click.pass_context
    def prune(ctx: click.Context, force: bool, all_: bool, volumes: bool) -> int:
        """Remove stopped containers, unused images (dangling; -a all) and, with --volumes, volumes."""
        rep: dict[str, Any] = ctx.obj.engine.system_prune(all_images=all_, volumes=volumes)
        for k, v in rep.items():
            if v:
                _out(f"Deleted {k}:")
                for x in v:
                    _out(x)
        return 0

    @system.command("service")
    @click.option("-H", "--host", "host", default="", metavar="URI",
                  help="Where to listen: unix:///PATH (default unix://<runroot>/docker.sock as "
                       "root: /run/isle/docker.sock).")
    @click.option("-t", "--time", "idle", type=int, default=5, show_default=True,
                  help="Exit after this many idle seconds with no request; 0 serves forever.")
    @click.option("--tlsverify", is_flag=True,
                  help="Required for a tcp:// host (client certificates); not supported yet.")
    @click.option("--debug", is_flag=True, help="Log each request to stderr.")
    @click.argument("uri", required=False, default="")
    @click.pass_context
    def service(ctx: click.Context, host: str, idle: int, tlsverify: bool, debug: bool,
                uri: str) -> int:
        """Serve the Docker Engine API, so docker, docker-py and compose drive isle.

        Point clients at it with DOCKER_HOST=unix:///run/isle/docker.sock. The socket is 0660,
        group `isle` when that group exists (membership is root-equivalent, as Docker's group).
        Under systemd socket activation (LISTEN_FDS) the inherited socket is used."""
        import grp

        from isle.api import service as serve_api
        from isle.errors import ConfigError

        where = uri or host
        s = ctx.obj.settings
        if not where:
            where = "unix://" + os.path.join(s.runroot, "docker.sock")
        if where.startswith("tcp://") or where.startswith("http"):
            raise ConfigError("--host", f"{where}: isle serves the API on a unix socket only; a "
                              "TCP listener needs TLS with client certificates (--tlsverify), "
                              "which this isle does not offer yet")
        if not where.startswith("unix://"):
            raise ConfigError("--host", f"{where}: want unix:///PATH")
        path = where[len("unix://"):]
        listen_fd = None
        if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
            listen_fd = 3
        try:
            gid: int | None = grp.getgrnam("isle").gr_gid
        except KeyError:
            gid = None
        serve_api(s, path, idle_timeout=idle, verbose=debug, group=gid, listen_fd=listen_fd)
        return 0

    system.add_command(info, "info")
    for c in (info, version, demo, system):
        cli.add_command(c)


def _h(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.4g}PB"
