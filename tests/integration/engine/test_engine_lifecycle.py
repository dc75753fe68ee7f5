"""run/create/start/stop/rm/ps/logs/inspect/exec/wait/kill through the real CLI, conmon and runtime."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.root]


def test_run_rm_returns_the_containers_exit_code(isle):
    cp = isle("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert cp.returncode == 3
    assert cp.stdout == "out\n"
    assert cp.stderr == "err\n"
    assert isle("ps", "-aq").stdout == ""


def test_exit_codes_125_126_127(isle):
    assert isle("run", "--rm", "busybox", "nosuchcmd", check=False).returncode == 127
    assert isle("run", "--rm", "busybox", "/etc/passwd", check=False).returncode == 126
    cp = isle("run", "--rm", "--memory", "10zz", "busybox", "true", check=False)
    assert cp.returncode == 125 and "--memory" in cp.stderr
    cp = isle("run", "--rm", "no-such-image-xyz", "true", check=False)
    assert cp.returncode == 125 and "no-such-image-xyz" in cp.stderr
    cp = isle("run", "--rm", "--cap-add", "CAP_BOGUS", "busybox", "true", check=False)
    assert cp.returncode == 125 and "CAP_BOGUS" in cp.stderr
    cp = isle("run", "--rm", "-p", "99999:80", "busybox", "true", check=False)
    assert cp.returncode == 125 and "99999" in cp.stderr
    cp = isle("run", "--rm", "--isolation", "hyperv", "busybox", "true", check=False)
    assert cp.returncode == 125 and "hyperv" in cp.stderr
    assert isle("ps", "-aq").stdout == ""


def test_detached_lifecycle(isle):
    cid = isle("run", "-d", "--name", "web", "busybox", "sh", "-c",
               "echo hello; echo oops >&2; exec sleep 100").stdout.strip()
    assert len(cid) == 64
    ps = isle("ps", "--format", "{{.ID}} {{.Names}} {{.State}}").stdout.split()
    assert ps == [cid[:12], "web", "running"]
    time.sleep(0.2)
    logs = isle("logs", "web")
    assert logs.stdout == "hello\n" and logs.stderr == "oops\n"
    # name conflict: clear error, nothing created
    cp = isle("run", "-d", "--name", "web", "busybox", "true", check=False)
    assert cp.returncode == 125 and "already in use" in cp.stderr
    assert len(isle("ps", "-aq").stdout.split()) == 1
    # rm without -f refuses a running container
    cp = isle("rm", "web", check=False)
    assert cp.returncode == 1 and "running" in cp.stderr
    # exec
    cp = isle("exec", "web", "sh", "-c", "hostname; exit 4", check=False)
    assert cp.returncode == 4 and cp.stdout.strip() == cid[:12]
    assert isle("exec", "web", "nosuch", check=False).returncode == 127
    info = isle.inspect("web")
    assert info["Id"] == cid and info["State"]["Running"] is True and info["Name"] == "/web"
    assert info["State"]["Pid"] > 0
    t = time.monotonic()
    isle("stop", "-t", "1", "web")
    assert time.monotonic() - t < 8
    info = isle.inspect("web")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
    assert isle("exec", "web", "true", check=False).returncode == 1
    # start again, then kill; wait prints the code
    isle("start", "web")
    assert isle("inspect", "-f", "{{.State.Status}}", "web").stdout.strip() == "running"
    isle("kill", "web")
    assert isle("wait", "web").stdout.strip() == "137"
    isle("rm", "web")
    assert isle("ps", "-aq").stdout == ""


def test_ps_filters_and_json_format(isle):
    a = isle("run", "-d", "-l", "app=x", "busybox", "sleep", "30").stdout.strip()
    b = isle("create", "--name", "idle", "busybox", "true").stdout.strip()
    rows = [json.loads(x) for x in isle("ps", "-a", "--format", "json").stdout.splitlines()]
    assert {r["ID"] for r in rows} == {a[:12], b[:12]}
    assert isle("ps", "-q", "--filter", "label=app=x").stdout.split() == [a[:12]]
    assert isle("ps", "-aq", "--filter", "status=created").stdout.split() == [b[:12]]
    assert isle("ps", "-aq", "--filter", "name=idle").stdout.split() == [b[:12]]
    isle("rm", "-f", a, b)


def test_wait_and_foreground_stdin(isle):
    cp = isle("run", "--rm", "-i", "busybox", "sh", "-c", "read x; echo got:$x", input="abc\n")
    assert cp.stdout == "got:abc\n"


def test_start_attach_returns_the_exit_code(isle):
    isle("create", "--name", "sa", "busybox", "sh", "-c", "echo attached; exit 4")
    for _ in range(2):  # a stopped container starts again the same way
        cp = isle("start", "-a", "sa", check=False)
        assert cp.returncode == 4 and cp.stdout == "attached\n"
    assert isle.inspect("sa")["State"]["ExitCode"] == 4
    isle("rm", "sa")


def test_foreground_run_proxies_signals(isle):
    import signal
    import subprocess

    p = subprocess.Popen(isle.argv("run", "--rm", "busybox", "sh", "-c",
                                   "trap 'echo got-int; exit 9' INT; echo ready; sleep 30 & wait"),
                         stdout=subprocess.PIPE, text=True, env=isle.env)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 9 and out == "got-int\n"
    assert isle("ps", "-aq").stdout == ""
