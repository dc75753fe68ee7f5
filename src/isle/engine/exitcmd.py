"""conmon's exit command: `python -m isle.engine.exitcmd ROOT RUNROOT ID` (lean on purpose).

It runs once per container exit, so it first asks SQLite alone whether anything is left to do
(a removed container needs nothing) before importing the engine to record the exit, release the
container's resources and apply its restart policy.
"""

from __future__ import annotations

import os
import sqlite3
import sys


def main(argv: list[str]) -> int:
    root, runroot, cid = argv
    try:
        conn = sqlite3.connect(os.path.join(root, "isle.db"), timeout=60)
        row = conn.execute("SELECT state FROM containers WHERE id = ?", (cid,)).fetchone()
        conn.close()
    except sqlite3.Error:
        row = ("unknown",)
    if row is None:
        return 0
    from isle.config import Settings
    from isle.engine.engine import Engine

    Engine(Settings(root=root, runroot=runroot)).cleanup(cid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
