"""Free-page reporting (virtio-balloon) for cold boots: a guest hands back the RAM it frees.
Never over a RAM file clones map privately: QEMU 7.2 discards reported pages of any fd-backed
RAM by punching holes in the file, i.e. in the template every clone reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from isle.errors import ConfigError
from isle.vm import kernel, microvm, qemu
from isle.vm.config import MachineConfig, MemoryBackend


def test_balloon_reports_free_pages_but_never_over_a_template_ram_file() -> None:
    a = qemu.argv(MachineConfig(name="c", kernel="/k", balloon=True))
    assert "virtio-balloon-device,free-page-reporting=on" in a
    assert not any("balloon" in x for x in qemu.argv(MachineConfig(name="c", kernel="/k")))
    # memfd RAM (virtio-fs shares) is the VM's own: reported pages are punched out of it alone
    memfd = MachineConfig(name="c", kernel="/k", balloon=True,
                          memory_backend=MemoryBackend(path="", share=True))
    assert "virtio-balloon-device,free-page-reporting=on" in qemu.argv(memfd)
    with pytest.raises(ConfigError, match="punch holes"):
        MachineConfig(name="c", kernel="/k", balloon=True,
                      memory_backend=MemoryBackend(path="/dev/shm/t.ram", share=False))


def test_a_cold_boot_asks_the_guest_init_for_the_balloon_driver() -> None:
    boot = microvm.Boot(kernel="/k", initrd="/i", rootdisk="/d")
    cold = microvm.machine_config(boot, "/r", stdout="", stderr="", balloon=True)
    assert cold.balloon and "isle.balloon=1" in cold.cmdline.split()
    tpl = microvm.machine_config(boot, "/r", stdout="", stderr="",
                                 memory_backend=MemoryBackend(path="/dev/shm/t.ram", share=True))
    assert not tpl.balloon and "isle.balloon=1" not in tpl.cmdline.split()


def test_optional_modules_load_when_the_cache_has_them(tmp_path: Path) -> None:
    def ko(name: str, deps: str = "") -> None:
        (tmp_path / f"{name}.ko").write_bytes(b"\x7fELF\0depends=" + deps.encode() + b"\0")

    ko("virtio")
    ko("virtio_blk", "virtio")
    assert kernel.module_load_order(str(tmp_path), ("virtio_blk",)) == ["virtio", "virtio_blk"]
    ko("virtio_balloon", "virtio")  # an older cache lacks it and still boots; a newer loads it
    assert kernel.module_load_order(str(tmp_path), ("virtio_blk",)) == [
        "virtio", "virtio_blk", "virtio_balloon"]
