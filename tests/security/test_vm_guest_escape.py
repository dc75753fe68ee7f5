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
