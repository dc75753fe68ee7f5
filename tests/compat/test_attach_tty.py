"""stdin and terminals through the API: `docker run -i`, `-t`, `-it`, `docker exec -it`, resize,
docker-py's attach_socket; a client killed mid-attach leaves no waiting stream behind."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest

CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

clis = pytest.mark.parametrize("cli", CLIS or [pytest.param("", marks=pytest.mark.skip(
    reason="no docker CLI on this machine"))], ids=lambda c: os.path.basename(os.path.dirname(c))
    if c else "none")


def _in_pty(service, cli: str, args: list[str], rows: int = 33, cols: int = 99,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI on a terminal (util-linux `script`) of rows x cols."""
    cmd = f"stty rows {rows} cols {cols}; {shlex.quote(cli)} {shlex.join(args)}"
    return subprocess.run(["script", "-qefc", cmd, "/dev/null"], capture_output=True, text=True,
                          timeout=60, env=service.env, input=input)


def _api_version(service, cli: str) -> tuple[int, int]:
    v = service.docker("version", "--format", "{{.Client.APIVersion}}", cli=cli).stdout.strip()
    a, b = v.split(".")
    return int(a), int(b)


@clis
def test_run_interactive_stdin(backend, cli) -> None:
    service = backend  # isle's API, and dockerd for Docker's own behaviour
    cp = service.docker("run", "-i", "--rm", "busybox", "sh", "-c",
                        "read a; echo got:$a; cat; echo end >&2", cli=cli,
                        input="hello\nline2\nline3\n")
    assert (cp.stdout, cp.stderr) == ("got:hello\nline2\nline3\n", "end\n")
    # stdin's EOF reaches the container: `cat` ends, the exit code is the container's
    cp = service.docker("run", "-i", "--rm", "busybox", "sh", "-c", "wc -c; exit 5", cli=cli,
                        input="x" * 100000, check=False)
    assert (cp.returncode, cp.stdout.strip()) == (5, "100000")
    assert service.docker("ps", "-aq", cli=cli).stdout == ""


@clis
def test_run_tty_and_terminal_size(backend, cli) -> None:
    service = backend  # isle's API, and dockerd for Docker's own behaviour
    cp = service.docker("run", "-t", "--rm", "busybox", "sh", "-c", "tty; echo err >&2", cli=cli)
    assert cp.stdout.replace("\r", "").split() == ["/dev/pts/0", "err"]  # one stream on a tty
    # 28.x sends HostConfig.ConsoleSize (API 1.42+): the terminal has its size from the start;
    # 20.10 resizes after the start, as with dockerd: give that a moment
    wait = "" if _api_version(service, cli) >= (1, 42) else "sleep 1; "
    cp = _in_pty(service, cli, ["run", "-it", "--rm", "busybox", "sh", "-c", wait + "stty size"])
    assert cp.returncode == 0 and "33 99" in cp.stdout, cp.stdout + cp.stderr
    cp = _in_pty(service, cli, ["run", "-it", "--rm", "busybox", "sh"], input="echo $((6*7))\nexit 3\n")
    assert cp.returncode == 3 and "42" in cp.stdout, cp.stdout + cp.stderr
    assert service.docker("ps", "-aq", cli=cli).stdout == ""


@clis
def test_exec_tty_and_resize(backend, cli) -> None:
    service = backend  # isle's API, and dockerd for Docker's own behaviour
    service.docker("run", "-d", "--name", "tt", "busybox", "sleep", "300", cli=cli)
    # 28.x sends the exec's ConsoleSize (API 1.42+); 20.10 resizes after the start (dockerd races
    # the same way): give that a moment
    wait = "" if _api_version(service, cli) >= (1, 42) else "sleep 1; "
    cp = _in_pty(service, cli, ["exec", "-it", "tt", "sh", "-c", wait + "stty size"], rows=21,
                 cols=77)
    assert cp.returncode == 0 and "21 77" in cp.stdout, cp.stdout + cp.stderr
    cp = _in_pty(service, cli, ["exec", "-it", "tt", "sh"], input="echo $((5*5))\nexit 4\n")
    assert cp.returncode == 4 and "25" in cp.stdout, cp.stdout + cp.stderr
    cp = service.docker("exec", "-t", "tt", "tty", cli=cli)
    assert cp.stdout.strip().startswith("/dev/pts/")
    service.docker("rm", "-f", "tt", cli=cli)


def test_docker_py_attach_socket_stdin(service) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=service.host, timeout=60)
    try:
        c = client.containers.create("busybox", ["sh", "-c", "read a; echo in:$a"],
                                     stdin_open=True)
        s = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = s._sock
        c.start()
        raw.sendall(b"py\n")
        out = b""
        raw.settimeout(30)
        while True:
            b = raw.recv(4096)
            if not b:
                break
            out += b
        raw.close()
        assert out.endswith(b"in:py\n") and out[0] == 1  # a stdout frame
        assert c.wait(timeout=30)["StatusCode"] == 0
        # a tty container, resized through the API
        t = client.containers.run("busybox", ["sh", "-c", "sleep 1; stty size"], tty=True,
                                  detach=True)
        t.resize(height=12, width=34)
        assert t.wait(timeout=30)["StatusCode"] == 0
        assert t.logs().strip() == b"12 34"
        t.remove()
        c.remove()
    finally:
        client.close()


def test_killed_client_mid_attach_leaves_nothing(service) -> None:
    """A client killed while attached to a created (never started) container, or to a running
    one: the service drops the attach, the container can still be started, stopped, removed."""
    service.docker("create", "--name", "kk", "-i", "busybox", "cat")
    p = subprocess.Popen([CLIS[0], "attach", "kk"], env=service.env, stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    service.docker("start", "kk")
    p = subprocess.Popen([CLIS[0], "attach", "kk"], env=service.env, stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    service.docker("rm", "-f", "kk")
    assert service.docker("ps", "-aq").stdout == ""
    # the service still answers
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(service.sock))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in s.recv(4096)


def test_reattach_and_detach_keys(service) -> None:
    """`docker run -dit` then attach, detach (ctrl-p ctrl-q or the client leaving): the shell
    keeps running with its stdin open (StdinOnce false: conmon's --leave-stdin-open); attach
    again and it still answers."""
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=service.host, timeout=60)
    try:
        c = client.containers.run("busybox", ["sh"], detach=True, stdin_open=True, tty=True,
                                  name="re-att")

        def session(cmd: bytes, until: bytes, detach: bytes = b"") -> bytes:
            s = client.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1})
            raw = s._sock
            raw.settimeout(20)
            raw.sendall(cmd)
            buf = b""
            while until not in buf:
                b = raw.recv(4096)
                if not b:
                    break
                buf += b
            if detach:
                raw.sendall(detach)
                raw.settimeout(10)
                assert raw.recv(4096) == b""  # the service ends the attach
            raw.close()
            return buf

        assert b"one" in session(b"echo one\n", b"one\r\n")  # the client just leaves
        time.sleep(0.3)
        c.reload()
        assert c.status == "running"
        assert b"two" in session(b"echo two\n", b"two\r\n", detach=b"\x10\x11")  # ctrl-p ctrl-q
        time.sleep(0.3)
        c.reload()
        assert c.status == "running"
        session(b"exit 3\n", b"\x00never")
        assert c.wait(timeout=30)["StatusCode"] == 3
        c.remove()
    finally:
        client.close()
