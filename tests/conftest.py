"""Shared test plumbing: host probes for markers, per-test roots, and leak checks."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

# A suite started as a shell's background job (`.ci/run &`, nohup) inherits SIGINT, SIGQUIT (and
# SIGHUP) ignored, and an ignored signal stays ignored across exec in every program the tests
# start: tests that interrupt a CLI (Ctrl-C on build, sig-proxy) need them at their defaults.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _sig in (signal.SIGQUIT, signal.SIGHUP):
    if signal.getsignal(_sig) is signal.SIG_IGN:
        signal.signal(_sig, signal.SIG_DFL)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def _bench_peers():
    """bench/peers.py: sets up busybox rootfs, podman and dockerd peers from inside the repo."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("isle_bench_peers", REPO / "bench" / "peers.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


peers = _bench_peers()


def _is_root() -> bool:
    return os.geteuid() == 0


def _has(cmd: str) -> bool:
    return shutil.which(cmd) is not None


# marker -> (probe, reason). CI has all of them; a missing one skips with the reason.
PROBES = {
    "root": (_is_root, "needs root"),
    "qemu": (lambda: _has("qemu-system-x86_64"), "needs qemu-system-x86_64"),
    "registry": (lambda: _has("docker-registry"), "needs Debian's docker-registry"),
    "podman": (lambda: _has("podman") and _is_root(), "needs podman and root"),
    "netns": (lambda: _is_root() and _has("ip"), "needs root and iproute2"),
    "kvm": (lambda: "vmx" in open("/proc/cpuinfo").read() or "svm" in open("/proc/cpuinfo").read(),
            "no vmx/svm in /proc/cpuinfo"),
    "cgroup2": (lambda: os.path.exists("/sys/fs/cgroup/cgroup.controllers")
                and bool(open("/sys/fs/cgroup/cgroup.controllers").read().strip()),
                "no unified cgroup v2 hierarchy with controllers"),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name, (probe, reason) in PROBES.items():
        if item.get_closest_marker(name) is not None and not probe():
            pytest.skip(reason)


@pytest.fixture
def tmp_root(tmp_path: Path) -> Path:
    """A private root for isle's state in this test."""
    d = tmp_path / "isle-root"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def bench_peers():
    """bench/peers.py: busybox rootfs, private podman, crun wrapper, dockerd (all in the repo)."""
    return peers


@pytest.fixture(scope="session")
def registries():
    """tests/integration/image/conftest.py's registry helpers, for any suite:
    ``registries.start_registry(dir, tls=False, auth=False) -> Registry`` (Debian's
    docker-registry on 127.0.0.1; ``.addr``, ``.url``) and ``registries.stop_registry(reg)``."""
    import importlib.util
    import sys

    name = "isle_test_registries"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "tests" / "integration" / "image" / "conftest.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # its dataclasses look themselves up there
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="session")
def busybox_rootfs():
    """A busybox rootfs (str path), built once per session; world-traversable so a user-namespaced
    root (rootless tests, QEMU's jailed user) can use it. Tests copy it before changing it."""
    import tempfile

    top = tempfile.mkdtemp(prefix="isle-test-busybox-")
    os.chmod(top, 0o755)
    d = os.path.join(top, "rootfs")
    peers.busybox_rootfs(d)
    yield d
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_prefix():
    """podman_prefix(dir) -> argv prefix of a podman with private storage under dir."""
    return peers.podman_prefix
