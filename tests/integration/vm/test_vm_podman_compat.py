"""podman --runtime isle-vm-runtime: the real client (and conmon) drive the VM runtime unchanged."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.podman, pytest.mark.slow]
RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime")


@pytest.mark.timeout(300)
def test_podman_run_exec_stop_rm(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh, podman_prefix
) -> None:
    pmdir = Path(tempfile.mkdtemp(prefix="isle-vm-pm-"))  # podman wants a short runroot
    prefix = podman_prefix(pmdir)
    podman = [*prefix, "--runtime", RUNTIME]

    def pm(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*podman, *args], env=vm_env, capture_output=True, timeout=150, **kw)  # type: ignore[call-overload]

    with tarfile.open(tmp_path / "bb.tar", "w") as t:
        t.add(busybox_rootfs, arcname=".")
    try:
        assert (
            pm("import", "--quiet", str(tmp_path / "bb.tar"), "localhost/isle-vm-bb:t").returncode
            == 0
        )
        r = pm(
            "run",
            "--rm",
            "--network",
            "none",
            "localhost/isle-vm-bb:t",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        )
        assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n"), r.stderr
        r = pm(
            "run",
            "-d",
            "--network",
            "none",
            "localhost/isle-vm-bb:t",
            "sh",
            "-c",
            'trap "exit 0" TERM; echo up; while :; do sleep 0.2; done',
        )
        assert r.returncode == 0, r.stderr
        cid = r.stdout.decode().strip()
        r = pm("exec", "-i", cid, "sh", "-c", "cat; exit 4", input=b"via stdin\n")
        assert (r.returncode, r.stdout) == (4, b"via stdin\n"), r.stderr
        assert pm("stop", "-t", "10", cid).returncode == 0
        r = pm("inspect", cid, "--format", "{{.State.ExitCode}}")
        assert r.stdout.strip() == b"0"
        assert pm("logs", cid).stdout == b"up\n"
        assert pm("rm", cid).returncode == 0
    finally:
        subprocess.run(
            [*prefix, "rm", "-af", "-t", "0"], env=vm_env, capture_output=True, timeout=120
        )
        subprocess.run(
            [*prefix, "system", "reset", "--force"], env=vm_env, capture_output=True, timeout=120
        )
        subprocess.run(["umount", "-R", str(pmdir / "storage" / "overlay")], capture_output=True)
        shutil.rmtree(pmdir, ignore_errors=True)
