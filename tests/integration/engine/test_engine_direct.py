"""Foreground `run --rm` without conmon (engine/direct.py): visible while it runs, truthful after a
killed CLI, stoppable from elsewhere, runtime errors reported once."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root]


def _wait_running(isle, name: str) -> dict:
    for _ in range(200):
        cp = isle("ps", "--filter", f"name={name}", "--format", "{{.ID}}", check=False)
        if cp.stdout.strip():
            st = isle.inspect(name)["State"]
            if st["Pid"] > 0:
                return st
        time.sleep(0.05)
    raise AssertionError(f"{name} never showed as running with a pid")


def test_direct_run_has_no_monitor_and_shows_in_ps(isle):
    p = subprocess.Popen(isle.argv("run", "--rm", "--name", "dr", "busybox", "sleep", "30"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=isle.env)
    try:
        st = _wait_running(isle, "dr")
        assert st["Status"] == "running" and os.path.exists(f"/proc/{st['Pid']}")
        cid = isle.inspect("dr")["Id"]
        assert not (isle.runroot / "containers" / cid / "conmon.pid").exists()
        isle("stop", "-t", "1", "dr")  # from another process: the pid came from the pid file
        assert p.wait(timeout=20) in (137, 143)
    finally:
        p.kill()
        p.wait()
    assert isle("ps", "-aq").stdout == ""


def test_cli_killed_during_direct_run_never_lies(isle):
    p = subprocess.Popen(isle.argv("run", "--rm", "--name", "dk", "busybox", "sh", "-c",
                                   "sleep 1; exit 7"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=isle.env,
                         start_new_session=True)
    pid = _wait_running(isle, "dk")["Pid"]
    p.kill()
    p.wait()
    assert isle.inspect("dk")["State"]["Status"] == "running"  # the container really still runs
    assert os.path.exists(f"/proc/{pid}")
    for _ in range(200):  # then it ends, and --rm is honoured by what outlived the CLI
        if isle("ps", "-aq").stdout == "":
            break
        time.sleep(0.05)
    assert isle("ps", "-aq").stdout == "" and not os.path.exists(f"/proc/{pid}/cmdline")


def test_direct_run_streams_and_returns_the_code(isle):
    cp = isle("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (cp.returncode, cp.stdout, cp.stderr) == (3, "out\n", "err\n")
    cp = isle("run", "--rm", "-i", "busybox", "sh", "-c", "read x; echo got:$x", input="abc\n")
    assert cp.stdout == "got:abc\n"
    assert isle("ps", "-aq").stdout == ""


def test_direct_run_signal_is_delivered_once(isle):
    p = subprocess.Popen(isle.argv("run", "--rm", "busybox", "sh", "-c",
                                   "n=0; trap 'n=$((n+1))' TERM; echo ready; "
                                   "sleep 1 & wait; sleep 1 & wait; echo n=$n"),
                         stdout=subprocess.PIPE, text=True, env=isle.env)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and out == "n=1\n"


def test_rm_f_from_elsewhere_ends_a_direct_run_at_once(isle):
    """The runtime runs in a fork of the CLI: it must not keep the container lock (rm -f would
    wait for the container to end by itself) nor outlive the removal."""
    p = subprocess.Popen(isle.argv("run", "--rm", "--name", "dx", "busybox", "sleep", "60"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=isle.env)
    try:
        pid = _wait_running(isle, "dx")["Pid"]
        t = time.monotonic()
        isle("rm", "-f", "dx", timeout=30)
        assert time.monotonic() - t < 10
        assert p.wait(timeout=20) == 137
    finally:
        p.kill()
        p.wait()
    assert not os.path.exists(f"/proc/{pid}/cmdline") or open(f"/proc/{pid}/cmdline").read() == ""
    assert isle("ps", "-aq").stdout == ""


def test_direct_run_overlay_is_volatile_and_detached_is_not(isle):
    """run --rm's writable layer dies with it: mounted volatile (its unmount skips the host
    filesystem's journal flush); a -d container's layer is kept, so it is synced as usual."""
    def opts_of(cid: str) -> str:
        root = str(isle.root / "containers" / cid / "rootfs")
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if parts[4] == root:
                    return line.split(" - ", 1)[1]
        raise AssertionError(f"{root} is not mounted")

    p = subprocess.Popen(isle.argv("run", "--rm", "--name", "dv", "busybox", "sleep", "30"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=isle.env)
    try:
        _wait_running(isle, "dv")
        assert "volatile" in opts_of(isle.inspect("dv")["Id"])
        isle("rm", "-f", "dv")
        p.wait(timeout=20)
    finally:
        p.kill()
        p.wait()
    cid = isle("run", "-d", "busybox", "sleep", "30").stdout.strip()
    assert "volatile" not in opts_of(cid)
    isle("rm", "-f", cid)
