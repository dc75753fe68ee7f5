"""The annotation hand-off (docs/design.md): `isle-runtime` given a bundle whose config.json says
org.isle.isolation=vm runs it in isle's VM runtime, for callers that can name one runtime binary
only (containerd BinaryName, podman --runtime); the id-only verbs follow the VM's state."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-runtime")


@pytest.mark.timeout(180)
def test_isle_runtime_hands_a_vm_bundle_to_the_vm_runtime(tmp_path: Path, busybox_rootfs: str,
                                                          vm_env: dict[str, str], vmh) -> None:
    root = str(tmp_path / "root")
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["uname", "-r"])
    r = subprocess.run([RUNTIME, "--root", root, "run", "-b", b, "h1"], env=vm_env,
                       capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stdout.strip() != os.uname().release  # the guest's kernel

    b2 = vmh.make_bundle(tmp_path / "b2", busybox_rootfs, ["sleep", "60"])
    try:
        # files, not pipes: the VM's monitor keeps the container's stdio open after create
        with open(tmp_path / "err", "wb") as err:
            r = subprocess.run([RUNTIME, "--root", root, "create", "--bundle", b2, "h2"],
                               env=vm_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=err, timeout=150)
        assert r.returncode == 0, (tmp_path / "err").read_text()
        assert os.path.exists(os.path.join(root, "vm", "h2", "state.json"))  # the VM's state
        st = subprocess.run([RUNTIME, "--root", root, "state", "h2"], env=vm_env,
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 0 and json.loads(st.stdout)["status"] == "created", st.stderr
    finally:
        d = subprocess.run([RUNTIME, "--root", root, "delete", "--force", "h2"], env=vm_env,
                           capture_output=True, text=True, timeout=60)
    assert d.returncode == 0, d.stderr
    assert not os.path.exists(os.path.join(root, "vm", "h2"))
