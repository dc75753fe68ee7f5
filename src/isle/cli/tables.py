"""Tables and `ps` rows as text (no click: the `ps` fast path prints through here too)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["_table", "_print_rows", "_HEAD", "human_size"]


def human_size(n: float, *, binary: bool = False, precision: int = 4) -> str:
    """Docker's sizes: decimal units (units.HumanSize: images, df) or binary ones (BytesSize:
    memory), to `precision` significant digits."""
    step, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else \
        (1000, ("B", "kB", "MB", "GB", "TB"))
    for unit in units:
        if n < step:
            return f"{n:.{precision}g}{unit}"
        n /= step
    return f"{n:.{precision}g}{'PiB' if binary else 'PB'}"


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def print_pruned(kind: str, rep: Any) -> None:
    """A prune's report (engine/reports.PruneReport) as Docker prints it."""
    if rep.deleted:
        _out(f"Deleted {kind}:")
        for d in rep.deleted:
            _out(d)
    _out(f"Total reclaimed space: {rep.reclaimed}B")


def _table(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        _out("   ".join(cells).rstrip())


def _print_rows(rows: list[Any], fmt: str, no_trunc: bool) -> None:
    if fmt and fmt != "table":
        from isle.cli.templates import format_rows

        format_rows(fmt, [r.template_fields() for r in rows], lambda: None, _HEAD)
        return
    table = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "ISOLATION",
               "NAMES"]]
    for r in rows:
        cmd = r.Command if no_trunc or len(r.Command) <= 22 else r.Command[:19] + '…"'
        table.append([r.full_id if no_trunc else r.ID, r.Image, cmd, r.RunningFor, r.Status,
                      r.Ports, r.Isolation, r.Names])
    _table(table)


_HEAD = {"ID": "CONTAINER ID", "Names": "NAMES", "Image": "IMAGE", "Command": "COMMAND",
         "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Status": "STATUS", "State": "STATE",
         "Ports": "PORTS", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
         "Size": "SIZE", "ImageID": "IMAGE ID", "LocalVolumes": "LOCAL VOLUMES",
         "Isolation": "ISOLATION"}
