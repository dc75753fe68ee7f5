"""The per-invocation context: settings from --root/--runroot (or env) and a lazily built Engine."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Ctx"]


class Ctx:
    """Lazily-built engine for this invocation (the CLI imports the engine only when needed)."""

    #: set by cli.main when `isle` runs as a process of its own (not called in-process)
    own_process = False

    def __init__(self, root: str | None, runroot: str | None, runtime: str | None) -> None:
        self.root, self.runroot, self.runtime = root, runroot, runtime
        self._engine: Any = None

    @property
    def settings(self) -> Any:
        from isle.config import Settings

        s = Settings()
        if self.root:
            s.root = os.path.abspath(self.root)
        if self.runroot:
            s.runroot = os.path.abspath(self.runroot)
        if self.runtime:
            s.runtime = self.runtime
        return s

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from isle.engine.engine import Engine

            self._engine = Engine(self.settings)
            self._engine.own_process = Ctx.own_process
            _sweep_killed_builds(self._engine.s)
        return self._engine


def _sweep_killed_builds(settings: Any) -> None:
    """What a killed `isle build` left (a RUN step's overlay, runtime state, cgroups) goes with
    the next command: one listdir when no build runs (engine/buildsteps)."""
    try:
        names = os.listdir(os.path.join(settings.runroot, "build-steps"))
    except OSError:
        return
    if not any(n.startswith("isle-build-") for n in names):
        return
    from isle.engine.buildsteps import sweep_if_dead

    try:
        sweep_if_dead(settings)
    except Exception as exc:  # noqa: BLE001 - the user's own command goes on
        import sys

        sys.stderr.write(f"isle: warning: cleaning up after a killed build failed: {exc}\n")
