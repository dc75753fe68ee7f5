"""More container verbs: cp, stats, port, diff, commit, export, events; `container prune/cleanup`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["register", "register_group"]


def register(verb: Callable[..., Any], engine: Callable[[click.Context], Any],
             out: Callable[[str], None], table: Callable[[list[list[str]]], None]) -> None:
    """Top-level verbs beyond the core set (added as they land)."""


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

    @grp.command("cleanup", hidden=True)
    @click.argument("container")
    @click.pass_context
    def cleanup(ctx: click.Context, container: str) -> int:
        """(conmon's exit command) record the exit, release resources, apply restart policy."""
        engine(ctx).cleanup(container)
        return 0
