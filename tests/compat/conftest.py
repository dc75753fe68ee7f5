"""Real Docker clients (the docker CLI, docker-py) against `isle system service` on a private root.

Each test gets a service of its own on a unix socket under its tmp dir; the integration suite's
leak check applies (containers, mounts, cgroups, links, netns and processes must all be gone).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ISLE = str(REPO / ".venv" / "bin" / "isle")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_leaks = _load("isle_compat_leaks", REPO / "tests" / "integration" / "conftest.py")
no_leaks = _leaks.no_leaks

#: the docker CLIs to drive: the one on PATH (28.x here) and Debian's docker.io client (20.10)
CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]


class Service:
    """`isle system service` on a private root; `isle(...)` runs the isle CLI on the same root."""

    def __init__(self, tmp: Path) -> None:
        self.root, self.run = tmp / "root", tmp / "run"
        self.sock = tmp / "d.sock"
        self.host = f"unix://{self.sock}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ISLE_", "DOCKER_"))}
        self.env["DOCKER_HOST"] = self.host
        self.env["DOCKER_CONFIG"] = str(tmp / "docker-config")
        self.log = open(tmp / "service.log", "wb")
        self.proc = subprocess.Popen(
            [ISLE, "--root", str(self.root), "--runroot", str(self.run), "system", "service",
             "--time", "0", self.host], stdout=self.log, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True)
        end = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.sock))
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"the service did not start: {self.logtext()}") from None
                time.sleep(0.05)

    def logtext(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def isle(self, *args: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([ISLE, "--root", str(self.root), "--runroot", str(self.run), *args],
                            capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and cp.returncode:
            raise AssertionError(f"isle {args} -> {cp.returncode}: {cp.stderr}")
        return cp

    def docker(self, *args: str, cli: str = "", check: bool = True, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([cli or CLIS[0], *args], capture_output=True, text=True,
                            timeout=timeout, env=self.env, input=input)
        if check and cp.returncode:
            raise AssertionError(f"docker {' '.join(args)} -> {cp.returncode}\n{cp.stdout}\n"
                                 f"{cp.stderr}\nservice log:\n{self.logtext()}")
        return cp

    def close(self) -> None:
        cp = self.isle("ps", "-aq", "--no-trunc", check=False)
        if cp.stdout.split():
            self.isle("rm", "-f", *cp.stdout.split(), check=False)
        nets = self.isle("network", "ls", "-q", check=False).stdout.split()
        for n in nets:
            self.isle("network", "rm", n, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(s.run, ignore_errors=True)


class DockerdService(Service):
    """Debian's dockerd with its own roots (bench/peers.py), busybox imported from the same
    busybox-static rootfs isle makes its own from: the same tests show Docker's own behaviour."""

    def __init__(self, tmp: Path) -> None:  # noqa: D107 -- no isle service here
        peers = _load("isle_compat_peers", REPO / "bench" / "peers.py")
        self.dir = tmp
        self.d = peers.Dockerd(tmp / "dockerd").start()
        self.sock = self.d.sock
        self.host = self.d.host
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ISLE_", "DOCKER_"))}
        self.env["DOCKER_HOST"] = self.host
        self.env["DOCKER_CONFIG"] = str(tmp / "docker-config")
        self.log = open(tmp / "dockerd" / "dockerd.log", "ab")
        rootfs = tmp / "rootfs"
        peers.busybox_rootfs(rootfs)
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp / "busybox.tar"), "."],
                       check=True)
        self.docker("import", str(tmp / "busybox.tar"), "busybox:latest")

    def isle(self, *args: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError("dockerd has no isle CLI")

    def close(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        self.d.stop()
        self.log.close()
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mp = line.split()[4]
            if mp.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", mp], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def _dockerd_session(request: pytest.FixtureRequest) -> Iterator[DockerdService | None]:
    """One dockerd for the session when a selected test runs against it: session-scoped and
    autouse, so it starts before any test's leak snapshot and stops after the last."""
    want = any(getattr(i, "callspec", None) is not None and
               i.callspec.params.get("backend") == "dockerd" for i in request.session.items)
    if not want or os.geteuid() != 0 or shutil.which("dockerd") is None:
        yield None
        return
    d = DockerdService(request.config._tmp_path_factory.mktemp("dockerd"))  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def dockerd_service(_dockerd_session: DockerdService | None) -> DockerdService:
    if _dockerd_session is None:
        pytest.skip("needs root and dockerd (Debian's docker.io)")
    return _dockerd_session


@pytest.fixture(params=["isle", "dockerd"])
def backend(request: pytest.FixtureRequest) -> Iterator[Service]:
    """The same test against isle's service and against dockerd (Docker's own behaviour)."""
    if request.param == "isle":
        yield request.getfixturevalue("service")
        return
    d = request.getfixturevalue("dockerd_service")
    yield d
    # dockerd unmounts a removed container's overlay a moment after `run --rm` returns
    end = time.monotonic() + 15
    while time.monotonic() < end and any(
            "/overlay2/" in ln.split()[4] and ln.split()[4].startswith(str(d.dir))
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()):
        time.sleep(0.1)
