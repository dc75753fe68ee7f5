"""The legacy /build endpoint: `docker build` with both CLIs (28.x without buildx falls back to
the legacy builder by itself), docker-py's images.build; build args, target, labels, Dockerfile
path, errors in the JSON stream; the context is unpacked safely; a client killed mid-build leaves
no image and no build container behind."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

clis = pytest.mark.parametrize("cli", CLIS or [pytest.param("", marks=pytest.mark.skip(
    reason="no docker CLI on this machine"))], ids=lambda c: os.path.basename(os.path.dirname(c))
    if c else "none")

DOCKERFILE = """\
FROM busybox AS base
ARG GREETING=hi
RUN echo "$GREETING" > /greeting
FROM base AS final
COPY f.txt /f.txt
CMD ["cat", "/greeting", "/f.txt"]
"""


def _context(d: Path, dockerfile: str = DOCKERFILE, name: str = "Dockerfile") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(dockerfile)
    (d / "f.txt").write_text("file\n")
    return d


@clis
def test_docker_build_args_target_labels_file(service, cli, tmp_path) -> None:
    ctx = _context(tmp_path / "ctx", name="sub/Build.file")
    cp = service.docker("build", "-t", "mytest:1", "-f", str(ctx / "sub" / "Build.file"),
                        "--build-arg", "GREETING=hello", "--label", "team=isle", str(ctx),
                        cli=cli)
    out = cp.stdout + cp.stderr
    assert "Successfully built" in out and out.count("Successfully tagged mytest:1") == 1, out
    assert service.docker("run", "--rm", "mytest:1", cli=cli).stdout == "hello\nfile\n"
    assert service.docker("inspect", "-f", '{{index .Config.Labels "team"}}', "mytest:1",
                          cli=cli).stdout.strip() == "isle"
    # --target stops at a stage: base has no /f.txt, the label goes on it
    service.docker("build", "-q", "-t", "mytest:base", "--target", "base", "--label", "s=b",
                   "-f", str(ctx / "sub" / "Build.file"), str(ctx), cli=cli)
    cp = service.docker("run", "--rm", "mytest:base", "ls", "/f.txt", cli=cli, check=False)
    assert cp.returncode != 0
    assert service.docker("inspect", "-f", '{{index .Config.Labels "s"}}', "mytest:base",
                          cli=cli).stdout.strip() == "b"
    # a failing step: the CLI exits non-zero with the step's error, no image is tagged
    bad = _context(tmp_path / "bad", "FROM busybox\nRUN exit 3\n")
    cp = service.docker("build", "-t", "bad:1", str(bad), cli=cli, check=False)
    assert cp.returncode != 0 and "3" in cp.stderr + cp.stdout
    assert service.docker("images", "-q", "bad:1", cli=cli).stdout.strip() == ""
    service.docker("rmi", "mytest:1", "mytest:base", cli=cli)


def test_docker_py_build_and_bad_contexts(service, tmp_path) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=service.host, timeout=120)
    try:
        ctx = _context(tmp_path / "ctx")
        img, logs = client.images.build(path=str(ctx), tag="pyb:1", buildargs={"GREETING": "yo"},
                                        labels={"k": "v"}, rm=True)
        assert "pyb:1" in img.tags and img.labels.get("k") == "v"
        assert any("Step" in (x.get("stream") or "") or "STEP" in (x.get("stream") or "")
                   for x in logs)
        assert client.containers.run("pyb:1", remove=True) == b"yo\nfile\n"
        # a Dockerfile from a file object (docker-py sends it as the only member of a tar)
        img2, _ = client.images.build(fileobj=io.BytesIO(b"FROM busybox\nLABEL x=y\n"),
                                      tag="pyb:2")
        assert img2.labels.get("x") == "y"
        with pytest.raises(docker.errors.BuildError):
            client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN false\n"), tag="pyb:3")
        api = client.api
        # a context member escaping the context, a Dockerfile outside it, bad JSON in buildargs
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            data = b"FROM busybox\n"
            ti = tarfile.TarInfo("Dockerfile")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
            ti = tarfile.TarInfo("../../escape")
            ti.size = 1
            t.addfile(ti, io.BytesIO(b"x"))
        r = api._post(api._url("/build"), data=buf.getvalue(),
                      headers={"Content-Type": "application/x-tar"})
        assert r.status_code == 400 and "outside" in r.json()["message"]
        r = api._post(api._url("/build"), params={"dockerfile": "../../etc/passwd"},
                      data=_tar({"Dockerfile": b"FROM busybox\n"}),
                      headers={"Content-Type": "application/x-tar"})
        assert r.status_code == 400 and "outside the build context" in r.json()["message"]
        r = api._post(api._url("/build"), params={"buildargs": "{nope"},
                      data=_tar({"Dockerfile": b"FROM busybox\n"}),
                      headers={"Content-Type": "application/x-tar"})
        assert r.status_code == 400 and "buildargs" in r.json()["message"]
        r = api._post(api._url("/build"), data=b"not a tar at all" * 100,
                      headers={"Content-Type": "application/x-tar"})
        assert r.status_code == 400 and "tar" in r.json()["message"]
        assert not (tmp_path.parent.parent / "escape").exists()
        client.images.remove("pyb:1")
        client.images.remove("pyb:2")
    finally:
        client.close()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for n, data in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_killed_client_mid_build_leaves_nothing(service, tmp_path) -> None:
    ctx = _context(tmp_path / "ctx", "FROM busybox\nRUN echo step1\nRUN sleep 4\n"
                                     "RUN echo after > /after\n")
    env = dict(service.env)
    p = subprocess.Popen([CLIS[0], "build", "-t", "killed:1", str(ctx)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    end = time.monotonic() + 60
    while b"sleep 4" not in seen and time.monotonic() < end:
        seen += p.stdout.read1(4096) or b""
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    time.sleep(6)  # the step ends; the builder notices the client is gone at its next line
    assert service.docker("images", "-q", "killed:1").stdout.strip() == ""
    assert "killed" not in service.isle("images").stdout
    assert service.isle("ps", "-aq").stdout.strip() == ""
