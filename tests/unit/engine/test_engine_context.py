"""engine/context: the container lock probe (lock_busy) and what opening the engine does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.context import Context

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"),
                    cache=str(tmp_path / "cache"), runtime="isle-runtime", rootless=False)


def test_lock_busy_only_while_another_process_holds_it(settings: Settings) -> None:
    ctx = Context(settings)
    cid = "a" * 64
    lock = ctx.paths(cid).lock
    assert not ctx.lock_busy(cid)
    assert not os.path.exists(lock)  # the probe made no lock file
    with ctx.locked(cid):
        assert not ctx.lock_busy(cid)  # this process's own
    assert not ctx.lock_busy(cid)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1]); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", lock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert ctx.lock_busy(cid)
    finally:
        holder.communicate("", timeout=10)
    assert not ctx.lock_busy(cid)
