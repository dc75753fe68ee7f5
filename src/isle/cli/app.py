"""The click command tree of `isle` (main.py's fast path serves plain run/create/ps without it)."""

from __future__ import annotations

import click

from isle.cli.ctx import Ctx

__all__ = ["cli", "register", "OWN_VERBS"]

#: verbs served by container/volume/system alone: for them the image and network CLIs stay
#: unimported
OWN_VERBS = {"run", "create", "start", "stop", "restart", "kill", "rm", "ps", "logs", "exec",
             "wait", "top", "stats", "cp", "pause", "unpause", "rename", "port", "diff", "commit",
             "export", "events", "volume", "info", "version", "demo", "system"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="ISLE_ROOT", help="Persistent state (images, volumes, db).")
@click.option("--runroot", envvar="ISLE_RUNROOT", help="Runtime state (monitor files, sockets).")
@click.option("--runtime-default", "runtime", envvar="ISLE_RUNTIME", hidden=True)
@click.version_option(package_name="isle", prog_name="isle")
@click.pass_context
def cli(ctx: click.Context, root: str | None, runroot: str | None, runtime: str | None) -> None:
    """isle: run OCI images as hardened containers or inside QEMU microVMs."""
    ctx.obj = Ctx(root, runroot, runtime)


#: every noun's module and the verbs that need it ("*": every verb but OWN_VERBS; None: always).
#: Each module has the same `register(cli)`; a plain `isle run` loads only the first three.
MODULES: list[tuple[str, object]] = [
    ("container", None), ("volume", None), ("system", None),
    ("images", "*"), ("network", "*"),
    ("vm", {"vm"}), ("lint", {"lint"}), ("bench", {"bench", "advise"}), ("kube", {"kube"}),
]


def register(verb: str = "") -> None:
    """Add the commands `verb` needs (all of them for "": help, completion) to `cli`."""
    import importlib

    for name, verbs in MODULES:
        if verb and verbs is not None and (verb in OWN_VERBS if verbs == "*"
                                           else verb not in verbs):  # type: ignore[operator]
            continue
        importlib.import_module(f"isle.cli.{name}").register(cli)
