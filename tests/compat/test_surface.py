"""More of the surface through the docker CLIs and docker-py: import from a tar body, stats with a
CPU figure the CLI can compute, update of a live container, attach to a running container."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time

import pytest

CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

clis = pytest.mark.parametrize("cli", CLIS or [pytest.param("", marks=pytest.mark.skip(
    reason="no docker CLI on this machine"))], ids=lambda c: os.path.basename(os.path.dirname(c))
    if c else "none")


@clis
def test_import_stats_update(service, cli, tmp_path) -> None:
    # docker import FILE: the rootfs tar goes as the body (fromSrc=-)
    service.docker("run", "--name", "src1", "busybox", "sh", "-c", "echo made > /made", cli=cli)
    service.docker("export", "-o", str(tmp_path / "fs.tar"), "src1", cli=cli)
    service.docker("rm", "src1", cli=cli)
    out = service.docker("import", "-c", "CMD [\"cat\", \"/made\"]", str(tmp_path / "fs.tar"),
                         "imported:1", cli=cli).stdout
    assert out.strip().startswith("sha256:")
    assert service.docker("run", "--rm", "imported:1", cli=cli).stdout == "made\n"
    service.docker("rmi", "imported:1", cli=cli)
    # stats: a busy container shows a CPU figure, an idle one about zero
    service.docker("run", "-d", "--name", "busy", "busybox", "sh", "-c",
                   "while :; do :; done", cli=cli)
    cp = service.docker("stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}}",
                        "busy", cli=cli)
    name, cpu, *_ = cp.stdout.split()
    assert name == "busy" and float(cpu.rstrip("%")) > 5, cp.stdout
    # update: the live container's limit changes (tests/compat/test_update.py checks cgroups)
    service.docker("update", "--memory", "64m", "busy", cli=cli)
    assert service.docker("inspect", "-f", "{{.HostConfig.Memory}}", "busy",
                          cli=cli).stdout.strip() == str(64 << 20)
    service.docker("rm", "-f", "busy", cli=cli)


def test_attach_to_running_container_docker_py(service) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=service.host, timeout=60)
    try:
        c = client.containers.run("busybox", ["sh", "-c", "while read l; do echo got:$l; done"],
                                  detach=True, stdin_open=True)
        time.sleep(0.5)
        s = client.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        raw = s._sock
        raw.settimeout(20)
        raw.sendall(b"one\n")
        buf = b""
        while b"got:one\n" not in buf:
            b = raw.recv(4096)
            assert b, buf
            buf += b
        raw.close()
        c.remove(force=True)
    finally:
        client.close()
