"""The guest agent on the control channel: `ps` lists the container's processes as the guest sees
them (for `top`), `stats` gives the guest's memory, CPU and pids plus QEMU's PSS on the host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]
RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime")


@pytest.mark.timeout(200)
def test_ps_and_stats_come_from_the_guest(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, [
        "sh", "-c", "sleep 300 & trap 'exit 0' TERM; while :; do sleep 0.3; done"])
    root = str(tmp_path / "root")

    def rt(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([RUNTIME, "--root", root, *args], env=vm_env, timeout=150,
                              stdin=subprocess.DEVNULL, capture_output=True)

    r = rt("ps", "nope")
    assert r.returncode != 0 and b"nope" in r.stderr
    r = subprocess.run([RUNTIME, "--root", root, "run", "-d", "-b", b, "a1"], env=vm_env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=150)
    assert r.returncode == 0
    try:
        r = rt("ps", "a1")
        assert r.returncode == 0, r.stderr
        table = r.stdout.decode()
        assert "PID" in table.splitlines()[0] and "sleep 300" in table, table
        assert "isle" not in table and "init" not in table  # only the container's processes
        r = rt("ps", "-f", "json", "a1")
        pids = json.loads(r.stdout)
        assert len(pids) >= 2 and all(isinstance(p, int) for p in pids), r.stdout
        r = rt("stats", "a1")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert 0 < s["memory_usage"] < s["memory_limit"] <= 128 << 20, s
        assert s["pids"] >= 2 and s["cpu_ns"] > 0, s
        assert 16 << 20 < s["qemu_pss"] < 1 << 30, s  # QEMU's real cost on the host
        assert rt("pause", "a1").returncode == 0  # paused: no guest to ask, PSS still known
        r = rt("stats", "a1")
        assert r.returncode == 0 and "memory_usage" not in json.loads(r.stdout)
        r = rt("ps", "a1")
        assert r.returncode != 0 and b"paused" in r.stderr
        assert rt("resume", "a1").returncode == 0
    finally:
        rt("delete", "-f", "a1")
    assert not (tmp_path / "root" / "a1").exists()
