"""Engine records (containers, volumes, events) in SQLite with WAL: every change is one transaction.

Many `isle` processes write at once (100 parallel `run -d`): writers take BEGIN IMMEDIATE and wait
on the busy timeout, so records are never half-written; names are UNIQUE in the schema itself.
"""

from __future__ import annotations

import os
import time
TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from typing import Any

from isle.errors import AlreadyExists, NotFound
from isle.oci.fastjson import dumps as _dumps
from isle.record import field, field_names, record
from isle.oci.fastjson import loads as _loads

try:  # the C module alone: the `sqlite3` package adds datetime adapters (~2 ms) isle never uses
    import _sqlite3 as sqlite3
except ImportError:  # pragma: no cover - a Python without it
    import sqlite3  # type: ignore[no-redef]

__all__ = ["Db", "ContainerRecord", "VolumeRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image TEXT NOT NULL, image_id TEXT NOT NULL,
    created REAL NOT NULL, state TEXT NOT NULL, pid INTEGER NOT NULL DEFAULT 0,
    pid_start INTEGER NOT NULL DEFAULT 0, monitor_pid INTEGER NOT NULL DEFAULT 0,
    monitor_start INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL DEFAULT 0, finished_at REAL NOT NULL DEFAULT 0,
    oom_killed INTEGER NOT NULL DEFAULT 0, restart_count INTEGER NOT NULL DEFAULT 0,
    stopped_by_user INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    opts TEXT NOT NULL, extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY, created REAL NOT NULL, driver TEXT NOT NULL, mountpoint TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}', options TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0, populated INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, type TEXT NOT NULL,
    action TEXT NOT NULL, actor TEXT NOT NULL, attrs TEXT NOT NULL DEFAULT '{}'
);
PRAGMA user_version = 1;
"""


@record
class ContainerRecord:
    """One container's row: identity, options, and its last known state."""
    id: str
    name: str
    image: str
    image_id: str
    created: float
    state: str  # created | running | paused | exited | removing
    opts: dict[str, Any]
    pid: int = 0
    pid_start: int = 0
    monitor_pid: int = 0
    monitor_start: int = 0
    exit_code: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    oom_killed: bool = False
    restart_count: int = 0
    stopped_by_user: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@record
class VolumeRecord:
    """One named volume's row."""
    name: str
    created: float
    driver: str
    mountpoint: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    populated: bool = False


_CFIELDS = list(field_names(ContainerRecord))
_VFIELDS = list(field_names(VolumeRecord))
_JSON = {"opts", "extra", "labels", "options"}
_BOOL = {"oom_killed", "stopped_by_user", "anonymous", "populated"}


def _enc(k: str, v: Any) -> Any:
    if k in _JSON:
        return _dumps(v)
    if k in _BOOL:
        return int(bool(v))
    return v


def _dec(names: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    d = {}
    for k, v in zip(names, row, strict=True):
        d[k] = _loads(v) if k in _JSON else (bool(v) if k in _BOOL else v)
    return d


class Db:
    """One connection per process; short transactions."""

    def __init__(self, path: str, private: tuple[str, ...] = ()) -> None:
        """private: more directories (the runroot) made or tightened to 0700 with the db's."""
        from isle.sys.fs import private_dir, private_file

        for d in (os.path.dirname(path), *private):
            private_dir(d)
        # the db is made 0600 before sqlite opens it (its -wal and -shm then take that mode);
        # an older install's 0644 files are tightened
        for p in (path, path + "-wal", path + "-shm"):
            if p == path or os.path.exists(p):
                private_file(p)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 60000")
        if self.conn.execute("PRAGMA user_version").fetchone()[0] < 1:
            with self.tx():
                if self.conn.execute("PRAGMA user_version").fetchone()[0] < 1:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self.conn.execute(stmt)
            self._wal()
        self.conn.execute("PRAGMA synchronous = NORMAL")

    def _wal(self) -> None:
        """WAL mode (persistent, so only a new db needs it). Switching takes the db alone and
        sqlite answers "locked" at once, without its busy wait, when several new connections try
        together (the API's first burst of clients): retry, and skip once another has done it."""
        for i in range(200):
            if str(self.conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or i == 199:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self.conn.close()

    def tx(self) -> _Tx:
        """with db.tx() as conn: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        return _Tx(self.conn)

    # -- containers ------------------------------------------------------------------------
    def insert_container(self, rec: ContainerRecord) -> None:
        cols = ",".join(_CFIELDS)
        marks = ",".join("?" * len(_CFIELDS))
        try:
            with self.tx() as c:
                c.execute(f"INSERT INTO containers ({cols}) VALUES ({marks})",
                          [_enc(k, getattr(rec, k)) for k in _CFIELDS])
                self._event(c, "container", "create", rec.id, {"name": rec.name, "image": rec.image})
        except sqlite3.IntegrityError as exc:
            if "name" in str(exc):
                raise AlreadyExists(f'the container name "/{rec.name}" is already in use') from None
            raise AlreadyExists(f"container id {rec.id} already exists") from None

    def get_container(self, ref: str) -> ContainerRecord:
        """By full id, name, or unique id prefix (Docker's rules)."""
        if not ref:
            raise NotFound("no such container: (empty name)")
        q = f"SELECT {','.join(_CFIELDS)} FROM containers WHERE "
        rows = self.conn.execute(q + "id = ? OR name = ?", (ref, ref.lstrip("/"))).fetchall()
        if not rows and ref and all(ch in "0123456789abcdef" for ch in ref):
            rows = self.conn.execute(q + "id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise NotFound(f"multiple containers match id prefix {ref!r}; be more specific")
        if not rows:
            raise NotFound(f"no such container: {ref}")
        by_id = [r for r in rows if r[0] == ref]
        return ContainerRecord(**_dec(_CFIELDS, (by_id or rows)[0]))

    def list_containers(self) -> list[ContainerRecord]:
        rows = self.conn.execute(
            f"SELECT {','.join(_CFIELDS)} FROM containers ORDER BY created DESC").fetchall()
        return [ContainerRecord(**_dec(_CFIELDS, r)) for r in rows]

    def update_container(self, cid: str, *, event: str = "", attrs: dict[str, Any] | None = None,
                         **changes: Any) -> None:
        if not changes and not event:
            return
        with self.tx() as c:
            if changes:
                sets = ",".join(f"{k} = ?" for k in changes)
                cur = c.execute(f"UPDATE containers SET {sets} WHERE id = ?",
                                [_enc(k, v) for k, v in changes.items()] + [cid])
                if cur.rowcount == 0:
                    raise NotFound(f"no such container: {cid}")
            if event:
                self._event(c, "container", event, cid, attrs or {})

    def delete_container(self, cid: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM containers WHERE id = ?", (cid,))
            self._event(c, "container", "destroy", cid, {})

    # -- volumes ---------------------------------------------------------------------------
    def insert_volume(self, rec: VolumeRecord) -> bool:
        """Insert; False if the name exists already (the caller decides if that is an error)."""
        cols = ",".join(_VFIELDS)
        try:
            with self.tx() as c:
                c.execute(f"INSERT INTO volumes ({cols}) VALUES ({','.join('?' * len(_VFIELDS))})",
                          [_enc(k, getattr(rec, k)) for k in _VFIELDS])
                self._event(c, "volume", "create", rec.name, {})
        except sqlite3.IntegrityError:
            return False
        return True

    def get_volume(self, name: str) -> VolumeRecord:
        row = self.conn.execute(f"SELECT {','.join(_VFIELDS)} FROM volumes WHERE name = ?",
                                (name,)).fetchone()
        if row is None:
            raise NotFound(f"no such volume: {name}")
        return VolumeRecord(**_dec(_VFIELDS, row))

    def list_volumes(self) -> list[VolumeRecord]:
        rows = self.conn.execute(f"SELECT {','.join(_VFIELDS)} FROM volumes ORDER BY name").fetchall()
        return [VolumeRecord(**_dec(_VFIELDS, r)) for r in rows]

    def set_volume_populated(self, name: str) -> bool:
        """Mark populated; True only for the one caller that flipped it (fills it exactly once)."""
        with self.tx() as c:
            cur = c.execute("UPDATE volumes SET populated = 1 WHERE name = ? AND populated = 0",
                            (name,))
            return cur.rowcount == 1

    def delete_volume(self, name: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM volumes WHERE name = ?", (name,))
            self._event(c, "volume", "destroy", name, {})

    # -- events ----------------------------------------------------------------------------
    def _event(self, c: sqlite3.Connection, typ: str, action: str, actor: str,
               attrs: dict[str, Any]) -> None:
        cur = c.execute("INSERT INTO events (time, type, action, actor, attrs) VALUES (?,?,?,?,?)",
                        (time.time(), typ, action, actor, _dumps(attrs)))
        if cur.lastrowid and cur.lastrowid % 1000 == 0:  # keep the newest ~10000 events
            c.execute("DELETE FROM events WHERE seq <= ?", (cur.lastrowid - 10000,))

    def add_event(self, typ: str, action: str, actor: str, attrs: dict[str, Any] | None = None) -> None:
        with self.tx() as c:
            self._event(c, typ, action, actor, attrs or {})

    def events(self, after_seq: int = 0, since: float = 0.0) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT seq, time, type, action, actor, attrs FROM events WHERE seq > ? AND time >= ? "
            "ORDER BY seq", (after_seq, since)).fetchall()
        return [{"seq": r[0], "time": r[1], "type": r[2], "action": r[3], "actor": r[4],
                 "attrs": _loads(r[5])} for r in rows]


class _Tx:
    """Db.tx's context manager (a class: contextlib costs ~2 ms of every CLI start)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        self.conn.execute("ROLLBACK" if et is not None else "COMMIT")
        return False
