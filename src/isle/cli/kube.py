"""`isle kube config|up|down|status`: isle's runtimes as containerd CRI runtime handlers."""

from __future__ import annotations

import json
import sys

import click

__all__ = ["register"]


def _mirrors(vals: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in vals:
        name, eq, reg = v.partition("=")
        if not eq or not name or not reg:
            raise click.BadParameter(f"{v!r}: want NAME=HOST:PORT", param_hint="--mirror")
        out.append((name, reg))
    return tuple(out)


def register(cli: click.Group) -> None:
    @cli.group("kube")
    def kube() -> None:
        """isle on a Kubernetes node: containerd's CRI with handlers runc, isle, isle-vm."""

    @kube.command("config")
    @click.option("--dir", "d", default="", help="Paths of a private node under DIR "
                  "(default: the system containerd's /var/lib/containerd, /run/containerd).")
    @click.option("--cni", is_flag=True, help="Print the CNI conflist instead.")
    @click.option("--registry", multiple=True, metavar="HOST:PORT",
                  help="A registry to pull from over plain HTTP (repeatable).")
    @click.option("--mirror", multiple=True, metavar="NAME=HOST:PORT",
                  help="Pull NAME/... (e.g. registry.k8s.io) from http://HOST:PORT (repeatable).")
    def config_cmd(d: str, cni: bool, registry: tuple[str, ...], mirror: tuple[str, ...]) -> None:
        """Print containerd's config.toml for a node (or, with --cni, its CNI network)."""
        from isle.kube.config import Node, cni_conflist, containerd_config

        m = _mirrors(mirror)
        n = Node.under(d, registry, m) if d else Node.system(registry, m)
        if cni:
            sys.stdout.write(json.dumps(cni_conflist(n), indent=2) + "\n")
        else:
            sys.stdout.write(containerd_config(n))

    @kube.command("up")
    @click.option("--dir", "d", required=True,
                  help="The node's directory (socket DIR/containerd.sock).")
    @click.option("--registry", multiple=True, metavar="HOST:PORT",
                  help="A registry to pull from over plain HTTP (repeatable).")
    @click.option("--mirror", multiple=True, metavar="NAME=HOST:PORT",
                  help="Pull NAME/... (e.g. registry.k8s.io) from http://HOST:PORT (repeatable).")
    def up_cmd(d: str, registry: tuple[str, ...], mirror: tuple[str, ...]) -> None:
        """Start a private containerd (own root, state, socket, CNI network) in the background."""
        from isle.kube.node import status, up

        n = up(d, registry, mirrors=_mirrors(mirror))
        st = status(d)
        click.echo(f"containerd {st['pid']} up: unix://{n.socket}")

    @kube.command("down")
    @click.option("--dir", "d", required=True)
    @click.option("--purge", is_flag=True, help="Also remove DIR (images included).")
    def down_cmd(d: str, purge: bool) -> None:
        """Stop the private containerd in DIR; remove its pods, shims, netns, leases, bridge."""
        from isle.kube.node import down

        for kind, items in down(d, purge).items():  # what could not be removed: say so
            click.echo(f"isle kube down: warning: left on the host: {kind}: {', '.join(items)}",
                       err=True)

    @kube.command("status")
    @click.option("--dir", "d", required=True)
    def status_cmd(d: str) -> None:
        from isle.kube.node import status

        click.echo(json.dumps(status(d), indent=2))
