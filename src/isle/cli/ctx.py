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

            self._engine = Engine(self.settings)  # opening it sweeps killed builds (Context)
            self._engine.own_process = Ctx.own_process
        return self._engine

