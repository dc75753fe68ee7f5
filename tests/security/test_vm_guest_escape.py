"""Inside a VM container's guest, container root must not reach the guest's own files: the
container's root is a pivot_root in a mount namespace of its own (isle-exec -N; the guest's root
is a bind mount of the initramfs, init.sh), with the guest's root detached; its pid namespace is
its own. Root keeps Docker's CAP_SYS_CHROOT and tries the classic chroot escape
(chroot into a subdirectory, climb with '..', chroot there): it must find nothing of the guest's
(no /init, no isle-exec, no control files), and see only its own processes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
_p = HERE.parent / "integration" / "vm" / "conftest.py"
_spec = importlib.util.spec_from_file_location("isle_sec_vm_escape", _p)
assert _spec and _spec.loader
_vm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_vm)
vm_cache = _vm.vm_cache
vm_env = _vm.vm_env
vmh = _vm.vmh

RUNTIME = str(HERE.parents[1] / ".venv" / "bin" / "isle-vm-runtime")


@pytest.mark.timeout(180)
def test_container_root_cannot_climb_out_to_the_guest(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the escape program")
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(rootfs / "escape"),
                    str(HERE / "vm_escape.c")], check=True, timeout=120)
    from isle.engine.options import DEFAULT_CAPS  # Docker's: CAP_SYS_CHROOT among them

    caps = {k: DEFAULT_CAPS for k in ("bounding", "effective", "permitted")}
    b = vmh.make_bundle(tmp_path / "b", str(rootfs), ["/escape"], capabilities=caps)
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "esc"],
                       env=vm_env, capture_output=True, timeout=150)
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.decode().splitlines() if " " in line)
    assert out["pid"] == "1", out  # pid 1 of its own pid namespace
    assert [p for p in out["procs"].split() if p.isdigit()] == ["1"], out["procs"]
    assert out["init"] == "absent" and out["isle-exec"] == "absent" and out["ctl"] == "absent", out
    # '..' from the container's root leads nowhere (it sits on the namespace's root): the
    # "escaped" root is the container's own, with nothing of the guest's
    seen = set(out["escaped"].split())
    assert "escape" in seen, seen
    assert not {"init", "premount.sh", "modules.order", "ctr.pid", "newroot", "lower"} & seen, seen


@pytest.mark.timeout(180)
def test_image_symlinks_cannot_lead_the_guest_out_of_the_container_root(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    """The guest's init shell makes the spec's mounts and isle's files before the container
    starts, as guest root: a destination that is a symlink in the image resolves inside the
    container's root (as runc resolves it), never to the guest's own path. Here /data -> /bin:
    followed on the guest, the host directory would cover the guest's /bin (its isle-exec)."""
    import json
    import os

    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    busybox = next(p for p in (rootfs / "bin" / "busybox", rootfs / "busybox") if p.exists())
    (rootfs / "opt").mkdir(exist_ok=True)
    shutil.copy2(busybox, rootfs / "opt" / "busybox")  # outside /bin, which the mount covers
    os.symlink("/bin", rootfs / "data")
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "marker").write_text("from-host\n")
    b = vmh.make_bundle(tmp_path / "b", str(rootfs), ["/opt/busybox", "cat", "/bin/marker"])
    cfg = json.loads((Path(b) / "config.json").read_text())
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(host),
                          "options": ["rbind", "ro"]})
    (Path(b) / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "lnk"],
                       env=vm_env, capture_output=True, timeout=150)
    assert (r.returncode, r.stdout) == (0, b"from-host\n"), r.stderr
