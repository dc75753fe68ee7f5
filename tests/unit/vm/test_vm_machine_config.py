"""MachineStore.config (pure): q35 for user disks, microvm + isle.init for images."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from isle.vm.config import Chardev, MachineConfig
from isle.vm.machine import MachineSpec, MachineStore
from isle.vm.qemu import argv


def _store(tmp_path: Path, **kw: object) -> MachineStore:
    spec = MachineSpec(name="m", base="/b.img", base_format="raw", **kw)  # type: ignore[arg-type]
    os.makedirs(tmp_path / "vms" / "m")
    (tmp_path / "vms" / "m" / "machine.json").write_text(json.dumps(asdict(spec)))
    return MachineStore(str(tmp_path / "vms"), str(tmp_path / "run"))


def test_user_disk_boots_q35_with_a_logged_console(tmp_path: Path) -> None:
    cfg = _store(tmp_path).config("m")
    assert cfg.machine == "q35" and not cfg.kernel
    a = " ".join(argv(cfg))
    assert f"logfile={tmp_path}/run/m/console.log,logappend=on" in a
    assert "virtio-blk-pci" in a


def test_image_vm_boots_its_kernel_into_the_image_init(tmp_path: Path) -> None:
    cfg = _store(tmp_path, kernel="/k/vmlinux", initrd="/k/i.cpio", init="/bin/init").config("m")
    assert cfg.machine == "microvm" and cfg.kernel == "/k/vmlinux" and cfg.initrd == "/k/i.cpio"
    assert "isle.init=/bin/init" in cfg.cmdline and "isle.rootfs=ext4" in cfg.cmdline
    assert "quiet" not in cfg.cmdline.split()  # the boot is what the console shows
    assert "virtio-blk-device" in " ".join(argv(cfg))


def test_socket_chardev_log_only_when_asked() -> None:
    a = argv(MachineConfig(name="x", machine="q35",
                           console=Chardev(backend="socket", path="/r/c.sock")))
    assert "socket,id=console,path=/r/c.sock,server=on,wait=off" in a
