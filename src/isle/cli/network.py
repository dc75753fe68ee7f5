"""`isle network` verbs: create, ls, inspect, rm, connect, disconnect, prune (one engine call
each)."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["register", "network_group"]


def _nets(ctx: click.Context) -> Any:
    from isle.config import Settings
    from isle.engine.networks import Networks

    obj = ctx.find_root().obj
    nets = getattr(obj, "networks", None)
    if nets is not None and hasattr(nets, "create"):
        return nets
    settings = obj if isinstance(obj, Settings) else getattr(obj, "settings", None) or Settings()
    return Networks(settings)


@click.group("network")
def network_group() -> None:
    """Manage networks."""


@network_group.command("create")
@click.argument("name")
@click.option("--subnet", multiple=True, help="CIDR subnet (repeat for IPv4 + IPv6)")
@click.option("--gateway", multiple=True, help="gateway address, one per subnet")
@click.option("--ip-range", multiple=True, help="allocate container addresses from this CIDR")
@click.option("--internal", is_flag=True, help="no outbound traffic, no published ports")
@click.option("--label", multiple=True, help="KEY=VALUE")
@click.option("--ipv6", is_flag=True, help="add an IPv6 subnet (a unique-local /64 if none given)")
@click.option("-d", "--driver", default="bridge", show_default=True,
              help="Network driver (bridge is the one isle has).")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE",
              help="driver option; isolate=false lets this network reach (and be reached by) the "
                   "other networks created with isolate=false (default isolate=true: no traffic "
                   "to or from containers on any other network, except through published ports)")
@click.pass_context
def create_cmd(ctx: click.Context, name: str, subnet: tuple[str, ...], gateway: tuple[str, ...],
               ip_range: tuple[str, ...], internal: bool, label: tuple[str, ...], ipv6: bool,
               driver: str, opt: tuple[str, ...]) -> None:
    """Create a bridge network.

    Networks are isolated from each other, as Docker's are: a container reaches containers on
    another network only through their published ports, or by joining that network too
    (`isle network connect`). Containers never reach host services bound only to 127.0.0.1."""
    r = _nets(ctx).create(name, subnet=subnet, gateway=gateway, ip_range=ip_range,
                          internal=internal, labels=label, ipv6=ipv6, driver=driver, options=opt)
    click.echo(r["Id"])


_NET_HEAD = {"ID": "NETWORK ID", "CreatedAt": "CREATED AT"}


def _row(n: dict[str, Any]) -> dict[str, Any]:
    """Docker's `network ls` row (strings, as its formatter gives them) plus isle's subnets."""
    return {"ID": n["Id"][:12], "Name": n["Name"], "Driver": n["Driver"], "Scope": "local",
            "IPv6": str(bool(n.get("IPv6"))).lower(),
            "Internal": str(bool(n.get("Internal"))).lower(),
            "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items()),
            "CreatedAt": n.get("Created", ""),
            "Subnets": ",".join(s["subnet"] for s in n.get("Subnets", []))}


@network_group.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only network names.")
@click.option("--format", "fmt", default="table",
              help="table (default), json, a Go template ({{.Name}}), or 'table TEMPLATE'.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="name=, id=, driver=, label=KEY[=VALUE] (repeat to narrow).")
@click.option("--no-trunc", is_flag=True, help="Full network ids.")
@click.pass_context
def ls_cmd(ctx: click.Context, quiet: bool, fmt: str, filters: tuple[str, ...],
           no_trunc: bool) -> None:
    """List networks."""
    from isle.cli.templates import format_rows

    nets = _nets(ctx).list()
    for f in filters:
        k, _, v = f.partition("=")
        if k == "name":
            nets = [n for n in nets if v in n["Name"]]
        elif k == "id":
            nets = [n for n in nets if n["Id"].startswith(v)]
        elif k == "driver":
            nets = [n for n in nets if n["Driver"] == v]
        elif k == "label":
            lk, _, lv = v.partition("=")
            nets = [n for n in nets if lk in (n.get("Labels") or {})
                    and (not lv or n["Labels"][lk] == lv)]
        else:
            from isle.errors import ConfigError

            raise ConfigError("--filter", f"invalid filter {k!r} (name, id, driver, label)")
    if quiet:
        for n in nets:
            click.echo(n["Name"])
        return
    rows = [_row(n) for n in nets]
    if no_trunc:
        for r, n in zip(rows, nets, strict=True):
            r["ID"] = n["Id"]

    def table() -> None:
        click.echo(f"{'NETWORK ID':<14}{'NAME':<24}{'DRIVER':<9}SUBNETS")
        for r in rows:
            click.echo(f"{r['ID']:<14}{r['Name']:<24}{r['Driver']:<9}{r['Subnets']}")

    format_rows(fmt, rows, table, _NET_HEAD, out=click.echo)


@network_group.command("inspect")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template per network.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect_cmd(ctx: click.Context, fmt: str, names: tuple[str, ...]) -> None:
    """Show networks and their members as JSON."""
    from isle.cli.templates import format_one

    nets = _nets(ctx)
    found = [nets.inspect(n) for n in names]
    if fmt:
        for d in found:
            click.echo(format_one(fmt, d))
    else:
        click.echo(json.dumps(found, indent=2))


@network_group.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm_cmd(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Remove networks (refused while containers are connected)."""
    for n in _nets(ctx).remove(names):
        click.echo(n)


@network_group.command("prune")
@click.option("-f", "--force", is_flag=True, help="do not ask")
@click.pass_context
def prune_cmd(ctx: click.Context, force: bool) -> None:
    """Remove all networks without containers (the default network stays)."""
    if not force:
        click.confirm("Remove all networks not used by at least one container?", abort=True)
    for n in _nets(ctx).prune():
        click.echo(n)


@network_group.command("connect")
@click.argument("network")
@click.argument("container")
@click.option("--ip", multiple=True, help="static address (IPv4 and/or IPv6)")
@click.option("--alias", multiple=True, help="extra DNS name on this network")
@click.pass_context
def connect_cmd(ctx: click.Context, network: str, container: str, ip: tuple[str, ...],
                alias: tuple[str, ...]) -> None:
    """Connect a container to a network (a created or stopped one at its next start)."""
    _nets(ctx).connect(network, container, ip=ip, aliases=alias)


@network_group.command("disconnect")
@click.argument("network")
@click.argument("container")
@click.pass_context
def disconnect_cmd(ctx: click.Context, network: str, container: str) -> None:
    """Disconnect a container from a network (a stopped one from its next start)."""
    _nets(ctx).disconnect(network, container)


def register(group: click.Group) -> None:
    """Add the `network` group to the main CLI."""
    group.add_command(network_group)
