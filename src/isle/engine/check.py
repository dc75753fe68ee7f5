"""`isle system check [--repair]`: the engine database against what is on disk.

Finds a corrupt or missing isle.db, container directories without a record (orphans), records
without a directory, and leftover temporary blobs. --repair sets a corrupt db aside
(isle.db.corrupt-TIME), makes a new one and rebuilds container records from each container
directory's record.json (written with every record, db.RECORD_FILE) and its runtime files (a
live container stays running, an ended one gets its exit code), volume records from
<root>/volumes; orphans without a record.json are removed unless something is mounted there.
"""

from __future__ import annotations

import os
import time

from isle.config import Settings
from isle.engine.db import RECORD_FILE, ContainerRecord, Db, DbError, VolumeRecord
from isle.engine.layout import ContainerPaths, proc_start_time, read_int, rmtree
from isle.oci.fastjson import loads
from isle.record import field, record

__all__ = ["CheckReport", "check"]


@record
class CheckReport:
    db: str = "ok"  # ok | corrupt: ... | missing
    findings: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


def _mounted_under(path: str) -> bool:
    from isle.sys import procfs

    try:
        return any(m == path or m.startswith(path + "/") for m in procfs.mountpoints())
    except OSError:
        return True  # cannot tell: treat it as busy


def _container_dirs(s: Settings) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(s.containers_dir) if e.is_dir())
    except OSError:
        return []


def _open(s: Settings, rep: CheckReport) -> Db | None:
    if not os.path.exists(s.db_path):
        if _container_dirs(s):
            rep.db = "missing"
            rep.findings.append(f"{s.db_path} is missing but {s.containers_dir} holds containers")
            return None
    try:
        db = Db(s.db_path, private=(s.runroot,))
        row = db.conn.execute("PRAGMA integrity_check").fetchone()
        if row and row[0] != "ok":
            db.close()
            raise DbError(f"integrity check: {row[0]}")
        return db
    except Exception as exc:  # noqa: BLE001 - DbError, or sqlite's own on a damaged file
        rep.db = "unusable"
        rep.findings.append(str(exc) if isinstance(exc, DbError) else f"{s.db_path}: {exc}")
        return None


def _set_aside(s: Settings) -> str:
    dest = f"{s.db_path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    if os.path.exists(s.db_path):
        os.rename(s.db_path, dest)
    for ext in ("-wal", "-shm"):
        if os.path.exists(s.db_path + ext):
            os.rename(s.db_path + ext, dest + ext)
    return dest


def _rebuild_record(s: Settings, cid: str) -> ContainerRecord | None:
    """The record from record.json, its state from the runtime files (conmon's or direct's)."""
    try:
        with open(os.path.join(s.containers_dir, cid, RECORD_FILE), "rb") as f:
            d = loads(f.read())
        rec = ContainerRecord(**d)
    except (OSError, ValueError, TypeError):
        return None
    p = ContainerPaths.of(s, cid)
    pid = read_int(p.pidfile) or 0
    mon = read_int(p.monitor_pidfile) or 0
    code = read_int(p.exit_file)
    try:
        rec.started_at = rec.started_at or os.stat(p.pidfile).st_mtime
    except OSError:
        pass
    if code is None and pid and proc_start_time(pid):
        rec.state, rec.pid, rec.pid_start = "running", pid, proc_start_time(pid)
        rec.monitor_pid, rec.monitor_start = mon, proc_start_time(mon)
    elif code is not None or rec.state in ("running", "paused", "exited"):
        rec.state, rec.pid, rec.pid_start = "exited", 0, 0
        rec.exit_code = 255 if code is None else code
        if code is None:
            rec.error = "recovered by isle system check: its exit code was lost"
        try:
            rec.finished_at = os.stat(p.exit_file).st_mtime
        except OSError:
            rec.finished_at = rec.finished_at or time.time()
    return rec


def _volumes_on_disk(s: Settings) -> list[VolumeRecord]:
    out: list[VolumeRecord] = []
    try:
        entries = sorted(os.scandir(s.volumes_dir), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        data = os.path.join(e.path, "_data")
        if e.is_dir() and os.path.isdir(data):
            out.append(VolumeRecord(name=e.name, created=e.stat().st_mtime, driver="local",
                                    mountpoint=data))
    return out


def check(s: Settings, *, repair: bool = False) -> CheckReport:
    rep = CheckReport()
    db = _open(s, rep)
    if db is None and repair:
        if rep.db != "missing":
            rep.repaired.append(f"set the damaged database aside as {_set_aside(s)}")
        db = Db(s.db_path, private=(s.runroot,), rebuild=True)
        rep.repaired.append(f"made a new {s.db_path}")
        for v in _volumes_on_disk(s):
            if db.insert_volume(v):
                rep.repaired.append(f"volume {v.name}: record rebuilt")
    if repair:
        try:
            from isle.engine.buildrun import sweep_dead_builds
            from isle.image.store import ImageStore

            for step in sweep_dead_builds(s, ImageStore.from_settings(s).unmount_rootfs):
                rep.findings.append(f"build step {step}: left by a killed build")
                rep.repaired.append(f"build step {step}: unmounted and removed")
        except Exception as exc:  # noqa: BLE001 - report, go on with the records
            rep.findings.append(f"killed builds' steps: {exc}")
    if db is None:
        for cid in _container_dirs(s):
            rep.findings.append(f"container {cid[:12]}: no record (the database is unusable)")
        return rep
    known = {r.id: r for r in db.list_containers()}
    for cid in _container_dirs(s):
        if cid in known:
            continue
        rec = _rebuild_record(s, cid)
        d = os.path.join(s.containers_dir, cid)
        if rec is not None:
            rep.findings.append(f"container {cid[:12]} ({rec.name}): on disk without a record")
            if repair:
                try:
                    db.insert_container(rec)
                    rep.repaired.append(f"container {cid[:12]} ({rec.name}): adopted, "
                                        f"{rec.state}")
                except Exception as exc:  # noqa: BLE001 - e.g. its name is taken by now
                    rep.findings.append(f"container {cid[:12]}: cannot adopt: {exc}")
            continue
        rep.findings.append(f"container {cid[:12]}: orphan directory {d} (no record.json)")
        if repair:
            if _mounted_under(d):
                rep.findings.append(f"container {cid[:12]}: left in place, something is "
                                    "mounted under it")
            else:
                rmtree(d)
                rep.repaired.append(f"container {cid[:12]}: orphan directory removed")
    for cid, r in known.items():
        if not os.path.isdir(os.path.join(s.containers_dir, cid)) and r.state != "created":
            rep.findings.append(f"container {cid[:12]} ({r.name}): record without its "
                                "directory (isle rm removes it)")
    if repair:
        from isle.image.blobs import sweep_tmp

        n, freed = sweep_tmp(os.path.join(s.images_dir, "tmp"))
        if n:
            rep.findings.append(f"{n} temporary files of killed pulls or builds")
            rep.repaired.append(f"removed {n} temporary files ({freed} bytes)")
    db.close()
    return rep


def report_lines(rep: CheckReport, repair: bool) -> list[str]:
    lines = [f"database: {rep.db}"]
    lines += [f"found: {x}" for x in rep.findings]
    lines += [f"repaired: {x}" for x in rep.repaired]
    if not rep.findings:
        lines.append("no problems found")
    elif not repair:
        lines.append("run `isle system check --repair` to fix what can be fixed")
    return lines
