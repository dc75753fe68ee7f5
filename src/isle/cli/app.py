"""The click command tree of `isle` (the fast path in main.py serves plain run/create without it)."""

from __future__ import annotations

import click

from isle.cli.ctx import Ctx

__all__ = ["cli", "register", "OWN_VERBS"]

#: verbs served by container/volume/system alone: for them the image and network CLIs stay unimported
OWN_VERBS = {"run", "create", "start", "stop", "restart", "kill", "rm", "ps", "logs", "exec", "wait",
             "top", "stats", "cp", "pause", "unpause", "rename", "port", "diff", "commit", "export",
             "events", "volume", "info", "version", "demo", "system"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="ISLE_ROOT", help="Persistent state (images, volumes, db).")
@click.option("--runroot", envvar="ISLE_RUNROOT", help="Runtime state (monitor files, sockets).")
@click.option("--runtime-default", "runtime", envvar="ISLE_RUNTIME", hidden=True)
@click.version_option(package_name="isle", prog_name="isle")
@click.pass_context
def cli(ctx: click.Context, root: str | None, runroot: str | None, runtime: str | None) -> None:
    """isle: run OCI images as hardened containers or inside QEMU microVMs."""
    ctx.obj = Ctx(root, runroot, runtime)


def register(verb: str = "") -> None:
    from isle.cli import container, system, volume

    container.register(cli)
    volume.register(cli)
    system.register(cli)
    if verb in OWN_VERBS:
        return
    try:
        from isle.cli import images
    except ImportError:
        images = None  # type: ignore[assignment]
    if images is not None and hasattr(images, "register"):
        images.register(cli)
    try:
        from isle.cli import network
    except ImportError:
        network = None  # type: ignore[assignment]
    if network is not None and hasattr(network, "register"):
        network.register(cli)
    if verb == "vm" or not verb:
        from isle.cli import vm

        vm.register(cli)
    if verb == "lint" or not verb:
        from isle.cli import lint

        lint.register(cli)
    if verb in ("bench", "advise") or not verb:
        from isle.cli import bench

        bench.register(cli)
    if verb == "kube" or not verb:
        from isle.cli import kube

        kube.register(cli)
