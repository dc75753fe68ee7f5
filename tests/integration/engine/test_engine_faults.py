"""Truthfulness after crashes: kill -9 of the CLI or the monitor, a wiped runroot; OOM; concurrency."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.root]


def _read(path) -> int:
    with open(path) as f:
        return int(f.read())


def test_monitor_killed_container_keeps_running_then_exit_is_seen(isle):
    # --network none: a reboot also drops netns mounts and bridges, which wiping /run cannot
    cid = isle("run", "-d", "--network", "none", "busybox", "sleep", "100").stdout.strip()
    run = isle.runroot / "containers" / cid
    os.kill(_read(run / "conmon.pid"), signal.SIGKILL)
    time.sleep(0.2)
    assert isle.inspect(cid)["State"]["Status"] == "running"  # it still is
    os.kill(_read(run / "pidfile"), signal.SIGKILL)
    time.sleep(0.2)
    st = isle.inspect(cid)["State"]
    assert st["Status"] == "exited" and st["Running"] is False
    isle("rm", cid)
    assert isle("ps", "-aq").stdout == ""


def test_cli_killed_during_foreground_run(isle):
    p = subprocess.Popen(isle.argv("run", "--name", "fg", "busybox", "sh", "-c", "sleep 0.5; exit 7"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=isle.env)
    for _ in range(100):  # until it is really running (its pid known)
        if isle("ps", "-a", "--filter", "name=fg", "--format", "{{.ID}}").stdout.strip() and \
                isle.inspect("fg")["State"]["Pid"] > 0:
            break
        time.sleep(0.05)
    p.kill()
    p.wait()
    time.sleep(0.8)
    st = isle.inspect("fg")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 7  # conmon kept the truth
    isle("rm", "fg")


def test_cli_killed_mid_start_is_not_reported_running(isle):
    """A starter killed between `runtime create` and `runtime start`: no live lie afterwards."""
    cid = isle("create", "--name", "half", "busybox", "sleep", "100").stdout.strip()
    p = subprocess.Popen(isle.argv("start", "half"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=isle.env)
    run = isle.runroot / "containers" / cid
    for _ in range(400):
        if (run / "pidfile").exists():
            p.send_signal(signal.SIGSTOP)  # frozen right after create: as good as dead
            break
        time.sleep(0.005)
    p.kill()
    p.wait()
    time.sleep(0.3)
    st = isle.inspect("half")["State"]
    assert st == isle.inspect("half")["State"]  # settled: the truth does not flip back and forth
    assert st["Status"] in ("running", "exited")
    if st["Status"] == "running":  # it got as far as `runtime start`: then it really runs
        assert st["Pid"] > 0 and os.path.exists(f"/proc/{st['Pid']}")
    isle("rm", "-f", "half")
    assert isle("ps", "-aq").stdout == ""


def test_wiped_runroot_then_rm_cleans_up(isle):
    # --network none: a reboot also drops netns mounts and bridges, which wiping /run cannot
    cid = isle("run", "-d", "--network", "none", "busybox", "sleep", "100").stdout.strip()
    run = isle.runroot / "containers" / cid
    pid, mon = _read(run / "pidfile"), _read(run / "conmon.pid")
    os.kill(mon, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)  # a reboot kills everything ...
    time.sleep(0.1)
    shutil.rmtree(isle.runroot)  # ... and wipes /run
    st = isle.inspect(cid)["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 255
    isle("rm", cid)
    assert isle("ps", "-aq").stdout == ""
    assert not (isle.root / "containers" / cid).exists()


def test_oom_killed_is_reported(isle):
    cid = isle("run", "-d", "-m", "8m", "--memory-swap", "8m", "busybox", "sh", "-c",
               "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done"
               ).stdout.strip()
    assert isle("wait", cid, timeout=60).stdout.strip() == "137"
    st = isle.inspect(cid)["State"]
    assert st["OOMKilled"] is True and st["ExitCode"] == 137
    isle("rm", cid)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_concurrent_run_d_makes_correct_records(isle):
    n = 30 if os.environ.get("ISLE_QUICK") else 100
    isle("run", "--rm", "busybox", "true")  # image made once, db created
    with ThreadPoolExecutor(max_workers=n) as ex:
        res = list(ex.map(lambda i: isle("run", "-d", "--name", f"c{i}", "busybox", "sleep", "60",
                                         check=False, timeout=240), range(n)))
    assert [r.returncode for r in res] == [0] * n, [r.stderr for r in res if r.returncode][:3]
    ids = {r.stdout.strip() for r in res}
    rows = isle("ps", "--format", "{{.Names}} {{.State}}").stdout.splitlines()
    assert sorted(rows) == sorted(f"c{i} running" for i in range(n))
    assert set(isle("ps", "-q", "--no-trunc").stdout.split()) == ids
    isle("rm", "-f", *ids, timeout=240)
    assert isle("ps", "-aq").stdout == ""
