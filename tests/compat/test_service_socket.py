"""The API socket: 0660 root:isle when made by the service, the socket systemd hands over
(socket activation, as contrib/systemd/isle.socket) is used as it is, request bodies are bounded
and malformed ones get Docker's JSON error shape on a connection that does not hang."""

from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ISLE = str(REPO / ".venv" / "bin" / "isle")

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def _get(path: str, req: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(path)
        s.sendall(req)
        out = b""
        while True:  # the whole response: headers, then Content-Length bytes
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                n = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                     if h.lower().startswith(b"content-length:")]
                if not n or len(body) >= n[0]:
                    return out
            b = s.recv(4096)
            if not b:
                return out
            out += b


def _post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_socket_mode_and_group(service) -> None:
    st = os.stat(service.sock)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_uid == 0
    try:
        gid = grp.getgrnam("isle").gr_gid
    except KeyError:
        pytest.skip("no isle group (scripts/setup makes it)")
    assert st.st_gid == gid


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate")
def test_socket_activation(tmp_path: Path) -> None:
    sock = tmp_path / "act.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISLE_", "LISTEN_"))}
    p = subprocess.Popen(["systemd-socket-activate", "-l", str(sock), ISLE, "--root",
                          str(tmp_path / "root"), "--runroot", str(tmp_path / "run"), "system",
                          "service", "--time", "2", f"unix://{sock}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        out = _get(str(sock), b"GET /v1.41/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"Api-Version: 1.44" in out, out
        # idle for --time seconds: the service exits; the socket stays systemd's
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
        shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_bad_bodies_are_docker_errors(service) -> None:
    path = str(service.sock)
    cases = [
        (b"POST /v1.44/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
         b"\r\nContent-Length: 5\r\n\r\n{nope", 400, "invalid JSON"),
        (b"POST /v1.44/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]",
         400, "JSON dict"),
        (b"POST /v1.44/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999"
         b"\r\n\r\n", 413, "larger than"),
        (b"POST /v1.44/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n"
         b'{"Image": "busybox", "Tty": 1', 400, ""),  # short body: ends early
        (b"POST /v1.44/build?buildargs=%7Bx HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
         400, "buildargs"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "HostConfig": '
                                           b'{"ConsoleSize": 3}}'), 400, "ConsoleSize"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "Cmd": "true", "Env": 5}'),
         400, "Env"),
        (_post("/v1.44/networks/create", b'{"Name": 7}'), 400, "Name"),
        # every field of Docker's shape is type-checked: a 400 naming it, never a 500
        (_post("/v1.44/networks/create", b'{"Name": "n1", "IPAM": "x"}'), 400, "IPAM"),
        (_post("/v1.44/networks/create", b'{"Name": "n1", "Labels": [1]}'), 400, "Labels"),
        (_post("/v1.44/volumes/create", b'{"Name": 5}'), 400, "Name"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "HostConfig": '
                                           b'{"Ulimits": "x"}}'), 400, "Ulimits"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "HostConfig": '
                                           b'{"PortBindings": {"80/tcp": 1}}}'), 400, "PortBindings"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "HostConfig": '
                                           b'{"NetworkMode": 1}}'), 400, "NetworkMode"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "HostConfig": '
                                           b'{"Memory": 1e300}}'), 400, "Memory"),
        (_post("/v1.44/containers/create", b'{"Image": "busybox", "Healthcheck": '
                                           b'{"Test": 3}}'), 400, "Healthcheck"),
        (_post("/v1.44/auth", b'{"username": 1}'), 400, "username"),
        (b"GET /v1.12/_ping HTTP/1.1\r\nHost: x\r\n\r\n", 400, "too old"),
    ]
    for req, status, words in cases:
        if req.endswith(b'"Tty": 1'):
            # the client stops sending: the service must answer once the connection closes
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(20)
                s.connect(path)
                s.sendall(req)
                s.shutdown(socket.SHUT_WR)
                out = b""
                while chunk := s.recv(65536):  # headers and body may come apart
                    out += chunk
        else:
            out = _get(path, req)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.split()[1] == str(status).encode(), out
        assert list(json.loads(body)) == ["message"], out  # Docker's error shape
        assert words in json.loads(body)["message"], out
        assert out.count(b"\r\nServer: ") == 1, out


def test_burst_of_clients_all_answered(service) -> None:
    """50 clients connecting at once all get answers (a small listen backlog made some fail)."""
    import threading

    errors: list[str] = []
    go = threading.Event()

    def one() -> None:
        go.wait()
        try:
            out = _get(str(service.sock), b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\n"
                                          b"Host: x\r\n\r\n")
            if not out.startswith(b"HTTP/1.1 200"):
                errors.append(out[:100].decode(errors="replace"))
        except OSError as exc:
            errors.append(str(exc))

    ths = [threading.Thread(target=one) for _ in range(50)]
    for t in ths:
        t.start()
    go.set()
    for t in ths:
        t.join()
    assert errors == [], service.logtext()
