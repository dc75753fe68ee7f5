"""Truthfulness after crashes: kill -9 of the CLI or the monitor, a wiped runroot; OOM; concurrency."""

from __future__ import annotations

import json
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


def _tmpfs_root(isle, size: str) -> None:
    isle.root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "isle-h3", str(isle.root)],
                   check=True)


def _umount(isle) -> None:
    isle.cleanup()
    subprocess.run(["umount", str(isle.root)], check=False)


def _fill(path) -> None:
    with open(path / "fill", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


def _one_clear_error(cp, *words: str) -> None:
    assert cp.returncode == 125, (cp.returncode, cp.stderr)
    assert "Traceback" not in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    for w in words:
        assert w.lower() in cp.stderr.lower(), cp.stderr


@pytest.mark.timeout(120)
def test_full_disk_stop_kill_rm_still_work(isle):
    """A full root: what needs space fails once and clearly; stop, kill and rm -f still work."""
    _tmpfs_root(isle, "40m")
    try:
        for n in ("aa", "bb", "cc"):
            isle("run", "-d", "--network", "none", "--name", n, "busybox", "sleep", "100")
        _fill(isle.root)
        for verb in (["run", "--rm", "busybox", "true"], ["create", "busybox", "true"],
                     ["run", "-d", "busybox", "true"]):
            _one_clear_error(isle(*verb, check=False), "full", str(isle.root))
        isle("stop", "-t", "1", "aa")
        isle("kill", "bb")
        assert isle.inspect("bb")["State"]["Status"] == "exited"
        isle("rm", "-f", "cc", "aa", "bb")
        assert isle("ps", "-aq").stdout == ""
        os.unlink(isle.root / "fill")
        isle("run", "--rm", "--network", "none", "busybox", "true")  # room again: all works
        assert (isle.root / ".isle-reserve").exists()  # and the margin is back
    finally:
        _umount(isle)


def test_read_only_root_one_clear_error(isle):
    _tmpfs_root(isle, "40m")
    try:
        isle("run", "--rm", "--network", "none", "busybox", "true")
        for _ in range(50):  # what wrote there (the run's helpers) may take a moment to go
            if subprocess.run(["mount", "-o", "remount,ro", str(isle.root)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        for verb in (["run", "--rm", "busybox", "true"], ["volume", "create", "vv"]):
            _one_clear_error(isle(*verb, check=False), "read-only")
        subprocess.run(["mount", "-o", "remount,rw", str(isle.root)], check=True)
    finally:
        _umount(isle)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted"])
def test_corrupt_db_is_named_and_repaired(isle, damage):
    """A damaged isle.db: one message naming the file and the fix, for every verb; then
    `isle system check --repair` rebuilds the records from the container directories."""
    live = isle("run", "-d", "--network", "none", "--name", "live", "busybox", "sleep",
                "100").stdout.strip()
    isle("run", "--network", "none", "--name", "ended", "busybox", "sh", "-c", "exit 3",
         check=False)
    isle("volume", "create", "vol1")
    for i in range(30):  # a db of several pages, so a truncation cuts records
        isle("volume", "create", f"v{i:02d}" + "x" * 200)
    db = isle.root / "isle.db"
    isle("ps", "-a")  # let sqlite checkpoint
    for ext in ("-wal", "-shm"):
        if os.path.exists(f"{db}{ext}"):
            subprocess.run(["sqlite3", str(db), "PRAGMA wal_checkpoint(TRUNCATE);"],
                           check=False, capture_output=True)
    if damage == "garbage":
        db.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        os.truncate(db, os.path.getsize(db) // 2)
    else:
        db.unlink()
    for ext in ("-wal", "-shm"):
        with __import__("contextlib").suppress(FileNotFoundError):
            os.unlink(f"{db}{ext}")
    for verb in (["ps", "-a"], ["run", "--rm", "busybox", "true"], ["rm", "-f", "live"]):
        cp = isle(*verb, check=False)
        _one_clear_error(cp, str(db), "isle system check --repair")
    assert isle("system", "check", check=False).returncode == 1
    out = isle("system", "check", "--repair").stdout
    assert "adopted" in out, out
    st = isle.inspect("live")["State"]
    assert st["Status"] == "running" and st["Id"] if "Id" in st else True
    assert isle.inspect("ended")["State"]["ExitCode"] == 3
    assert "vol1" in isle("volume", "ls", "-q").stdout
    assert "no problems found" in isle("system", "check").stdout
    isle("rm", "-f", live, "ended")
    assert isle("ps", "-aq").stdout == ""


def test_env_too_large_names_the_limit(isle, tmp_path):
    """--env-file with a 1 MB value (or too many large ones): the kernel's limit named, 125,
    before anything is made (the container's exec, or the VM guest's init, would fail)."""
    big = tmp_path / "big.env"
    big.write_text("BIG=" + "x" * (1 << 20) + "\n")
    many = tmp_path / "many.env"
    many.write_text("".join(f"V{i}=" + "y" * 120000 + "\n" for i in range(10)))
    for f, words in ((big, ["BIG", "131071", "MAX_ARG_STRLEN"]), (many, ["ARG_MAX"])):
        for iso in (["--isolation", "vm"], []):
            cp = isle("run", "--rm", "--network", "none", *iso, "--env-file", str(f), "busybox",
                      "true", check=False)
            _one_clear_error(cp, *words)
    assert isle("ps", "-aq").stdout == ""
    ok = tmp_path / "ok.env"
    ok.write_text("BIG=" + "x" * 100000 + "\n")
    cp = isle("run", "--rm", "--network", "none", "--env-file", str(ok), "busybox", "sh", "-c",
              'echo ${#BIG}')
    assert cp.stdout.strip() == "100000"


@pytest.mark.netns
def test_default_network_is_a_16(isle):
    """The default bridge of a non-system root is a /16, as Docker's (a /24 ran out at 254)."""
    out = isle("run", "--rm", "busybox", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "/16 " in out, out
    isle("network", "create", "more")
    try:
        sub = json.loads(isle("network", "inspect", "more").stdout)[0]["Subnets"][0]["subnet"]
        assert sub.endswith("/24")  # further networks from the pool
    finally:
        isle("network", "rm", "more")


def test_monitor_killed_loss_is_visible(isle):
    """conmon SIGKILLed under a live container: inspect's State.Error and `logs` say so (the
    output after it is lost), and the end without an exit code says why."""
    cid = isle("run", "-d", "--network", "none", "busybox", "sh", "-c",
               "echo before; sleep 1.5; echo after; exit 3").stdout.strip()
    run = isle.runroot / "containers" / cid
    time.sleep(0.3)
    os.kill(_read(run / "conmon.pid"), signal.SIGKILL)
    time.sleep(0.2)
    st = isle.inspect(cid)["State"]
    assert st["Status"] == "running" and "monitor" in st["Error"], st
    logs = isle("logs", cid)
    assert "before" in logs.stdout and "monitor (conmon) died" in logs.stderr, logs
    for _ in range(60):
        st = isle.inspect(cid)["State"]
        if st["Status"] == "exited":
            break
        time.sleep(0.1)
    assert st["Status"] == "exited" and st["ExitCode"] == 255 and "monitor" in st["Error"], st
    isle("rm", cid)


def test_monitor_killed_then_the_next_command_runs_its_exit_command(isle):
    """conmon SIGKILLed, then the container ends: nobody's exit command ran, so the next command
    that sees the end runs it: --rm is honoured, a kept container's overlay and netns go."""
    rm = isle("run", "-d", "--rm", "busybox", "sh", "-c", "sleep 1; exit 3").stdout.strip()
    keep = isle("run", "-d", "busybox", "sh", "-c", "sleep 1; exit 4").stdout.strip()
    for cid in (rm, keep):
        os.kill(_read(isle.runroot / "containers" / cid / "conmon.pid"), signal.SIGKILL)
    end = time.monotonic() + 20
    while time.monotonic() < end and isle("ps", "-aq", "--no-trunc").stdout.split() != [keep]:
        time.sleep(0.2)
    assert isle("ps", "-aq", "--no-trunc").stdout.split() == [keep]  # the --rm one is gone
    st = isle.inspect(keep)["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 255 and "monitor" in st["Error"], st
    while time.monotonic() < end and [ln for ln in open("/proc/self/mountinfo")
                                      if keep in ln or rm in ln]:
        time.sleep(0.2)
    assert not [ln for ln in open("/proc/self/mountinfo") if keep in ln or rm in ln]
    isle("rm", keep)


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_qemu_crash_reason_is_recorded(isle):
    """QEMU SIGKILLed under a VM container: Exited with the runtime's reason in State.Error."""
    cid = isle("run", "-d", "--isolation", "vm", "--network", "none", "busybox", "sleep",
               "60", timeout=180).stdout.strip()
    state = isle.runroot / "runtime" / cid / "state.json"
    for _ in range(200):
        if state.exists() and isle.inspect(cid)["State"]["Status"] == "running":
            break
        time.sleep(0.1)
    os.kill(json.loads(state.read_text())["qemu_pid"], signal.SIGKILL)
    for _ in range(100):
        st = isle.inspect(cid)["State"]
        if st["Status"] == "exited":
            break
        time.sleep(0.1)
    assert st["Status"] == "exited" and st["ExitCode"] != 0, st
    assert "QEMU" in st["Error"] and "signal 9" in st["Error"], st
    isle("rm", cid)
