"""conmon's exit command: `python -m isle.engine.exitcmd ROOT RUNROOT ID [OWNER_PID OWNER_START]`
(lean on purpose).

It runs once per container exit, so it first asks SQLite alone whether anything is left to do
(a removed container needs nothing) before importing the engine to record the exit, release the
container's resources and apply its restart policy (or --rm).

With an owner (a foreground `isle run`, which records and removes its container itself), it
waits while the owner lives and the record is there, and does the owner's part only if the
owner died first (SIGKILLed): podman's exit command model, so --rm holds whoever outlives whom.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

OWNER_WAIT = 600.0  # a foreground run's owner gets this long after its container's exit


def _state(db: str, cid: str) -> tuple[str, ...] | None:
    try:
        conn = sqlite3.connect(db, timeout=60)
        try:
            row = conn.execute("SELECT state FROM containers WHERE id = ?", (cid,)).fetchone()
            return None if row is None else tuple(row)
        finally:
            conn.close()
    except sqlite3.Error:
        return ("unknown",)


def _alive(pid: int, start: int) -> bool:
    from isle.sys import procfs  # only os: the exit command stays lean

    return procfs.start_time(pid) == start


def main(argv: list[str]) -> int:
    root, runroot, cid = argv[:3]
    db = os.path.join(root, "isle.db")
    if len(argv) >= 5:
        owner, start = int(argv[3]), int(argv[4])
        if not _alive(owner, start) and _state(db, cid) is None:
            return 0
        # conmon waits for its exit command, and the owner waits for conmon: wait detached
        if os.fork():
            return 0
        os.setsid()
        nul = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(nul, fd)
        os.close(nul)
        end = time.monotonic() + OWNER_WAIT
        while _alive(owner, start) and time.monotonic() < end:
            time.sleep(0.05)
            if _state(db, cid) is None:
                return 0
    if _state(db, cid) is None:
        return 0
    from isle.config import Settings
    from isle.engine.engine import Engine

    Engine(Settings(root=root, runroot=runroot)).cleanup(cid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
