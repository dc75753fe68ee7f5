"""Supervisor.refresh of a record whose starter died between `runtime create` and `runtime
start` (it says "running" with no pid) while another process holds the container's lock (the
exit command conmon ran, an rm, a stop): the first look gives the settled answer, never a
"running" the next look contradicts (test_cli_killed_mid_start_is_not_reported_running)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from isle.engine import supervisor
from isle.engine.db import ContainerRecord, Db
from isle.engine.engine import Engine
from isle.engine.layout import proc_start_time
from isle.engine.options import RunOptions

from .fake_runtime import fake_engine

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path)  # type: ignore[no-any-return]


def _starting(eng: Engine, starter: tuple[int, int]) -> ContainerRecord:
    """A record as write_bundle leaves it: "running", no pid, no monitor, its starter named."""
    o = RunOptions(image="busybox", command=["sleep", "100"], network="none",
                   runtime="/nonexistent/fake-runtime")
    rec = ContainerRecord(id=os.urandom(32).hex(), name="half", image="busybox",
                          image_id="sha256:" + "0" * 64, created=time.time(), state="running",
                          opts=o.to_dict(), started_at=time.time())
    eng.db.insert_container(rec)
    p = eng.paths(rec.id)
    os.makedirs(p.run, exist_ok=True)
    Path(p.starter).write_text(f"{starter[0]} {starter[1]}")
    return rec


def _dead() -> tuple[int, int]:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid, 1


class _Holder:
    """Another process holding the container's lock until told to let go."""

    def __init__(self, lock: str) -> None:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        self.p = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
             "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", lock],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None and self.p.stdout.readline() == "held\n"
        self.pid = self.p.pid

    def release(self) -> None:
        if self.p.poll() is None:
            self.p.communicate("", timeout=10)


def test_a_dead_starters_record_is_reported_as_its_lock_holder_settles_it(eng: Engine) -> None:
    rec = _starting(eng, _dead())
    holder = _Holder(eng.paths(rec.id).lock)

    def settle() -> None:  # what the holder's own refresh does: fail_start, then let go
        time.sleep(0.5)
        db = Db(eng.s.db_path)
        db.update_container(rec.id, state="exited", exit_code=128, pid=0,
                            finished_at=time.time(), error=supervisor.INTERRUPTED, event="die")
        db.conn.close()
        holder.release()

    t = threading.Thread(target=settle)
    t.start()
    try:
        got = eng.get(rec.id)  # said "running" (no pid) before: the lock was taken for a start
    finally:
        t.join()
        holder.release()
    assert (got.state, got.exit_code, got.error) == ("exited", 128, supervisor.INTERRUPTED)
    again = eng.get(rec.id)
    assert (again.state, again.exit_code, again.error) == (got.state, got.exit_code, got.error)


def test_a_holder_that_never_settles_it_still_gets_no_running(eng: Engine, monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "SETTLE_WAIT", 0.3)
    rec = _starting(eng, _dead())
    holder = _Holder(eng.paths(rec.id).lock)
    try:
        got = eng.get(rec.id)
        assert (got.state, got.pid, got.exit_code) == ("exited", 0, 128)
        assert got.error == supervisor.INTERRUPTED
        assert eng.db.get_container(rec.id).state == "running"  # the holder's to record
    finally:
        holder.release()


def test_a_live_starter_holding_the_lock_is_starting_it(eng: Engine) -> None:
    rec = _starting(eng, (0, 0))
    holder = _Holder(eng.paths(rec.id).lock)
    try:
        Path(eng.paths(rec.id).starter).write_text(f"{holder.pid} {proc_start_time(holder.pid)}")
        t = time.monotonic()
        got = eng.get(rec.id)
        assert got.state == "running" and time.monotonic() - t < 1  # no wait for a live start
    finally:
        holder.release()
