"""On-demand guest modules: the initramfs holds bridge (and its deps) without loading it at boot;
the guest kernel loads it when a container with CAP_NET_ADMIN asks (request_module runs
isle-modprobe), as a host kernel autoloads it for a privileged container (critest's Privileged
and 'adding capability' tests run `brctl addbr`). Nothing else is loaded that way."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from isle.vm import initramfs

REPO = Path(__file__).resolve().parents[3]
RUNTIME = str(REPO / ".venv" / "bin" / "isle-vm-runtime")


def test_modprobe_script_loads_only_on_demand_modules_deps_first(tmp_path: Path) -> None:
    log = tmp_path / "log"
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "insmod").write_text(f'#!/bin/sh\necho "$1" >> {log}\n')
    (bin_ / "insmod").chmod(0o755)
    script = tmp_path / "isle-modprobe"
    script.write_text(initramfs.modprobe_script({"bridge": ["llc", "stp", "bridge"]}))
    env = {"PATH": f"{bin_}:/usr/bin:/bin"}
    for name in ("bridge", "rtnl-link-bridge"):
        assert subprocess.run(["sh", str(script), "-q", "--", name], env=env).returncode == 0
    assert log.read_text().split() == [f"/lib/modules/{m}.ko" for m in ("llc", "stp", "bridge")] * 2
    assert subprocess.run(["sh", str(script), "-q", "--", "nf_tables"], env=env).returncode == 1
    assert len(log.read_text().split()) == 6


@pytest.mark.qemu
@pytest.mark.root
@pytest.mark.timeout(240)
def test_a_net_admin_container_in_a_vm_can_make_a_bridge(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    script = ("grep -q '^bridge ' /proc/modules && echo preloaded; brctl addbr br9 && "
              "ip -o link show br9 | grep -c br9")
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", script])
    cfg = json.loads((Path(b) / "config.json").read_text())
    for k in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][k].append("CAP_NET_ADMIN")
    (Path(b) / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "br"],
                       env=vm_env, capture_output=True, timeout=200)
    assert (r.returncode, r.stdout) == (0, b"1\n"), r.stderr  # loaded on demand, not at boot
    assert os.listdir(tmp_path / "root") == []
