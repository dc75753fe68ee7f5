"""docker-compose (Debian's 1.29.2, python3-docker 5.0.3: PyPI's 1.29.2 needs PyYAML 5 and a
docker-py < 7, neither installs on Python 3.11 here) runs a three-service project against isle:
a build, a named volume, a network, depends_on with a healthcheck condition, a published port,
healthchecks; up -d, ps, logs, exec, down -v. testcontainers (PyPI) starts a generic container
with a log wait strategy and an exposed port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

COMPOSE = shutil.which("docker-compose")

SERVE = """#!/bin/sh
echo api starting
while true; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n' "$(cat /data/msg)" | nc -l -p 8080; done
"""

PROJECT = """\
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo stored > /data/msg; touch /data/ready; echo db up; exec sleep 300"]
    volumes: ["data:/data"]
    networks: [backend]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
  api:
    build: ./api
    depends_on:
      db:
        condition: service_healthy
    volumes: ["data:/data"]
    networks: [backend]
    ports: ["127.0.0.1:PORT:8080"]
    healthcheck:
      test: ["CMD", "test", "-x", "/serve.sh"]
      interval: 1s
      retries: 30
  web:
    image: busybox
    depends_on: [api]
    networks: [backend]
    command: ["sh", "-c", "until wget -qO- http://api:8080/; do sleep 0.2; done; exec sleep 300"]
volumes:
  data: {}
networks:
  backend: {}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(COMPOSE is None, reason="needs docker-compose (Debian's package)")
def test_compose_three_services(service, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "api").mkdir(parents=True)
    (proj / "api" / "Dockerfile").write_text("FROM busybox\nCOPY serve.sh /serve.sh\n"
                                             "RUN chmod +x /serve.sh\nCMD [\"/serve.sh\"]\n")
    (proj / "api" / "serve.sh").write_text(SERVE)
    port = _free_port()
    (proj / "docker-compose.yml").write_text(PROJECT.replace("PORT", str(port)))

    def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([COMPOSE, "-p", "cmp", *args], cwd=proj, env=service.env,
                            capture_output=True, text=True, timeout=150)
        if check and cp.returncode:
            raise AssertionError(f"docker-compose {args} -> {cp.returncode}\n{cp.stdout}\n"
                                 f"{cp.stderr}\nservice log:\n{service.logtext()}")
        return cp

    try:
        compose("up", "-d")
        ps = compose("ps").stdout
        assert "cmp_db_1" in ps and "cmp_api_1" in ps and "cmp_web_1" in ps, ps
        assert "(healthy)" in ps  # db had to be healthy before api was made
        assert f"127.0.0.1:{port}->8080/tcp" in ps
        body = b""
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
                    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    body = c.recv(4096)
                if b"stored" in body:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert body.endswith(b"stored\n"), body
        for _ in range(100):  # web reached api by its service name on the project network
            logs = compose("logs", "--no-color").stdout
            if "web_1" in logs and "stored" in logs.split("web_1", 1)[1]:
                break
            time.sleep(0.1)
        assert "db up" in logs and "api starting" in logs
        assert compose("exec", "-T", "db", "cat", "/data/msg").stdout == "stored\n"
        cp = compose("exec", "-T", "api", "sh", "-c", "exit 6", check=False)
        assert cp.returncode == 6
    finally:
        compose("down", "-v", "--rmi", "local", check=False)
    assert service.docker("ps", "-aq").stdout == ""
    assert "cmp_data" not in service.docker("volume", "ls", "-q").stdout
    assert "cmp_backend" not in service.docker("network", "ls").stdout


def test_testcontainers_generic_container(service, monkeypatch) -> None:
    pytest.importorskip("testcontainers")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    monkeypatch.setenv("DOCKER_HOST", service.host)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")  # its reaper image is not here
    monkeypatch.delenv("TESTCONTAINERS_HOST_OVERRIDE", raising=False)
    c = DockerContainer("busybox").with_exposed_ports(8080).with_command(
        ["sh", "-c", "echo ready; while true; do echo pong | nc -l -p 8080; done"])
    with c:
        wait_for_logs(c, "ready", timeout=30)
        host, port = c.get_container_host_ip(), int(c.get_exposed_port(8080))
        got = b""
        for _ in range(100):
            try:
                with socket.create_connection((host, port), timeout=2) as s:
                    got = s.recv(100)
                if got:
                    break
            except OSError:
                time.sleep(0.1)
        assert got == b"pong\n"
        assert c.exec(["echo", "hi"]).output == b"hi\n"
    assert service.docker("ps", "-aq").stdout == ""
