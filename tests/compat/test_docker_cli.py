"""The real docker CLI (28.x on PATH and Debian's 20.10) drives isle through `isle system service`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ISLE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "isle")
#: the docker CLI on PATH (28.x here) and Debian's docker.io client (20.10), as conftest's Service
CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

clis = pytest.mark.parametrize("cli", CLIS or [pytest.param("", marks=pytest.mark.skip(
    reason="no docker CLI on this machine"))], ids=lambda c: os.path.basename(os.path.dirname(c))
    if c else "none")


@clis
def test_version_negotiation_and_info(service, cli) -> None:
    v = json.loads(service.docker("version", "--format", "{{json .}}", cli=cli).stdout)
    assert v["Server"]["ApiVersion"] == "1.44" and v["Server"]["Version"]
    info = service.docker("info", "--format", "{{.OSType}} {{.Driver}} {{.DefaultRuntime}}",
                          cli=cli).stdout.split()
    assert info == ["linux", "overlay2", "isle-runtime"]


@clis
def test_run_exit_codes_and_streams(service, cli) -> None:
    cp = service.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
                        cli=cli, check=False)
    assert (cp.returncode, cp.stdout, cp.stderr) == (3, "out\n", "err\n")
    assert service.docker("ps", "-aq", cli=cli).stdout == ""  # --rm removed it
    # a missing command is Docker's 127, a missing image a clean error
    cp = service.docker("run", "--rm", "busybox", "/nonexistent", cli=cli, check=False)
    assert cp.returncode == 127, cp.stderr
    cp = service.docker("run", "--rm", "--pull", "never", "no-such-image:1", "true", cli=cli,
                        check=False)
    assert cp.returncode == 125 and "no-such-image" in cp.stderr
    assert service.docker("ps", "-aq", cli=cli).stdout == ""


@clis
def test_detached_logs_exec_inspect_stop_rm(service, cli) -> None:
    service.docker("run", "-d", "--name", "web", "-e", "A=1", "-l", "tier=front", "busybox",
                   "sh", "-c", "echo started; exec sleep 300", cli=cli)
    for _ in range(100):
        if "started" in service.docker("logs", "web", cli=cli).stdout:
            break
        time.sleep(0.05)
    assert service.docker("logs", "web", cli=cli).stdout == "started\n"
    cp = service.docker("exec", "-e", "B=2", "web", "sh", "-c", "echo $A$B; exit 4", cli=cli,
                        check=False)
    assert (cp.returncode, cp.stdout) == (4, "12\n")
    assert service.docker("exec", "-i", "web", "cat", cli=cli, input="piped\n").stdout == "piped\n"
    fmt = "{{.State.Status}} {{.Name}} {{index .Config.Labels \"tier\"}} {{.HostConfig.AutoRemove}}"
    assert service.docker("inspect", "-f", fmt, "web", cli=cli).stdout.split() == \
        ["running", "/web", "front", "false"]
    assert service.docker("ps", "--filter", "label=tier=front", "--format", "{{.Names}}",
                          cli=cli).stdout.split() == ["web"]
    assert "sleep 300" in service.docker("top", "web", cli=cli).stdout
    cp = service.docker("rm", "web", cli=cli, check=False)
    assert cp.returncode != 0 and "stop the container" in cp.stderr
    service.docker("stop", "-t", "1", "web", cli=cli)
    assert service.docker("inspect", "-f", "{{.State.ExitCode}}", "web", cli=cli).stdout.strip() \
        == "137"
    service.docker("rm", "web", cli=cli)
    cp = service.docker("inspect", "web", cli=cli, check=False)
    assert cp.returncode != 0 and "web" in cp.stderr


@clis
def test_cp_both_ways(service, cli, tmp_path) -> None:
    service.docker("run", "-d", "--name", "cc", "busybox", "sleep", "300", cli=cli)
    (tmp_path / "in.txt").write_text("hello")
    service.docker("cp", str(tmp_path / "in.txt"), "cc:/tmp/", cli=cli)
    assert service.docker("exec", "cc", "cat", "/tmp/in.txt", cli=cli).stdout == "hello"
    service.docker("exec", "cc", "sh", "-c", "echo back > /tmp/out.txt", cli=cli)
    service.docker("cp", "cc:/tmp/out.txt", str(tmp_path / "out.txt"), cli=cli)
    assert (tmp_path / "out.txt").read_text() == "back\n"
    service.docker("rm", "-f", "cc", cli=cli)


@clis
def test_networks_volumes_and_names(service, cli) -> None:
    service.docker("network", "create", "appnet", cli=cli)
    service.docker("volume", "create", "data", cli=cli)
    service.docker("run", "-d", "--name", "db", "--network", "appnet", "-v", "data:/data",
                   "busybox", "sh", "-c", "echo saved > /data/f; exec sleep 300", cli=cli)
    cp = service.docker("run", "--rm", "--network", "appnet", "busybox", "ping", "-c", "1",
                        "-W", "5", "db", cli=cli, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert service.docker("run", "--rm", "-v", "data:/d", "busybox", "cat", "/d/f",
                          cli=cli).stdout == "saved\n"
    nets = service.docker("network", "ls", "--format", "{{.Name}}", cli=cli).stdout.split()
    assert "appnet" in nets
    assert "data" in service.docker("volume", "ls", "-q", cli=cli).stdout.split()
    service.docker("rm", "-f", "db", cli=cli)
    service.docker("network", "rm", "appnet", cli=cli)
    service.docker("volume", "rm", "data", cli=cli)


@clis
def test_published_port(service, cli) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service.docker("run", "-d", "--name", "srv", "-p", f"127.0.0.1:{port}:8080", "busybox",
                   "sh", "-c", "while true; do echo pong | nc -l -p 8080; done", cli=cli)
    got = b""
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                got = c.recv(100)
            if got:
                break
        except OSError:
            time.sleep(0.1)
    assert got == b"pong\n"
    assert f"127.0.0.1:{port}->8080/tcp" in service.docker("ps", "--format", "{{.Ports}}",
                                                           cli=cli).stdout
    service.docker("rm", "-f", "srv", cli=cli)


@clis
def test_events_stream(service, cli) -> None:
    since = str(int(time.time()) - 1)
    service.docker("run", "--rm", "--name", "ev", "busybox", "true", cli=cli)
    cp = service.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                        "--filter", "type=container", "--format", "{{.Action}}", cli=cli)
    acts = cp.stdout.split()
    assert "create" in acts and "destroy" in acts, acts


def test_tcp_is_refused_without_tls(tmp_path) -> None:
    cp = subprocess.run([ISLE, "--root", str(tmp_path / "r"), "system", "service",
                         "tcp://127.0.0.1:2375"], capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0 and "TLS" in cp.stderr
