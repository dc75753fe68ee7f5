"""A VM container through the engine's runtime seam (QEMU; TCG here): before its first start the
bundle's rootfs is what the guest gets, so `cp` into it works; once the guest runs, its writes
live in the guest, so cp/diff/commit/export/top/stats refuse clearly (exit 125) instead of
answering from the host-side tree; top and stats ask the guest's kernel (the runtime's agent),
with the host's PSS of the VM beside the guest's own memory figures."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(240)]


def test_vm_container_cp_before_start_then_host_side_verbs_refuse(isle, tmp_path):
    src = tmp_path / "greeting"
    src.write_text("hello from the host\n")
    isle("create", "--isolation", "vm", "--network", "none", "--name", "vs", "busybox", "sh",
         "-c", "cat /greeting; echo up; sleep 100")
    isle("cp", str(src), "vs:/greeting")              # created, never started: the disk-to-be
    isle("start", "vs", timeout=120)
    for _ in range(150):
        if "up" in isle("logs", "vs").stdout:
            break
        time.sleep(0.2)
    assert isle("logs", "vs").stdout == "hello from the host\nup\n"
    out = tmp_path / "out"
    for args in (("cp", "vs:/greeting", str(out)), ("cp", str(src), "vs:/x"), ("diff", "vs"),
                 ("commit", "vs", "vs-img"), ("export", "-o", str(tmp_path / "x.tar"), "vs")):
        cp = isle(*args, check=False)
        assert cp.returncode == 125, (args, cp.stdout, cp.stderr)
        assert "not supported for a container of isle-vm-runtime" in cp.stderr, cp.stderr
        assert "Traceback" not in cp.stderr
    assert not out.exists()
    tar = tmp_path / "x.tar"  # (the CLI may have opened -o FILE before the refusal: empty)
    assert not tar.exists() or tar.stat().st_size == 0
    assert "vs-img" not in isle("images").stdout
    top = isle("top", "vs").stdout
    assert "PID" in top.splitlines()[0] and "sleep 100" in top, top
    cp = isle("top", "vs", "-o", "pid", check=False)
    assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
    st = json.loads(isle("stats", "--no-stream", "--format", "{{json .}}", "vs").stdout)
    assert int(st.get("PIDs") or 0) >= 1 and st["HostPSS"] > 0, st  # sleep (sh exec'd it)
    assert isle("stats", "--no-stream", "--format", "{{.Name}}").stdout.split() == ["vs"]
    isle("rm", "-f", "vs", timeout=60)
    assert isle("ps", "-aq").stdout == ""
