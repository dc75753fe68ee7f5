"""podman drives isle-runtime (run, exec, tty, logs, ps, pause/unpause, stop, rm) like runc."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "isle-runtime")

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path, podman_prefix):
    """podman with private storage, a local busybox image imported from a tarball."""
    d = tmp_path_factory.mktemp("podman")
    prefix = podman_prefix(d / "env")
    env_kv = dict(p.split("=", 1) for p in prefix if "=" in p and not p.startswith("-"))
    argv = [p for p in prefix if p != "env" and "=" not in p]
    env = dict(os.environ, **env_kv)
    tar = d / "busybox.tar"
    with tarfile.open(tar, "w") as t:
        t.add(busybox_rootfs, arcname=".")

    def pm(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([*argv, "--runtime", RUNTIME, *args], env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {cp.returncode}: {cp.stderr}")
        return cp

    pm("import", str(tar), "localhost/isle-busybox:test")
    yield pm
    pm("rm", "-af", "-t", "0", check=False)
    pm("system", "reset", "-f", check=False, timeout=120)


def test_podman_run_exec_logs_pause_stop_rm(podman):
    img = "localhost/isle-busybox:test"
    cp = podman("run", "--rm", "--network", "none", img, "sh", "-c",
                "echo pid=$$ $(id -u); grep -c Seccomp: /proc/self/status; exit 3", check=False)
    assert cp.returncode == 3, cp.stderr
    assert cp.stdout.startswith("pid=1 0")
    cp = podman("run", "--rm", "-t", "--network", "none", img, "tty")
    assert "/dev/pts/0" in cp.stdout
    cid = podman("run", "-d", "--name", "isle-pm", "--network", "none", img, "sh", "-c",
                 "echo started; while true; do sleep 1; done").stdout.strip()
    assert cid
    assert podman("exec", "isle-pm", "sh", "-c", "echo exec $$").stdout.startswith("exec ")
    assert "/dev/pts/" in podman("exec", "-t", "isle-pm", "tty").stdout
    assert "isle-pm" in podman("ps", "--format", "{{.Names}}").stdout
    podman("pause", "isle-pm")
    assert podman("inspect", "--format", "{{.State.Status}}", "isle-pm").stdout.strip() == "paused"
    podman("unpause", "isle-pm")
    assert podman("inspect", "--format", "{{.State.Status}}", "isle-pm").stdout.strip() == "running"
    assert "started" in podman("logs", "isle-pm").stdout
    podman("stop", "-t", "1", "isle-pm")
    assert podman("inspect", "--format", "{{.State.Status}}", "isle-pm").stdout.strip() == "exited"
    podman("rm", "isle-pm")
    assert "isle-pm" not in podman("ps", "-a", "--format", "{{.Names}}").stdout
