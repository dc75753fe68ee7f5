"""What every part of the engine shares: settings, the record db, the image store, the
container locks and the runtime factory. The Engine builds one and hands it to its parts
(supervisor.py, containers.py, queries.py, transfer.py); none of them reaches another's state.
Opening one clears up after killed builds (sweep_killed_builds): the CLI's engine and each of
the API service's alike.
"""

from __future__ import annotations

import os
import sys

from isle.config import Settings
from isle.engine.db import Db
from isle.engine.layout import ContainerPaths
from isle.errors import Unsupported
from isle.sys.fs import flock

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

    from isle.engine.db import ContainerRecord
    from isle.engine.runtimes import OciCli

__all__ = ["Context", "sweep_killed_builds"]


class Context:
    """settings, db (opened on first use), store (opened on first use), per-container locks,
    the record -> runtime factory."""

    def __init__(self, settings: Settings, *, runtime_for: Any = None) -> None:
        """runtime_for(settings, record_opts) -> the record's OCI runtime (engine/runtimes.py
        for_record by default; the unit tests pass a recording fake)."""
        self.s = settings
        self.runtime_for = runtime_for
        self._db: Db | None = None
        self._store: Any = None
        self.held: set[str] = set()
        #: the caller is a CLI process of its own (stdio = the container's, nothing else running
        #: in it): a foreground `run --rm` may call isle's runtime in this process (direct.py)
        self.own_process = False
        #: where `run` reports warnings before the container's output (the API may replace it)
        self.warn: Any = lambda msg: sys.stderr.write(f"WARNING: {msg}\n")
        sweep_killed_builds(settings)

    @property
    def db(self) -> Db:
        if self._db is None:
            self._db = Db(self.s.db_path, private=(self.s.runroot,))
        return self._db

    @property
    def store(self) -> Any:
        if self._store is None:
            try:
                from isle.image.store import ImageStore
            except ImportError as exc:
                raise Unsupported("the image store (isle.image.store) is not available") from exc
            self._store = ImageStore.from_settings(self.s)
            self._store.set_users_callback(self._image_users)
        return self._store

    def _image_users(self, image_id: str) -> list[str]:
        return [r.id for r in self.db.list_containers() if r.image_id == image_id]

    def volume_users(self, name: str) -> list[str]:
        """Short ids of the containers whose mounts name volume `name`."""
        users = []
        for rec in self.db.list_containers():
            for m in rec.opts.get("mounts", []):
                if m.get("type") == "volume" and m.get("source") == name:
                    users.append(rec.id[:12])
        return users

    def paths(self, cid: str) -> ContainerPaths:
        return ContainerPaths.of(self.s, cid)

    def oci(self, rec: ContainerRecord) -> OciCli:
        """The record's runtime behind the seam (engine/runtimes.py)."""
        from isle.engine.runtimes import for_record

        return (self.runtime_for or for_record)(self.s, rec.opts)

    def locked(self, cid: str) -> Locked:
        """with ctx.locked(cid): the container's flock (start/stop/cleanup/rm serialise)."""
        return Locked(self, cid)

    def lock_busy(self, cid: str) -> bool:
        """Another process holds this container's lock (e.g. it is starting it right now)."""
        lock = self.paths(cid).lock
        if cid in self.held or not os.path.exists(lock):
            return False  # a probe never makes the lock file (rm removes it)
        try:
            with flock(lock, wait=False):
                return False
        except BlockingIOError:
            return True
        except OSError:
            return False


def sweep_killed_builds(settings: Settings) -> None:
    """What a killed `isle build` left (a RUN step's overlay, runtime state, cgroups) goes
    when the engine is next opened, by the CLI or the API service alike (engine/buildsteps).
    The start path pays one listdir of <runroot>/build-steps (a failed one when no build ever
    ran); the rest only when a step's marker is there."""
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
        sys.stderr.write(f"isle: warning: cleaning up after a killed build failed: {exc}\n")


class Locked:
    """Context.locked's context manager: isle.sys.fs.flock plus the set of locks this process
    holds (a class: contextlib costs ~2 ms of import on every CLI start)."""

    __slots__ = ("ctx", "cid", "cm")

    def __init__(self, ctx: Context, cid: str) -> None:
        self.ctx, self.cid = ctx, cid
        self.cm: flock | None = None

    def __enter__(self) -> None:
        lock = self.ctx.paths(self.cid).lock
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        cm = flock(lock)
        cm.__enter__()
        self.cm = cm
        self.ctx.held.add(self.cid)

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self.ctx.held.discard(self.cid)
        cm, self.cm = self.cm, None
        if cm is not None:
            cm.__exit__(et, ev, tb)
