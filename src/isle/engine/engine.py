"""The Engine: the composition root of isle's container engine; every user-facing verb is one
method of it, delegated to the part that owns it.

    eng = Engine(Settings(root=..., runroot=...))
    rep = eng.run(RunOptions(image="busybox", command=["echo", "hi"], remove=True))
    rep.exit_code  # 0

The parts, each built here with what it needs passed in (no mixins, no shared base class):

- Context (context.py): settings, the record db (db.py), the image store, container locks and
  the record -> OCI runtime factory (engine/runtimes.py, the seam).
- Supervisor (supervisor.py): starts a container (conmon + the runtime, or the monitor-less
  foreground run of direct.py where the runtime declares it), refreshes the truth about a live
  one from conmon's exit file and pid + start-time checks, signals and releases it. Its
  config.json comes from bundle.py; the State guards from state.py.
- Containers (containers.py): create/start/run/stop/kill/restart/pause/rm/... verbs.
- Queries (queries.py): inspect, ps, logs, exec, top, info, volumes.
- Transfer (transfer.py): cp, export, diff, commit, stats, port, events, system df/prune.

Containers run under conmon (monitor.py) so they outlive `isle`; a killed CLI, monitor, or a
wiped runroot never makes the records lie (Supervisor.refresh).
"""

from __future__ import annotations

from isle.config import Settings, default_settings
from isle.engine.containers import Containers
from isle.engine.context import Context
from isle.engine.db import Db
from isle.engine.queries import Queries
from isle.engine.supervisor import Supervisor
from isle.engine.transfer import Transfer

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Engine"]


class _OnContext:
    """An Engine setting that lives on its Context, read and set through the Engine."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, eng: Any, owner: type | None = None) -> Any:
        return getattr(eng.ctx, self.name)

    def __set__(self, eng: Any, value: Any) -> None:
        setattr(eng.ctx, self.name, value)


class Engine:
    #: the caller is a CLI process of its own (Context.own_process: direct.py may fork the
    #: runtime); where `run` reports warnings (Context.warn: the API replaces it)
    own_process = _OnContext()
    warn = _OnContext()

    def __init__(self, settings: Settings | None = None, *, runtime_for: Any = None) -> None:
        """runtime_for(settings, record_opts) -> the record's OCI runtime (engine/runtimes.py
        for_record by default; the unit tests pass a recording fake)."""
        self.s = settings or default_settings()
        self.ctx = ctx = Context(self.s, runtime_for=runtime_for)
        self.supervisor = sup = Supervisor(ctx)
        self.containers = c = Containers(ctx, sup)
        self.queries = q = Queries(ctx, sup)
        self.transfer = t = Transfer(ctx, sup, c, q)
        self.paths = ctx.paths
        self.volume_users = ctx.volume_users
        self.get, self.list = sup.get, sup.records
        # containers
        self.create, self.start, self.start_attached, self.run = (
            c.create, c.start, c.start_attached, c.run)
        self.stop, self.kill, self.restart, self.wait = c.stop, c.kill, c.restart, c.wait
        self.pause, self.unpause, self.rename = c.pause, c.unpause, c.rename
        self.rm, self.container_prune, self.cleanup = c.rm, c.container_prune, c.cleanup
        # queries
        self.inspect, self.ps, self.logs, self.top, self.info = (
            q.inspect, q.ps, q.logs, q.top, q.info)
        self.exec, self.exec_capture, self.image_config = q.exec, q.exec_capture, q.image_config
        self.volume_rm, self.volume_prune = q.volume_rm, q.volume_prune
        # transfer
        self.cp, self.export, self.diff, self.commit = t.cp, t.export, t.diff, t.commit
        self.stats, self.port, self.events = t.stats, t.port, t.events
        self.system_df, self.system_prune = t.system_df, t.system_prune

    @property
    def db(self) -> Db:
        return self.ctx.db

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def volumes(self) -> Any:
        return self.queries.volumes

    def update(self, ref: str, changes: dict[str, Any], restart: Any = None) -> Any:
        """New resource limits (RunOptions field -> value) and/or restart policy, live through
        the runtime's `update` and in the record: engine/update.py. (record, warnings)."""
        from isle.engine.update import apply

        return apply(self, ref, changes, restart)

    def __repr__(self) -> str:
        return f"Engine(root={self.s.root!r}, runroot={self.s.runroot!r})"
