"""Engine records (containers, volumes, events) in SQLite with WAL: every change is one transaction.

Many `isle` processes write at once (100 parallel `run -d`): writers take BEGIN IMMEDIATE and wait
on the busy timeout, so records are never half-written; names are UNIQUE in the schema itself.
"""

from __future__ import annotations

import os
import time

from isle.errors import AlreadyExists, IsleError, NotFound
from isle.oci.fastjson import dumps as _dumps
from isle.oci.fastjson import loads as _loads
from isle.record import field, field_names, record

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

try:  # the C module alone: the `sqlite3` package adds datetime adapters (~2 ms) isle never uses
    import _sqlite3 as sqlite3
except ImportError:  # pragma: no cover - a Python without it
    import sqlite3

__all__ = ["Db", "ContainerRecord", "VolumeRecord", "DbError", "RESERVE", "RECORD_FILE"]

#: a file of this size next to the db, given back when the disk is full so that stop, kill and
#: rm (state changes and deletions, which free space) still commit; dockerd keeps such a margin
RESERVE = ".isle-reserve"
RESERVE_SIZE = 4 * 1024 * 1024
#: each container's record, also written into its directory: what `isle system check --repair`
#: rebuilds a lost or corrupt database from
RECORD_FILE = "record.json"


class DbError(IsleError):
    """The engine database cannot be used: corrupt, missing, on a full or read-only disk."""

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

    def __init__(self, path: str, private: tuple[str, ...] = (), *,
                 rebuild: bool = False) -> None:
        """private: more directories (the runroot) made or tightened to 0700 with the db's.
        A missing db beside container directories is an error (their records are lost), not a
        new empty db, unless rebuild (`isle system check --repair`, which re-adds them)."""
        from isle.sys.fs import private_dir, private_file

        self.path = path
        root = os.path.dirname(path)
        fresh = not os.path.exists(path)
        self.full = False
        try:
            for d in (root, *private):
                private_dir(d)
            st = os.statvfs(root)
            have_reserve = os.path.exists(os.path.join(root, RESERVE))
            # a used reserve's room belongs to what frees space until it is made again
            if st.f_bavail * st.f_frsize < _FULL + (0 if have_reserve or fresh else RESERVE_SIZE):
                # a full disk: sqlite cannot even map its -shm; the reserve makes room for the
                # writes that free space (stop, kill, rm); writes that need space are refused
                self.full = True
                _drop_reserve(path)
            if fresh and not rebuild and _has_containers(root):
                raise DbError(f"the engine database {path} is missing but {root}/containers "
                              "holds containers: run `isle system check --repair` to rebuild "
                              "their records from disk")
            # the db is made 0600 before sqlite opens it (its -wal and -shm then take that
            # mode); an older install's 0644 files are tightened
            for p in (path, path + "-wal", path + "-shm"):
                if p == path or os.path.exists(p):
                    private_file(p)
        except OSError as exc:
            raise _os_error(exc, path) from None
        try:
            self.conn = sqlite3.connect(path, timeout=60, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            if self.conn.execute("PRAGMA user_version").fetchone()[0] < 1:
                with self.tx():
                    if self.conn.execute("PRAGMA user_version").fetchone()[0] < 1:
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                self.conn.execute(stmt)
                self._wal()
            self.conn.execute("PRAGMA synchronous = NORMAL")
            if self.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'containers'"
                                 ).fetchone()[0] != 1:
                raise sqlite3.DatabaseError("file is not a database (no containers table)")
            if not fresh:
                self._check_size()
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise explain(exc, path) from None
        if fresh:
            _make_reserve(root)
        elif not self.full:
            with suppress_oserror():
                ensure_reserve(root)

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

    def _check_size(self) -> None:
        """A truncated db reads as empty tables, not as an error: with the WAL empty, the file
        must hold every page sqlite counts. (Never open() the db file here: closing any fd of
        it drops the process's POSIX locks, sqlite's own included, under other threads.)"""
        try:
            if os.stat(self.path + "-wal").st_size:
                return
        except FileNotFoundError:
            pass
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        psize = self.conn.execute("PRAGMA page_size").fetchone()[0]
        size = os.stat(self.path).st_size
        if pages * psize > size:
            raise sqlite3.DatabaseError(f"database disk image is malformed (truncated: {size} "
                                        f"bytes of {pages * psize})")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            rows: list[Any] = self.conn.execute(sql, args).fetchall()
            return rows
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise explain(exc, self.path) from None

    def _write(self, fn: Any, *, frees: bool) -> Any:
        """fn(conn) in one transaction. On a full disk: a write that frees space (a state change
        or a deletion: stop, kill, rm) gives back the reserve file and retries; any other write
        fails with one clear error."""
        for attempt in (0, 1):
            try:
                with self.tx() as c:
                    return fn(c)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                if attempt == 0 and frees and _full(exc, self.path) and _drop_reserve(self.path):
                    continue
                raise explain(exc, self.path) from None
        return None

    def _need_space(self) -> None:
        if self.full:
            root = os.path.dirname(self.path)
            raise DbError(f"the disk holding {root} is full: free space there (isle rm, "
                          "isle system prune, isle image prune) and retry")

    def tx(self) -> _Tx:
        """with db.tx() as conn: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        return _Tx(self.conn)

    # -- containers ------------------------------------------------------------------------
    def insert_container(self, rec: ContainerRecord) -> None:
        cols = ",".join(_CFIELDS)
        marks = ",".join("?" * len(_CFIELDS))
        def ins(c: Any) -> None:
            c.execute(f"INSERT INTO containers ({cols}) VALUES ({marks})",
                      [_enc(k, getattr(rec, k)) for k in _CFIELDS])
            self._event(c, "container", "create", rec.id, {"name": rec.name, "image": rec.image})

        self._need_space()
        try:
            self._write(ins, frees=False)
            self.save_record(rec)
        except sqlite3.IntegrityError as exc:
            if "name" in str(exc):
                raise AlreadyExists(f'the container name "/{rec.name}" is already in use') from None
            raise AlreadyExists(f"container id {rec.id} already exists") from None

    def get_container(self, ref: str) -> ContainerRecord:
        """By full id, name, or unique id prefix (Docker's rules)."""
        if not ref:
            raise NotFound("no such container: (empty name)")
        q = f"SELECT {','.join(_CFIELDS)} FROM containers WHERE "
        rows = self._read(q + "id = ? OR name = ?", (ref, ref.lstrip("/")))
        if not rows and ref and all(ch in "0123456789abcdef" for ch in ref):
            rows = self._read(q + "id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                raise NotFound(f"multiple containers match id prefix {ref!r}; be more specific")
        if not rows:
            raise NotFound(f"no such container: {ref}")
        by_id = [r for r in rows if r[0] == ref]
        return ContainerRecord(**_dec(_CFIELDS, (by_id or rows)[0]))

    def list_containers(self) -> list[ContainerRecord]:
        rows = self._read(f"SELECT {','.join(_CFIELDS)} FROM containers ORDER BY created DESC")
        return [ContainerRecord(**_dec(_CFIELDS, r)) for r in rows]

    def update_container(self, cid: str, *, event: str = "", attrs: dict[str, Any] | None = None,
                         when_state: tuple[str, ...] = (), **changes: Any) -> bool:
        """when_state: only if the row is in one of these states (a compare-and-set: of two
        processes that saw a container end, one records it and its event); -> whether it did."""
        if not changes and not event:
            return True

        def upd(c: Any) -> bool:
            if changes:
                sets = ",".join(f"{k} = ?" for k in changes)
                cond = ""
                args = [_enc(k, v) for k, v in changes.items()] + [cid]
                if when_state:
                    cond = f" AND state IN ({','.join('?' * len(when_state))})"
                    args += list(when_state)
                cur = c.execute(f"UPDATE containers SET {sets} WHERE id = ?{cond}", args)
                if cur.rowcount == 0:
                    if when_state and c.execute("SELECT 1 FROM containers WHERE id = ?",
                                                (cid,)).fetchone():
                        return False
                    raise NotFound(f"no such container: {cid}")
            if event:
                self._event(c, "container", event, cid, attrs or {})
            return True

        if not self._write(upd, frees=True):
            return False
        if _SNAPSHOT.intersection(changes):
            try:
                self.save_record(self.get_container(cid))
            except (NotFound, OSError):
                pass
        return True

    def save_record(self, rec: ContainerRecord) -> None:
        """The record's identity and options into its container directory (RECORD_FILE)."""
        d = os.path.join(os.path.dirname(self.path), "containers", rec.id)
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(d, RECORD_FILE),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, _dumps({k: getattr(rec, k) for k in _CFIELDS}).encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # a copy for repairs: never a reason to fail

    def delete_container(self, cid: str) -> None:
        def dele(c: Any) -> None:
            c.execute("DELETE FROM containers WHERE id = ?", (cid,))
            self._event(c, "container", "destroy", cid, {})

        self._write(dele, frees=True)

    # -- volumes ---------------------------------------------------------------------------
    def insert_volume(self, rec: VolumeRecord) -> bool:
        """Insert; False if the name exists already (the caller decides if that is an error)."""
        cols = ",".join(_VFIELDS)
        def ins(c: Any) -> None:
            c.execute(f"INSERT INTO volumes ({cols}) VALUES ({','.join('?' * len(_VFIELDS))})",
                      [_enc(k, getattr(rec, k)) for k in _VFIELDS])
            self._event(c, "volume", "create", rec.name, {})

        self._need_space()
        try:
            self._write(ins, frees=False)
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
        rows = self.conn.execute(
            f"SELECT {','.join(_VFIELDS)} FROM volumes ORDER BY name").fetchall()
        return [VolumeRecord(**_dec(_VFIELDS, r)) for r in rows]

    def set_volume_populated(self, name: str) -> bool:
        """Mark populated; True only for the one caller that flipped it (fills it exactly once)."""
        with self.tx() as c:
            cur = c.execute("UPDATE volumes SET populated = 1 WHERE name = ? AND populated = 0",
                            (name,))
            return bool(cur.rowcount == 1)

    def delete_volume(self, name: str) -> None:
        def dele(c: Any) -> None:
            c.execute("DELETE FROM volumes WHERE name = ?", (name,))
            self._event(c, "volume", "destroy", name, {})

        self._write(dele, frees=True)

    # -- events ----------------------------------------------------------------------------
    def _event(self, c: sqlite3.Connection, typ: str, action: str, actor: str,
               attrs: dict[str, Any]) -> None:
        cur = c.execute("INSERT INTO events (time, type, action, actor, attrs) VALUES (?,?,?,?,?)",
                        (time.time(), typ, action, actor, _dumps(attrs)))
        if cur.lastrowid and cur.lastrowid % 1000 == 0:  # keep the newest ~10000 events
            c.execute("DELETE FROM events WHERE seq <= ?", (cur.lastrowid - 10000,))

    def add_event(self, typ: str, action: str, actor: str,
                  attrs: dict[str, Any] | None = None) -> None:
        self._write(lambda c: self._event(c, typ, action, actor, attrs or {}), frees=True)

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

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if et is None:
            self.conn.execute("COMMIT")
            return
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError:  # sqlite rolled back itself (an I/O or full error):
            pass  # the error that caused it is the one to report


_SNAPSHOT = {"name", "opts", "extra"}  # the fields of a record that a repair cannot re-derive


def _has_containers(root: str) -> bool:
    try:
        with os.scandir(os.path.join(root, "containers")) as it:
            return any(e.is_dir() for e in it)
    except OSError:
        return False


_FULL = 1024 * 1024  # less free than this: the disk counts as full


def _full(exc: BaseException, path: str) -> bool:
    """sqlite says "full", or an I/O error (its -shm cannot grow) on a disk that is full."""
    if "full" in str(exc):
        return True
    if "disk I/O error" not in str(exc):
        return False
    try:
        st = os.statvfs(os.path.dirname(path))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL + RESERVE_SIZE


def _make_reserve(root: str) -> None:
    """The reserve file (RESERVE): made with a new db, and again once there is room."""
    p = os.path.join(root, RESERVE)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, RESERVE_SIZE)
    except OSError:  # no room even for that: none this time
        os.close(fd)
        os.unlink(p)
        return
    os.close(fd)


def ensure_reserve(root: str) -> None:
    """Re-make the reserve if a full disk used it and there is room again (cheap: one stat)."""
    if not os.path.exists(os.path.join(root, RESERVE)):
        st = os.statvfs(root)
        if st.f_bavail * st.f_frsize > 4 * RESERVE_SIZE:
            _make_reserve(root)


def _drop_reserve(db_path: str) -> bool:
    try:
        os.unlink(os.path.join(os.path.dirname(db_path), RESERVE))
        return True
    except OSError:
        return False


def _os_error(exc: OSError, path: str) -> DbError:
    import errno

    root = os.path.dirname(path)
    if exc.errno == errno.EROFS:
        return DbError(f"isle's root {root} is on a read-only filesystem: remount it read-write "
                       "or pick another with --root")
    if exc.errno == errno.ENOSPC:
        return DbError(f"the disk holding {root} is full: free space there (isle system prune, "
                       "isle image prune) and retry")
    return DbError(f"cannot open the engine database {path}: {exc.strerror or exc}")


def explain(exc: BaseException, path: str) -> DbError:
    """One clear message for an sqlite failure: what is wrong with which file, and the fix."""
    msg = str(exc)
    root = os.path.dirname(path)
    if _full(exc, path):
        return DbError(f"the disk holding {root} is full ({msg}): free space there "
                       "(isle system prune, isle image prune) and retry")
    if "readonly" in msg or "read-only" in msg:
        return DbError(f"the engine database {path} is read-only ({msg}): isle's root must be "
                       "writable (remount it, or pick another with --root)")
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return DbError(f"the engine database {path} is corrupt ({msg}): run `isle system check "
                       "--repair` to set it aside and rebuild the records from disk")
    if "unable to open" in msg:
        return DbError(f"cannot open the engine database {path} ({msg})")
    return DbError(f"the engine database {path} failed: {msg}")


class suppress_oserror:
    """with suppress_oserror(): ... (contextlib costs ~2 ms of every CLI start)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        return et is not None and issubclass(et, OSError)
