"""Push, pull and login through the API against Debian's docker-registry on 127.0.0.1; a client
that goes away mid-pull cancels it: no half-made image is left."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.registry, pytest.mark.timeout(240)]

_spec = importlib.util.spec_from_file_location(
    "isle_compat_registry", Path(__file__).resolve().parents[1] / "integration" / "image" /
    "conftest.py")
assert _spec and _spec.loader
_reg = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _reg  # its dataclasses look themselves up there
_spec.loader.exec_module(_reg)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    r = _reg.start_registry(tmp_path_factory.mktemp("compat-registry"))
    yield r
    _reg.stop_registry(r)


@pytest.fixture(scope="module")
def registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    r = _reg.start_registry(tmp_path_factory.mktemp("compat-registry-auth"), auth=True)
    yield r
    _reg.stop_registry(r)


def test_push_pull_and_cancelled_pull(service, registry, tmp_path) -> None:
    ref = f"{registry.addr}/big:1"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(
        "FROM busybox\nRUN head -c 40000000 /dev/urandom > /big\n")
    service.docker("build", "-q", "-t", ref, str(tmp_path / "ctx"), timeout=120)
    out = service.docker("push", ref, timeout=120).stdout
    assert "digest: sha256:" in out, out
    service.docker("rmi", ref)
    # pull into a second service on a fresh root, so every layer is downloaded
    (tmp_path / "other").mkdir()
    other = type(service)(tmp_path / "other")
    try:
        _cancelled_then_full_pull(other, registry, ref)
    finally:
        other.close()
        shutil.rmtree(other.run, ignore_errors=True)


def _cancelled_then_full_pull(service, registry, ref: str) -> None:
    # a client that reads the pull's progress, then goes away
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(str(service.sock))
        s.sendall(f"POST /v1.44/images/create?fromImage={registry.addr}/big&tag=1 HTTP/1.1\r\n"
                  "Host: x\r\nContent-Length: 0\r\n\r\n".encode())
        got = b""
        while b"Downloading" not in got:
            assert b"\r\n0\r\n\r\n" not in got, got  # the pull ended: nothing downloaded
            b = s.recv(4096)
            assert b, got
            got += b
    time.sleep(3)
    assert service.docker("images", "-q", ref).stdout.strip() == ""  # cancelled, undone
    service.docker("pull", ref, timeout=120)
    assert service.docker("run", "--rm", ref, "sh", "-c", "wc -c < /big").stdout.strip() == \
        "40000000"
    service.docker("rmi", ref)


def test_login_and_authenticated_push(service, registry_auth) -> None:
    r = registry_auth
    cp = service.docker("login", "-u", r.user, "--password-stdin", r.addr, input=r.password)
    assert "Login Succeeded" in cp.stdout
    cp = service.docker("login", "-u", r.user, "--password-stdin", r.addr, input="wrong",
                        check=False)
    assert cp.returncode != 0
    ref = f"{r.addr}/auth/busybox:1"
    service.docker("tag", "busybox", ref)
    service.docker("push", ref, timeout=120)  # X-Registry-Auth from the CLI's stored login
    service.docker("rmi", ref)
    service.docker("pull", ref, timeout=120)
    service.docker("rmi", ref)
