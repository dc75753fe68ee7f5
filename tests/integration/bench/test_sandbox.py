"""--isolation sandbox: gVisor's runsc through the engine (run, -d, logs, exec, stats, rm) on
isle's bridge networks and with --network none; ps/inspect/filter show the level."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(shutil.which("runsc") is None,
                                                   reason="runsc (gVisor) not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _runsc_procs(root) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if "runsc" in cmd and str(root) in cmd:
                out.append(cmd)
    return out


@pytest.mark.timeout(120)
def test_sandbox_none_runs_in_gvisor(isle):
    cp = isle("run", "--rm", "--isolation", "sandbox", "--network", "none", "busybox",
              "sh", "-c", "uname -r; ip -o link | wc -l")
    kernel, links = cp.stdout.split()
    assert kernel != os.uname().release  # gVisor's sentry, not the host kernel
    assert links == "1"                   # loopback only
    assert not _runsc_procs(isle.runroot)
    assert isle("ps", "-aq").stdout.strip() == ""


@pytest.mark.timeout(120)
def test_runtime_runsc_is_the_sandbox_level(isle):
    cp = isle("run", "--rm", "--runtime", "runsc", "--network", "none", "busybox", "echo", "hi")
    assert cp.stdout == "hi\n"


@pytest.mark.netns
@pytest.mark.timeout(240)
def test_sandbox_on_isle_network_detached_logs_exec_stats(isle):
    isle("network", "create", "sbnet")
    try:
        isle("run", "-d", "--name", "srv", "--isolation", "sandbox", "--network", "sbnet",
             "busybox", "sh", "-c", "echo started; while true; do echo pong | nc -l -p 8080; done")
        isle("run", "-d", "--name", "plain", "--network", "sbnet", "busybox", "sleep", "60")
        for _ in range(50):
            if "started" in isle("logs", "srv").stdout:
                break
            time.sleep(0.2)
        assert "started" in isle("logs", "srv").stdout
        # a sandbox and a container on one isle network reach the sandbox by name
        assert isle("exec", "plain", "nc", "srv", "8080").stdout.strip() == "pong"
        cp = isle("run", "--rm", "--isolation", "sandbox", "--network", "sbnet", "busybox",
                  "sh", "-c", "nc srv 8080 </dev/null; uname -r")
        pong, kernel = cp.stdout.split()
        assert pong == "pong" and kernel != os.uname().release
        assert isle("exec", "srv", "sh", "-c", "echo in-$(hostname)").stdout.startswith("in-")
        # ps: ISOLATION column, filter and template
        table = isle("ps").stdout.splitlines()
        assert "ISOLATION" in table[0].split()
        assert isle("ps", "--filter", "isolation=sandbox", "--format", "{{.Names}}").stdout.split() \
            == ["srv"]
        assert isle("ps", "--filter", "isolation=container", "--format",
                    "{{.Names}} {{.Isolation}}").stdout.strip() == "plain container"
        assert isle.inspect("srv")["HostConfig"]["Isolation"] == "sandbox"
        stats = isle("stats", "--no-stream", "--format", "json", "srv", check=False)
        if stats.returncode == 0 and stats.stdout.strip().startswith("{"):
            assert json.loads(stats.stdout.splitlines()[0])
        else:
            assert "srv" in isle("stats", "--no-stream", "srv").stdout
    finally:
        isle("rm", "-f", "srv", "plain", check=False)
        isle("network", "rm", "sbnet", check=False)
    assert not _runsc_procs(isle.runroot)


@pytest.mark.timeout(60)
def test_sandbox_bad_input(isle):
    cp = isle("run", "--rm", "--isolation", "sandbox", "--runtime", "runc", "busybox", "true",
              check=False)
    assert cp.returncode != 0 and "runsc" in cp.stderr
    cp = isle("run", "--rm", "--isolation", "bogus", "busybox", "true", check=False)
    assert cp.returncode != 0 and "sandbox" in cp.stderr
    assert isle("ps", "-aq").stdout.strip() == ""


@pytest.mark.timeout(60)
def test_info_names_the_levels(isle):
    info = json.loads(isle("info", "--format", "json").stdout)
    assert "sandbox" in info["Isolation"] and "container" in info["Isolation"]
    assert "runsc" in info["IsolationNotes"]["sandbox"]


@pytest.mark.netns
@pytest.mark.timeout(180)
def test_sandbox_volumes_and_published_port(isle, tmp_path):
    import socket

    d = tmp_path / "vol"
    d.mkdir()
    (d / "in").write_text("from-host\n")
    isle("run", "-d", "--name", "web", "--isolation", "sandbox", "-p", "127.0.0.1::8080",
         "-v", f"{d}:/data", "busybox", "sh", "-c",
         "cat /data/in > /data/out; while true; do echo pong | nc -l -p 8080; done")
    try:
        port = int(isle("port", "web", "8080").stdout.strip().rsplit(":", 1)[1])
        got = b""
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    got = s.recv(100)
                if got:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert got == b"pong\n"
        assert (d / "out").read_text() == "from-host\n"
    finally:
        isle("rm", "-f", "web", check=False)
    assert not _runsc_procs(isle.runroot)
