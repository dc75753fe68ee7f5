"""Live-build markers: which RUN steps of `isle build` are in flight, and whose builder is gone.

Each live RUN step has a small record ``<runroot>/build-steps/isle-build-<n>`` naming its
builder (pid and start time, so a reused pid is not taken for the builder). A build killed
outright (SIGKILL, also of its process group) leaves its step's overlay mounted, its runtime
state and cgroups behind; every command that opens the engine asks ``sweep_if_dead``: one
directory listing when no build is running (the start path of `isle run`/`isle ps` pays ~10 µs),
a record read per live step otherwise, and the full clean-up (``buildrun.RunSandbox.sweep``)
only when a builder is dead.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from isle.config import Settings

__all__ = ["STEPS_DIR", "start_time", "owner_alive", "read_step", "dead_steps", "sweep_if_dead"]

STEPS_DIR = "build-steps"
PREFIX = "isle-build-"


def start_time(pid: int) -> int:
    """The process's start time in clock ticks; 0: no such pid."""
    from isle.sys.procfs import start_time as st

    return st(pid) or 0


def owner_alive(rec: dict[str, Any]) -> bool:
    """The builder that wrote the record still runs (same pid and the same start time)."""
    st = rec.get("owner_start")
    return bool(st) and start_time(int(rec.get("owner") or 0)) == st


def read_step(steps_dir: str, name: str) -> dict[str, Any] | None:
    from isle.oci.fastjson import loads

    try:
        with open(os.path.join(steps_dir, name), "rb") as f:
            rec = loads(f.read())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def dead_steps(runroot: str) -> list[str]:
    """The step records under runroot whose builder is gone (cheap: no step, one listdir)."""
    d = os.path.join(runroot, STEPS_DIR)
    try:
        names = [n for n in os.listdir(d) if n.startswith(PREFIX)]
    except OSError:
        return []
    out = []
    for n in names:
        rec = read_step(d, n)
        if rec is not None and not owner_alive(rec):
            out.append(n)
    return out


def sweep_if_dead(settings: Settings) -> list[str]:
    """Clean up what killed builds left (overlay, runtime state, cgroups, network): -> the steps
    swept. Nothing to do (the common case) costs one directory listing."""
    if not dead_steps(settings.runroot):
        return []
    from isle.engine.buildrun import sweep_dead_builds
    from isle.image.store import ImageStore

    return sweep_dead_builds(settings, ImageStore.from_settings(settings).unmount_rootfs)
