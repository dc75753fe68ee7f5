"""`isle volume create/ls/inspect/rm/prune`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["register", "volume"]


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


@click.group("volume")
def volume() -> None:
    """Manage named volumes."""


@volume.command("create")
@click.option("-d", "--driver", default="local", help="Volume driver (local is the one isle has).")
@click.option("-l", "--label", multiple=True, help="Set a label: KEY=VALUE.")
@click.option("-o", "--opt", multiple=True, help="(accepted) driver option KEY=VALUE.")
@click.argument("name", required=False, default="")
@click.pass_context
def create(ctx: click.Context, driver: str, label: tuple[str, ...], opt: tuple[str, ...],
           name: str) -> int:
    """Create a volume (a random name when none given)."""
    from isle.engine.options import parse_labels

    v = ctx.obj.engine.volumes.create(name, parse_labels(list(label)), driver)
    _out(v.name)
    return 0


_VOL_HEAD = {"Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT"}


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only volume names.")
@click.option("--format", "fmt", default="",
              help="table (default), json, a Go template ({{.Name}}), or 'table TEMPLATE'.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="name=PART, label=KEY[=VALUE], dangling=true|false.")
@click.pass_context
def ls(ctx: click.Context, quiet: bool, fmt: str, filters: tuple[str, ...]) -> int:
    """List volumes."""
    from isle.cli.templates import format_rows
    from isle.errors import ConfigError

    vols = ctx.obj.engine.volumes.list()
    for f in filters:
        k, _, v = f.partition("=")
        if k == "name":
            vols = [x for x in vols if v in x.name]
        elif k == "label":
            lk, _, lv = v.partition("=")
            vols = [x for x in vols if lk in x.labels and (not lv or x.labels[lk] == lv)]
        elif k == "dangling":
            users = ctx.obj.engine.volume_users
            want = v in ("true", "1")
            vols = [x for x in vols if (not users(x.name)) == want]
        else:
            raise ConfigError("--filter", f"invalid filter {k!r} (name, label, dangling)")
    if quiet:
        for vol in vols:
            _out(vol.name)
        return 0
    rows = [{"Name": v.name, "Driver": v.driver, "Mountpoint": v.mountpoint, "Scope": "local",
             "Labels": ",".join(f"{a}={b}" for a, b in v.labels.items())} for v in vols]

    def table() -> None:
        _out(f"{'DRIVER':<16}VOLUME NAME")
        for r in rows:
            _out(f"{r['Driver']:<16}{r['Name']}")

    format_rows(fmt, rows, table, _VOL_HEAD)
    return 0


@volume.command("inspect")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template per volume.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str, names: tuple[str, ...]) -> int:
    """Docker-compatible JSON for volumes."""
    from isle.cli.templates import format_one

    out: list[Any] = [ctx.obj.engine.volumes.inspect(n) for n in names]
    if fmt:
        for d in out:
            _out(format_one(fmt, d))
    else:
        _out(json.dumps(out, indent=4))
    return 0


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove even a volume containers use.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, names: tuple[str, ...]) -> int:
    """Remove volumes (refused while a container uses them)."""
    for n in names:
        ctx.obj.engine.volume_rm(n, force=force)
        _out(n)
    return 0


@volume.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask (isle never asks).")
@click.option("-a", "--all", "all_", is_flag=True, help="Named volumes too, not only anonymous.")
@click.pass_context
def prune(ctx: click.Context, force: bool, all_: bool) -> int:
    """Remove unused anonymous volumes (-a: all unused)."""
    from isle.cli.tables import print_pruned

    print_pruned("Volumes", ctx.obj.engine.volume_prune(all=all_))
    return 0


def register(cli: click.Group) -> None:
    """Add the `volume` group."""
    cli.add_command(volume)
