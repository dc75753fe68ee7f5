"""A pod's VM starts from a template (vm.snapshot, Boot.pod): its layout has an empty PCIe slot
the share is hot-plugged into after the restore, its template's RAM file keeps only its non-zero
pages, each clone maps its own shared copy; the sandbox keeps its template (runtime.vm.pod)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from isle.runtime.vm import pod
from isle.vm import job as vmjob
from isle.vm import qemu, snapshot
from isle.vm.config import HOTPLUG_PORT, FsShare
from isle.vm.microvm import Boot, machine_config

BOOT = Boot(kernel="/k/vmlinux", initrd="/k/initrd", rootdisk="/d/pause.erofs", slots=8,
            memory_mib=256)


def test_pod_layout_has_an_empty_pcie_slot_and_loads_virtio_fs(tmp_path: Path) -> None:
    cfg = machine_config(_pod(BOOT), str(tmp_path), stdout="", stderr="")
    a = qemu.argv(cfg)
    assert a[a.index("-machine") + 1].startswith("microvm,pit=off,pic=off,isa-serial=on,pcie=on")
    assert f"pcie-root-port,id={HOTPLUG_PORT},bus=pcie.0,chassis=1,slot=1" in a
    assert not any("vhost-user-fs" in x for x in a)  # the slot is empty: a template can be saved
    # fuse + virtiofs and virtio_pci loaded; pciehp owns the slot (microvm's ACPI has no _OSC)
    for word in ("isle.shares=1", "isle.pci=1", "pcie_ports=native"):
        assert word in cfg.cmdline.split()
    plain = machine_config(BOOT, str(tmp_path), stdout="", stderr="")
    assert "pcie" not in " ".join(qemu.argv(plain)) and "isle.pci=1" not in plain.cmdline
    assert snapshot.key(_pod(BOOT)) != snapshot.key(BOOT)  # a template of its own


def _pod(b: Boot) -> Boot:
    import dataclasses

    return dataclasses.replace(b, pod=True)


def test_a_clone_takes_one_share_and_only_in_a_pod_layout(tmp_path: Path) -> None:
    from isle.errors import VMError

    sh = FsShare(tag="isle0", socket="", source=str(tmp_path))
    with pytest.raises(VMError, match="hot-plug slot"):
        snapshot.restore(BOOT, str(tmp_path), stdout="", stderr="", shares=(sh,))
    with pytest.raises(VMError, match="hot-plug slot"):
        snapshot.restore(_pod(BOOT), str(tmp_path), stdout="", stderr="", shares=(sh, sh))


def test_template_ram_keeps_only_nonzero_pages_and_a_clone_copy_reads_the_same(
        tmp_path: Path) -> None:
    ram = tmp_path / "tpl.ram"
    page = 4096
    data = bytearray(4 << 20)  # all written (allocated), mostly zeroes, as a guest leaves it
    for n in (0, 1, 5, 300, 301, 1023):
        data[n * page + 7] = n % 251 + 1
    ram.write_bytes(bytes(data))
    snapshot._punch_zeros(str(ram))
    assert ram.read_bytes() == bytes(data)
    assert os.stat(ram).st_blocks * 512 <= 6 * page  # the six pages with data
    clone = tmp_path / "clone.ram"
    snapshot._copy_ram(str(ram), str(clone))
    assert clone.read_bytes() == bytes(data)
    assert os.stat(clone).st_blocks * 512 <= 6 * page
    with pytest.raises(FileExistsError):  # never over an existing file
        snapshot._copy_ram(str(ram), str(clone))


def test_pod_mount_waits_for_the_hot_plugged_share() -> None:
    job = vmjob.Job(args=("sleep", "1"))
    text = vmjob.render_pod(job, 2, "c1")
    line = next(x for x in text.splitlines() if "mount -t virtiofs" in x)
    assert line.startswith(f"if busybox mkdir {vmjob.POD_DIR} ")
    assert f"until mount -t virtiofs {vmjob.POD_TAG} {vmjob.POD_DIR} " in line
    assert "xexit 2 125" in line  # still gives up (10 s), reported on the container's slot


SANDBOX = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "sb"}


def test_sandbox_drops_the_cri_shm_share_and_keeps_its_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isle.runtime.vm.boot import Prepared, render_script, template_wanted

    view = tmp_path / "view"
    shm = tmp_path / "shm"
    view.mkdir()
    shm.mkdir()
    monkeypatch.setattr(pod, "setup_sandbox", lambda root, sid: str(view))
    monkeypatch.delenv("ISLE_VM_TEMPLATE", raising=False)
    notes: dict[str, str] = {}
    import isle.runtime.vm.monitor as mon

    monkeypatch.setattr(mon, "note", lambda d, k, v: notes.__setitem__(k, v))
    cfg: dict[str, Any] = {
        "process": {"args": ["/pause"], "cwd": "/"}, "root": {"path": "rootfs"},
        "annotations": SANDBOX,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev/shm", "type": "bind", "source": str(shm),
                    "options": ["rbind", "ro"]}]}
    out = pod.sandbox_config(str(tmp_path), "sb", cfg)
    assert [m["destination"] for m in out["mounts"]] == ["/proc", "/.isle-pod"]
    assert [m["destination"] for m in cfg["mounts"]] == ["/proc", "/dev/shm"]  # not changed
    assert template_wanted(out)  # the pod's share is hot-plugged: the sandbox still clones
    assert notes["pod-tag"] == "isle0"  # the pod's share is the only one
    script = render_script(out, False, False, None)
    assert "/dev/shm" in script and str(shm) not in script and "isle0" not in script
    p = pod.as_sandbox(Prepared(cfg=out, boot=BOOT, script=script, template=True))
    assert p.template and p.boot.pod and p.boot.slots == pod.POD_SLOTS


def test_sandbox_with_another_share_still_boots_cold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isle.runtime.vm.boot import template_wanted

    vol = tmp_path / "vol"
    vol.mkdir()
    monkeypatch.setattr(pod, "setup_sandbox", lambda root, sid: str(tmp_path))
    monkeypatch.delenv("ISLE_VM_TEMPLATE", raising=False)
    import isle.runtime.vm.monitor as mon

    monkeypatch.setattr(mon, "note", lambda d, k, v: None)
    cfg: dict[str, Any] = {
        "process": {"args": ["/pause"], "cwd": "/"}, "root": {"path": "rootfs"},
        "annotations": SANDBOX,
        "mounts": [{"destination": "/dev/shm", "type": "bind", "source": str(vol)},
                   {"destination": "/data", "type": "bind", "source": str(vol)}]}
    assert not template_wanted(pod.sandbox_config(str(tmp_path), "sb", cfg))


def test_only_a_sandbox_may_clone_with_a_share_at_the_pods_place(tmp_path: Path) -> None:
    """A plain container with a bind mount at /.isle-pod is not a pod's VM: it boots cold."""
    from isle.runtime.vm.boot import template_wanted

    cfg = {"process": {"args": ["/x"], "cwd": "/"}, "root": {"path": "rootfs"},
           "mounts": [{"destination": "/.isle-pod", "type": "bind", "source": str(tmp_path)}]}
    assert not template_wanted(cfg)


def test_a_kernel_cache_without_virtio_pci_boots_pods_cold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isle.runtime.vm import boot as vmboot
    from isle.vm import kernel

    k = kernel.GuestKernel(version="6.1.0-x-cloud-amd64", dir=str(tmp_path))
    monkeypatch.setattr(kernel, "find", lambda cache=None: k)
    os.makedirs(k.modules_dir)
    assert not vmboot.hotplug_ready(str(tmp_path))
    open(k.module("virtio_pci"), "wb").close()
    assert vmboot.hotplug_ready(str(tmp_path))
