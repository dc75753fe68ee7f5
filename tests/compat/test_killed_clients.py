"""Clients killed mid-attach, mid-build, mid-pull and in long waits (logs -f, events, wait)
leave nothing behind in the service: no half-made container or image, and none of what a request
holds while it runs (service threads, open files, temp files under TMPDIR and the root's tmp
dirs, mounts); the service still answers.
Docker's daemon gives the same guarantee per request (its goroutines end with the connection)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]

pytestmark = [pytest.mark.root, pytest.mark.registry, pytest.mark.timeout(300),
              pytest.mark.skipif(not CLIS, reason="needs a docker CLI")]


def _registry_mod():
    name = "isle_compat_registry"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "integration" / "image" / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _held(svc: Any) -> dict[str, int]:
    pid = svc.proc.pid
    fds = []
    for f in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds.append(os.readlink(f"/proc/{pid}/fd/{f}"))
        except OSError:
            continue
    # SQLite keeps the files of closed connections open while the process holds locks on them
    # (POSIX locks are per process) and reuses them for the next connection: not a request's
    return {"threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len([f for f in fds if not os.path.basename(f).startswith("isle.db")])}


def _tmp_files(svc: Any, tmpdir: Path) -> list[str]:
    out = [str(p) for p in tmpdir.iterdir()]
    for d, dirs, _ in os.walk(svc.root):
        for x in dirs:
            if x == "tmp" or x.startswith(("isle-api-", "build-")):
                p = Path(d, x)
                out += [str(q) for q in p.iterdir()] if x == "tmp" else [str(p)]
    return out


def _mounts_under(*roots: Path) -> list[str]:
    mps = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [m for m in mps if any(m.startswith(str(r)) for r in roots)]


def _settled(svc: Any, base: dict[str, int], tmpdir: Path, mounts0: list[str],
             wait: float = 30) -> None:
    end = time.monotonic() + wait
    while True:
        now, tmp = _held(svc), _tmp_files(svc, tmpdir)
        mounts = sorted(set(_mounts_under(svc.root, svc.run)) - set(mounts0))
        if all(now[k] <= base[k] for k in base) and not tmp and not mounts:
            return
        if time.monotonic() > end:
            fds = sorted(os.readlink(f"/proc/{svc.proc.pid}/fd/{f}")
                         for f in os.listdir(f"/proc/{svc.proc.pid}/fd"))
            raise AssertionError(f"left behind: held {now} (before {base}), tmp {tmp}, "
                                 f"mounts {mounts}, fds {fds}\n{svc.logtext()}")
        time.sleep(0.2)


def _ping(svc: Any) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(svc.sock))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in s.recv(4096)


def _kill_when(p: subprocess.Popen, marker: bytes, timeout: float = 60) -> bytes:
    seen, end = b"", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < end and p.poll() is None:
        seen += p.stdout.read1(4096) or b""  # type: ignore[union-attr]
    assert marker in seen, seen[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()  # type: ignore[union-attr]
    return seen


def test_killed_clients_leave_nothing(service, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reg_mod = _registry_mod()
    reg = reg_mod.start_registry(tmp_path / "registry")
    tmpdir = tmp_path / "svc-tmp"
    tmpdir.mkdir()
    ref = f"{reg.addr}/big:1"
    try:
        # the image to pull, pushed by the fixture's service (so the measured one, a second
        # service on a fresh root, downloads it all)
        pusher = service
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "Dockerfile").write_text(
            "FROM busybox\nRUN head -c 40000000 /dev/urandom > /big\n")
        pusher.docker("build", "-q", "-t", ref, str(tmp_path / "ctx"), timeout=120)
        pusher.docker("push", ref, timeout=120)
        pusher.docker("rmi", ref)
        service_class = type(service)

        monkeypatch.setenv("TMPDIR", str(tmpdir))  # the service's mkdtemp/mkstemp go here
        (tmp_path / "svc").mkdir()
        svc = service_class(tmp_path / "svc")
        monkeypatch.delenv("TMPDIR")
        try:
            cid = svc.docker("run", "-d", "busybox", "sleep", "300").stdout.strip()
            svc.docker("version")
            base, mounts0 = _held(svc), _mounts_under(svc.root, svc.run)

            # long waits: logs --follow and events of a silent container, `docker wait`
            for args in (["logs", "-f", cid], ["events"], ["wait", cid]):
                p = subprocess.Popen([CLIS[0], *args], env=svc.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                end = time.monotonic() + 15
                while _held(svc)["threads"] <= base["threads"] and time.monotonic() < end:
                    time.sleep(0.05)
                time.sleep(0.3)
                p.send_signal(signal.SIGKILL)
                p.wait()
            _settled(svc, base, tmpdir, mounts0)

            # mid-attach: a silent container, so only the client's going away can end it
            for _ in range(2):
                p = subprocess.Popen([CLIS[0], "attach", cid], env=svc.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                end = time.monotonic() + 15
                while _held(svc)["threads"] <= base["threads"] and time.monotonic() < end:
                    time.sleep(0.05)
                time.sleep(0.3)
                p.send_signal(signal.SIGKILL)
                p.wait()
                p.stdin.close()  # type: ignore[union-attr]
            _settled(svc, base, tmpdir, mounts0)

            # mid-build: the client goes away while a RUN step runs
            ctx = tmp_path / "ctx2"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\nRUN sleep 3\n"
                                            "RUN echo after > /after\n")
            p = subprocess.Popen([CLIS[0], "build", "-t", "killed:1", str(ctx)], env=svc.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            _kill_when(p, b"sleep 3")
            _settled(svc, base, tmpdir, mounts0)
            assert svc.docker("images", "-q", "killed:1").stdout.strip() == ""

            # mid-pull: the client goes away while a layer downloads
            # (a raw client: the docker CLI prints no progress without a tty, and is too slow to
            # see a local registry's download start)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(60)
                s.connect(str(svc.sock))
                s.sendall(f"POST /v1.44/images/create?fromImage={reg.addr}/big&tag=1 HTTP/1.1"
                          "\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
                got = b""
                while b"Downloading" not in got:
                    assert b"\r\n0\r\n\r\n" not in got, got  # ended: nothing downloaded
                    b = s.recv(4096)
                    assert b, got
                    got += b
            _settled(svc, base, tmpdir, mounts0)
            assert svc.docker("images", "-q", ref).stdout.strip() == ""

            # nothing half-made, and the service still serves all of it
            _ping(svc)
            assert svc.docker("ps", "-aq").stdout.split() == [cid[:12]]
            svc.docker("rm", "-f", cid)
            svc.docker("pull", ref, timeout=120)
            assert svc.docker("run", "--rm", ref, "sh", "-c", "wc -c < /big").stdout.strip() \
                == "40000000"
            svc.docker("rmi", ref)
            assert _mounts_under(svc.root, svc.run) == []
        finally:
            svc.close()
            shutil.rmtree(svc.run, ignore_errors=True)
    finally:
        reg_mod.stop_registry(reg)
