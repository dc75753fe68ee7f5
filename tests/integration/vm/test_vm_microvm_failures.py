"""vm.MicroVM under TCG when things go wrong: bad disk, guest panic, no readiness, no QEMU."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from isle.errors import VMError
from isle.vm import disk, initramfs, kernel
from isle.vm import job as vmjob
from isle.vm.microvm import Boot, MicroVM, machine_config, short_dir

pytestmark = [pytest.mark.qemu, pytest.mark.root]


def _boot(cache: str, rootdisk: str) -> Boot:
    k = kernel.find(cache)
    return Boot(kernel=k.vmlinuz, initrd=initramfs.build(k, cache), rootdisk=rootdisk)


def _vm(boot: Boot, **over: object) -> MicroVM:
    rundir = short_dir()
    cfg = machine_config(boot, rundir, stdout="", stderr="")
    if over:
        cfg = dataclasses.replace(cfg, **over)  # type: ignore[arg-type]
    return MicroVM(cfg, rundir)


@pytest.mark.timeout(120)
def test_disk_that_is_not_a_filesystem(
    tmp_path: Path, vm_cache: str, vm_env: dict[str, str]
) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    with _vm(_boot(vm_cache, str(junk))) as vm:
        vm.spawn()
        vm.connect()
        with pytest.raises(VMError, match="mount erofs /dev/vda"):
            vm.expect("ready", 100)
    assert not os.path.exists(vm.rundir)


@pytest.mark.timeout(120)
def test_guest_panic_is_reported(
    vm_cache: str, busybox_rootfs: str, vm_env: dict[str, str]
) -> None:
    boot = _boot(vm_cache, disk.rootfs_image(busybox_rootfs, vm_cache))
    job = vmjob.Job(
        args=("sh", "-c", "echo c > /proc/sysrq-trigger"),
        env=("PATH=/bin",),
        mounts=(vmjob.GuestMount(type="proc", destination="/proc", source="proc"),),
    )
    with _vm(boot) as vm:
        vm.spawn()
        vm.connect()
        vm.send_job(vmjob.render(job))
        with pytest.raises(VMError, match="went away") as ei:
            vm.wait_exit(100)
    assert "Kernel panic" in str(ei.value) or "QEMU exited" in str(ei.value)


@pytest.mark.timeout(120)
def test_guest_that_never_becomes_ready_times_out(
    vm_cache: str, busybox_rootfs: str, vm_env: dict[str, str]
) -> None:
    boot = _boot(vm_cache, disk.rootfs_image(busybox_rootfs, vm_cache))
    vm = _vm(boot, cmdline="console=ttyS0 quiet panic=-1 rdinit=/bin/sleep 1000")
    with vm:
        vm.spawn()
        vm.connect()
        with pytest.raises(VMError, match="did not answer within 3s"):
            vm.expect("ready", 3)
    assert not vm.alive()


def test_no_qemu_binary(
    vm_cache: str, busybox_rootfs: str, monkeypatch: pytest.MonkeyPatch, vm_env: dict[str, str]
) -> None:
    boot = _boot(vm_cache, disk.rootfs_image(busybox_rootfs, vm_cache))
    monkeypatch.setenv("PATH", "/nonexistent")
    with _vm(boot) as vm:
        with pytest.raises(VMError, match="qemu-system-x86_64 not found"):
            vm.spawn()
