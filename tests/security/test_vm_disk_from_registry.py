"""A VM disk pulled from a registry is untrusted: one that reads another file (a qcow2 backing
file or external data file, a vmdk extent) would have `qemu-img convert` copy that host file into
the new VM's disk, so it is refused before anything is converted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from isle.config import Settings
from isle.errors import VMError
from isle.vm import disk

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")


def _img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=30)


def test_disks_that_read_host_files_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"root-only\n" * 100)
    backed = tmp_path / "backed.qcow2"
    _img("create", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(backed))
    data = tmp_path / "datafile.qcow2"
    _img("create", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", str(data),
         str(secret.stat().st_size))
    for bad in (backed, data):
        with pytest.raises(VMError, match="host-secret"):
            disk.check_self_contained(str(bad))
    plain = tmp_path / "plain.qcow2"
    _img("create", "-f", "qcow2", str(plain), "1M")
    assert disk.check_self_contained(str(plain))["format"] == "qcow2"


def test_a_pulled_disk_with_a_backing_file_makes_no_vm(tmp_path: Path) -> None:
    from isle.engine.vms import VMs

    secret = tmp_path / "host-secret"
    secret.write_bytes(b"x" * 4096)
    backed = tmp_path / "disk.qcow2"
    _img("create", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(backed))
    s = Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"),
                 cache=str(tmp_path / "cache"))
    vms = VMs(s)
    with pytest.raises(VMError, match="self-contained"):
        vms._import_annotated(str(backed), "evil", {}, "", "")
    assert vms.ls() == []
    disks = Path(s.root) / "vms" / ".disks"
    assert not disks.exists() or not any(disks.glob("import-*"))
