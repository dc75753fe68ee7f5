"""Real registries for image tests: Debian's docker-registry on 127.0.0.1, plain / htpasswd / TLS.

Session-scoped, each on a free port with its own storage dir, stopped by pid. Never uses the
packaged service on :5000.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from isle.config import Settings

REPO = Path(__file__).resolve().parents[3]
# the real `isle` CLI (its image verbs come from isle.cli.images.register)
ISLE = [str(REPO / ".venv" / "bin" / "isle")]


@dataclass
class Registry:
    addr: str  # 127.0.0.1:PORT
    proc: subprocess.Popen
    user: str = ""
    password: str = ""
    ca: str = ""
    tls: bool = False

    @property
    def url(self) -> str:
        return ("https://" if self.tls else "http://") + self.addr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(d: Path, *, auth: bool = False, tls: bool = False) -> Registry:
    d.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cfg = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {d / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: isle-test",
    ]
    reg = Registry(addr=f"127.0.0.1:{port}", proc=None)  # type: ignore[arg-type]
    if tls:
        key, crt = d / "key.pem", d / "cert.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                str(key),
                "-out",
                str(crt),
            ],
            check=True,
            capture_output=True,
        )
        cfg += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        reg.tls, reg.ca = True, str(crt)
    if auth:
        reg.user, reg.password = "isleuser", "islepass-" + os.urandom(4).hex()
        hp = d / "htpasswd"
        subprocess.run(
            ["htpasswd", "-Bbc", str(hp), reg.user, reg.password], check=True, capture_output=True
        )
        cfg += ["auth:", "  htpasswd:", "    realm: isle-test", f"    path: {hp}"]
    (d / "config.yml").write_text("\n".join(cfg) + "\n")
    log = open(d / "registry.log", "wb")
    reg.proc = subprocess.Popen(
        ["docker-registry", "serve", str(d / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            r = httpx.get(reg.url + "/v2/", verify=False, timeout=1)
            if r.status_code in (200, 401):
                return reg
        except httpx.TransportError:
            pass
        if reg.proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_registry(reg)
    raise RuntimeError(f"docker-registry did not start: {(d / 'registry.log').read_text()[-2000:]}")


def stop_registry(reg: Registry) -> None:
    if reg.proc.poll() is None:
        reg.proc.send_signal(signal.SIGTERM)
        try:
            reg.proc.wait(10)
        except subprocess.TimeoutExpired:
            reg.proc.kill()
            reg.proc.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry on 127.0.0.1."""
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield reg
    stop_registry(reg)


@pytest.fixture(scope="session")
def registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTPS (self-signed) with htpasswd basic auth."""
    reg = start_registry(tmp_path_factory.mktemp("registry-auth"), auth=True, tls=True)
    yield reg
    stop_registry(reg)


@pytest.fixture
def settings(tmp_root: Path) -> Settings:
    return Settings(
        root=str(tmp_root), runroot=str(tmp_root / "run"), cache=str(tmp_root / "cache")
    )


def run_isle(
    root: Path,
    *args: str,
    check: bool = True,
    timeout: float = 120,
    input: bytes | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run the real `isle` CLI with --root."""
    e = dict(os.environ)
    e.update(env or {})
    cp = subprocess.run(
        [*ISLE, "--root", str(root), *args],
        capture_output=True,
        timeout=timeout,
        input=input,
        env=e,
    )
    if check and cp.returncode != 0:
        raise AssertionError(
            f"isle {' '.join(args)} exited {cp.returncode}: {cp.stderr.decode()[-2000:]}"
        )
    return cp


@pytest.fixture
def isle_at():
    """isle_at(root, *args, check=True): the image CLI with --root (bytes out), as a subprocess;
    the `isle` fixture (tests/integration/engine) is the one bound to a private root."""
    return run_isle


@pytest.fixture
def isle_argv() -> list[str]:
    """argv prefix of the image CLI (before --root), for tests that manage the process."""
    return list(ISLE)
