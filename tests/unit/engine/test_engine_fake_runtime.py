"""The engine's lifecycle through its runtime seam, without root: a recording FakeRuntime
(fake_runtime.py) stands in for the OCI runtime, a shell stands in for conmon (it runs the
"container" and writes its exit code where conmon would), records live in a real SQLite db."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.db import ContainerRecord
from isle.engine.engine import Engine
from isle.engine.layout import alive, proc_start_time, read_int
from isle.engine.options import RunOptions
from isle.engine.runtimes import Caps, IsleVmRuntime, OciCli, Runc, for_path, pick
from isle.engine.state import MEMBERS, State, restart_delay, should_restart
from isle.errors import ConfigError, InvalidState, Unsupported

from .fake_runtime import FakeRuntime

pytestmark = pytest.mark.timeout(60)


ALL = [str(s) for s in MEMBERS]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"),
                    cache=str(tmp_path / "cache"), runtime="isle-runtime", rootless=False)


@pytest.fixture
def procs():
    """Every process a test started, killed and reaped at the end (the leak check stays clean)."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def _engine(settings: Settings, fake: FakeRuntime) -> Engine:
    return Engine(settings, runtime_for=fake.factory)


def _record(eng: Engine, name: str, **opts) -> ContainerRecord:
    o = RunOptions(image="busybox", command=["sleep", "30"], network="none",
                   runtime="/nonexistent/fake-runtime", **opts)
    rec = ContainerRecord(id=os.urandom(32).hex(), name=name, image="busybox",
                          image_id="sha256:" + "0" * 64, created=time.time(), state="created",
                          opts=o.to_dict())
    eng.db.insert_container(rec)
    p = eng.paths(rec.id)
    for d in (p.run, p.exit_dir, p.socket_dir, p.bundle):
        os.makedirs(d, exist_ok=True)
    return rec


def _launch(eng: Engine, fake: FakeRuntime, procs: list, rec: ContainerRecord,
            script: str = "sleep 30") -> ContainerRecord:
    """What `_start` leaves behind, minus conmon and the runtime: a monitor (sh) running the
    container (a child it waits for) and writing its exit code to the exit file."""
    p = eng.paths(rec.id)
    mon = subprocess.Popen(
        ["sh", "-c", f'{script} & echo $! > "$1"; wait $!; echo $? > "$2"', "sh", p.pidfile,
         p.exit_file], start_new_session=True)
    procs.append(mon)
    for _ in range(500):
        pid = read_int(p.pidfile) or 0
        if pid and proc_start_time(pid):
            break
        time.sleep(0.01)
    fake.pids[rec.id] = pid
    eng.db.update_container(rec.id, state="running", pid=pid, pid_start=proc_start_time(pid),
                            monitor_pid=mon.pid, monitor_start=proc_start_time(mon.pid),
                            started_at=time.time())
    return eng.db.get_container(rec.id)


# -- state guards and the restart policy (pure) ----------------------------------------------------
def test_state_guards() -> None:
    assert [s for s in ALL if State.of(s).can_start()] == ["created", "exited", "dead"]
    assert [s for s in ALL if State.of(s).can_pause()] == ["running"]
    assert [s for s in ALL if State.of(s).can_unpause()] == ["paused"]
    assert [s for s in ALL if State.of(s).can_kill()] == ["running", "paused"]
    assert [s for s in ALL if State.of(s).can_remove()] == ["created", "exited", "dead"]
    assert all(State.of(s).can_remove(force=True) for s in ALL)
    assert State.of("running") == "running" and isinstance(State.of("paused"), str)
    assert State.of("removing") is State.DEAD      # unknown: nothing runs for it


@pytest.mark.parametrize("policy,retries,code,count,by_user,want", [
    ("no", 0, 1, 0, False, False),
    ("always", 0, 0, 9, False, True),
    ("always", 0, 1, 0, True, False),            # stopped by the user: never
    ("unless-stopped", 0, 0, 0, False, True),
    ("on-failure", 0, 0, 0, False, False),       # a clean exit is no failure
    ("on-failure", 0, 2, 50, False, True),       # 0: no limit
    ("on-failure", 3, 2, 2, False, True),
    ("on-failure", 3, 2, 3, False, False),       # the limit reached
])
def test_restart_policy(policy, retries, code, count, by_user, want) -> None:
    assert should_restart(policy, retries, exit_code=code, restart_count=count,
                          stopped_by_user=by_user) is want


def test_restart_delay_doubles_up_to_ten_seconds() -> None:
    assert [restart_delay(n) for n in (0, 1, 2)] == [0.1, 0.2, 0.4]
    assert restart_delay(30) == 10.0


# -- the seam: picking and capabilities --------------------------------------------------
def _exe(tmp_path: Path, name: str) -> str:
    p = tmp_path / "bin" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)
    return str(p)


def test_pick_names_the_runtime_and_records_its_level(settings, tmp_path) -> None:
    vm = _exe(tmp_path, "isle-vm-runtime")
    opts = RunOptions(image="busybox", runtime=vm)
    rt = pick(settings, opts)          # --runtime isle-vm-runtime is a VM container
    assert isinstance(rt, IsleVmRuntime) and opts.isolation == "vm" and opts.runtime == vm
    assert rt.caps.has_guest and not rt.caps.host_rootfs and not rt.caps.signals_host_pid
    other = _exe(tmp_path, "my-runtime")
    opts = RunOptions(image="busybox", runtime=other)
    assert type(pick(settings, opts)) is OciCli and opts.isolation == "container"


def test_pick_refuses_a_runtime_of_another_level(settings, tmp_path) -> None:
    opts = RunOptions(image="busybox", runtime=_exe(tmp_path, "runc"), isolation="vm")
    with pytest.raises(ConfigError, match="--isolation vm cannot run on"):
        pick(settings, opts)
    with pytest.raises(ConfigError, match="unknown isolation 'kvm'"):
        pick(settings, RunOptions(image="busybox", isolation="kvm"))


def test_release_without_runtime_state_starts_no_process(tmp_path) -> None:
    """runc keeps a directory per container under --root: none means nothing to delete, so no
    `runc delete` process is started (the path here could not run at all)."""
    Runc("/nonexistent/runc", str(tmp_path)).release("c" * 64, running=False)
    assert for_path("/x/crun", "/r").caps.direct_run and not for_path("/x/y", "/r").caps.direct_run


# -- the lifecycle through the fake ------------------------------------------------------
def test_stop_signals_the_host_pid_and_records_the_exit(settings, procs) -> None:
    fake = FakeRuntime(Caps(signals_host_pid=True))
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "c1"))
    eng.stop("c1", timeout=5)
    cur = eng.get("c1")
    assert (cur.state, cur.exit_code) == ("exited", 128 + signal.SIGTERM)
    assert "kill" not in fake.verbs()             # os.kill of the init, no runtime process
    assert ("release", rec.id, False) in fake.calls


def test_stop_of_a_guest_goes_through_the_runtime(settings, procs) -> None:
    fake = FakeRuntime(Caps(signals_host_pid=False, has_guest=True))
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "v1"))
    eng.stop("v1", timeout=5)
    assert ("kill", rec.id, signal.SIGTERM, False) in fake.calls
    assert eng.get("v1").state == "exited"


def test_pause_and_unpause_go_through_the_runtime_and_their_guards(settings, procs) -> None:
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "p1"))
    eng.pause("p1")
    assert eng.get("p1").state == "paused"
    with pytest.raises(InvalidState, match="is not running"):
        eng.pause("p1")
    eng.unpause("p1")
    assert eng.get("p1").state == "running"
    with pytest.raises(InvalidState, match="is not paused"):
        eng.unpause("p1")
    assert [c for c in fake.verbs() if c in ("pause", "resume")] == ["pause", "resume"]
    eng.rm("p1", force=True)
    assert not alive(rec.pid, rec.pid_start)


def test_kill_and_rm_refuse_by_state_and_call_no_runtime(settings) -> None:
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    _record(eng, "k1")
    with pytest.raises(InvalidState, match="not running"):
        eng.kill("k1")
    with pytest.raises(InvalidState, match="not running"):
        eng.exec("k1", ["true"])
    assert fake.verbs() == []


def test_rm_force_kills_monitor_and_container_then_releases(settings, procs) -> None:
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "r1"))
    with pytest.raises(InvalidState, match="stop the container before removing"):
        eng.rm("r1")
    eng.rm("r1", force=True)
    assert not alive(rec.pid, rec.pid_start) and not alive(rec.monitor_pid, rec.monitor_start)
    assert [c for c in fake.calls if c[0] == "release"] == [("release", rec.id, False)]
    assert eng.db.list_containers() == []
    assert not os.path.exists(eng.paths(rec.id).run)


def test_refresh_reads_the_monitors_exit_code(settings, procs) -> None:
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    _launch(eng, fake, procs, _record(eng, "e1"), script="sh -c 'exit 3'")
    procs[-1].wait(10)
    cur = eng.get("e1")
    assert (cur.state, cur.exit_code, cur.error) == ("exited", 3, "")


def test_refresh_without_exit_file_says_the_monitor_died(settings, procs) -> None:
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "m1"))
    os.killpg(procs[-1].pid, signal.SIGKILL)      # monitor and container at once
    procs[-1].wait(10)
    for _ in range(200):
        if not alive(rec.pid, rec.pid_start):
            break
        time.sleep(0.01)
    cur = eng.get("m1")
    assert (cur.state, cur.exit_code) == ("exited", 255)
    assert "monitor died" in cur.error


@pytest.mark.parametrize("status,want", [("running", "running"), ("created", "exited")])
def test_refresh_of_a_start_cut_short_asks_the_runtime(settings, procs, status, want) -> None:
    """The starter died between `create` and recording the pid: the runtime's state decides
    (started: adopt the pid; only created: undo the start and say so)."""
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    rec = _record(eng, "s1")
    init = subprocess.Popen(["sleep", "30"], start_new_session=True)
    procs.append(init)
    with open(eng.paths(rec.id).pidfile, "w") as f:
        f.write(str(init.pid))
    eng.db.update_container(rec.id, state="running", pid=0, pid_start=0, monitor_pid=0,
                            monitor_start=0, started_at=time.time())  # as _start leaves it
    fake.states[rec.id] = status
    cur = eng.get("s1")
    assert cur.state == want and ("state", rec.id) in fake.calls
    if want == "running":
        assert cur.pid == init.pid
    else:
        assert cur.error == "the start was interrupted" and ("release", rec.id, True) in fake.calls


def test_cleanup_removes_an_rm_container_and_releases_it(settings, procs) -> None:
    fake = FakeRuntime()
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "x1", remove=True), script="true")
    procs[-1].wait(10)
    eng.cleanup(rec.id)                       # conmon's exit command
    assert eng.db.list_containers() == []
    assert ("release", rec.id, False) in fake.calls and "start" not in fake.verbs()


def test_cleanup_never_restarts_what_the_user_stopped(settings, procs) -> None:
    from isle.engine.options import RestartPolicy

    fake = FakeRuntime()
    eng = _engine(settings, fake)
    rec = _launch(eng, fake, procs, _record(eng, "a1", restart=RestartPolicy(name="always")))
    eng.stop("a1", timeout=5)                 # stopped_by_user
    eng.cleanup(rec.id)
    assert eng.get("a1").state == "exited" and eng.get("a1").restart_count == 0
    assert "start" not in fake.verbs()


# -- what a guest's host side cannot answer: a clear refusal, exit 125 -------------------
def test_a_started_guest_refuses_host_side_cp_diff_commit_export_top_stats(settings, procs,
                                                                           tmp_path) -> None:
    fake = FakeRuntime(Caps(has_guest=True, host_rootfs=False, host_procs=False))
    eng = _engine(settings, fake)
    _launch(eng, fake, procs, _record(eng, "g1"))
    for call in (lambda: eng.cp("g1:/etc/hostname", str(tmp_path / "out")),
                 lambda: eng.cp(str(tmp_path), "g1:/tmp"),
                 lambda: eng.diff("g1"), lambda: eng.commit("g1", "img"),
                 lambda: eng.export("g1", open(os.devnull, "wb")),
                 lambda: eng.top("g1"), lambda: eng.stats(["g1"])):
        with pytest.raises(Unsupported) as ei:
            call()
        assert ei.value.exit_code == 125 and "fake" in str(ei.value)
    assert eng.stats() == []                  # the listing leaves it out instead
    eng.rm("g1", force=True)
