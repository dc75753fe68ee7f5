"""MachineConfig -> argv is pure: golden command lines for a microVM, a clone and a q35 VM."""

from __future__ import annotations

import pytest

from isle.errors import ConfigError, VMError
from isle.vm import microvm, qemu
from isle.vm.config import Chardev, Drive, MachineConfig, MemoryBackend, Nic, SerialPort


def test_microvm_golden() -> None:
    cfg = MachineConfig(
        name="t",
        kernel="/k/vmlinuz",
        initrd="/k/initrd",
        cmdline="console=ttyS0 quiet",
        drives=(Drive(id="image", path="/d/a,b.erofs", readonly=True),),
        serial_ports=(
            SerialPort(name="org.isle.ctl", nr=1, chardev=Chardev(backend="socket", path="/r/c")),
            SerialPort(
                name="org.isle.stdout",
                nr=2,
                chardev=Chardev(backend="file", path="/proc/self/fd/5"),
            ),
        ),
        console=Chardev(backend="file", path="/r/console.log", append=False),
        qmp_socket="/r/qmp.sock",
    )
    assert qemu.argv(cfg) == [
        "qemu-system-x86_64",
        "-name",
        "t",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "microvm,pit=off,pic=off,isa-serial=on",
        "-accel",
        "tcg",
        "-smp",
        "1",
        "-m",
        "128M",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-no-reboot",
        "-kernel",
        "/k/vmlinuz",
        "-initrd",
        "/k/initrd",
        "-append",
        "console=ttyS0 quiet",
        "-chardev",
        "file,id=console,path=/r/console.log,append=off",
        "-serial",
        "chardev:console",
        "-drive",
        "file=/d/a,,b.erofs,format=raw,if=none,id=image,readonly=on",
        "-device",
        "virtio-blk-device,drive=image",
        "-device",
        "virtio-serial-device",
        "-chardev",
        "socket,id=port1,path=/r/c,server=on,wait=off",
        "-device",
        "virtserialport,chardev=port1,name=org.isle.ctl,nr=1",
        "-chardev",
        "file,id=port2,path=/proc/self/fd/5,append=on",
        "-device",
        "virtserialport,chardev=port2,name=org.isle.stdout,nr=2",
        "-qmp",
        "unix:/r/qmp.sock,server=on,wait=off",
    ]


def test_clone_uses_private_file_ram_and_deferred_incoming() -> None:
    cfg = MachineConfig(
        name="c",
        kernel="/k",
        accel="kvm",
        vcpus=2,
        memory_mib=256,
        memory_backend=MemoryBackend(path="/dev/shm/t.ram", share=False),
        incoming="defer",
        nics=(Nic(id="n0", kind="tap", ifname="tap0", mac="52:54:00:00:00:01"),),
    )
    a = qemu.argv(cfg)
    assert a[a.index("-machine") + 1].endswith(",memory-backend=mem")
    assert "memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/t.ram,share=off" in a
    assert a[-2:] == ["-incoming", "defer"]
    assert ["-cpu", "host"] == a[a.index("-cpu") : a.index("-cpu") + 2]
    assert "tap,id=n0,ifname=tap0,script=no,downscript=no" in a
    a2 = qemu.argv(MachineConfig(name="t", kernel="/k", nics=(Nic(id="n0", kind="tap"),)))
    assert "tap,id=n0,script=no,downscript=no" in a2  # a template's throwaway tap
    assert "virtio-net-device,netdev=n0,mac=52:54:00:00:00:01" in a


def test_q35_uses_pci_devices_and_firmware() -> None:
    cfg = MachineConfig(
        name="os",
        machine="q35",
        firmware="/usr/share/ovmf/OVMF.fd",
        drives=(Drive(id="disk0", path="/v/os.qcow2", format="qcow2"),),
        console=Chardev(backend="socket", path="/v/console.sock"),
    )
    a = qemu.argv(cfg)
    assert a[a.index("-machine") + 1] == "q35"
    assert ["-bios", "/usr/share/ovmf/OVMF.fd"] == a[a.index("-bios") : a.index("-bios") + 2]
    assert "virtio-blk-pci,drive=disk0" in a and "-kernel" not in a
    assert "socket,id=console,path=/v/console.sock,server=on,wait=off" in a


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"machine": "pc"}, "machine"),
        ({"accel": "hvf"}, "accel"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 8}, "memory_mib"),
        ({"kernel": ""}, "kernel"),
        ({"drives": (Drive(id="a", path="x"), Drive(id="a", path="y"))}, "drives"),
    ],
)
def test_bad_config_names_the_field(kw: dict, field: str) -> None:
    args = {"name": "x", "kernel": "/k", **kw}
    with pytest.raises(ConfigError) as ei:
        MachineConfig(**args)
    assert ei.value.field == field


def test_chardev_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="path"):
        Chardev(backend="file")


def test_isle_microvm_config_and_cmdline() -> None:
    boot = microvm.Boot(
        kernel="/k", initrd="/i", rootdisk="/d.ext4", fstype="ext4", vcpus=2, memory_mib=256
    )
    cfg = microvm.machine_config(boot, "/run/x", stdout="/proc/self/fd/7", stderr="")
    assert [p.name for p in cfg.serial_ports][:4] == [
        "org.isle.ctl",
        "org.isle.stdout",
        "org.isle.stderr",
        "org.isle.stdin",
    ]
    assert [(p.name, p.nr) for p in cfg.serial_ports][4:] == [
        ("org.isle.x1.out", 5),
        ("org.isle.x1.err", 6),
        ("org.isle.x1.in", 7),
        ("org.isle.x2.out", 8),
        ("org.isle.x2.err", 9),
        ("org.isle.x2.in", 10),
        ("org.isle.tty", 11),  # one virtconsole, the guest's hvc0 (several exhaust its RAM)
    ]
    assert [p.console for p in cfg.serial_ports] == [False] * 10 + [True]
    assert cfg.serial_ports[10].chardev.path == "/run/x/tty.sock"  # same layout, tty or not
    assert "virtconsole,chardev=port11,name=org.isle.tty,nr=11" in qemu.argv(cfg)
    assert cfg.serial_ports[4].chardev.path == "/run/x/x1o.sock"
    assert cfg.serial_ports[3].chardev.backend == "null"  # same layout with or without stdin
    assert cfg.serial_ports[2].chardev.backend == "null"
    assert cfg.drives[0].readonly and cfg.drives[0].path == "/d.ext4"
    assert "isle.rootfs=ext4" in cfg.cmdline and "quiet" in cfg.cmdline
    assert microvm.cmdline("erofs", 2596142).split()[3] == "tsc_early_khz=2596142"
    assert "tsc_early_khz" not in microvm.cmdline("erofs", None)


def test_fdsets_and_host_ends(tmp_path) -> None:
    cfg = MachineConfig(name="f", kernel="/k", fdsets=(7, 9))
    a = qemu.argv(cfg)
    assert ["-add-fd", "fd=7,set=7", "-add-fd", "fd=9,set=9"] == a[
        a.index("-add-fd") : a.index("-add-fd") + 4
    ]
    import os

    with open(tmp_path / "f", "wb") as f:
        assert microvm.host_end(f.fileno()) == (f"/dev/fdset/{f.fileno()}", (f.fileno(),))
    r, w = os.pipe()
    try:  # QEMU in its jail has no /proc: a pipe (tty, socket relay...) is reopened write-only
        with pytest.raises(VMError, match="not write-only"):
            microvm.host_end(r)
        w2 = microvm.writable(r)
        try:
            assert microvm.host_end(w2) == (f"/dev/fdset/{w2}", (w2,))
            os.write(w2, b"x")
            assert os.read(r, 1) == b"x"
        finally:
            os.close(w2)
    finally:
        os.close(r)
        os.close(w)


def test_sandbox_backing_and_tap_fd() -> None:
    cfg = MachineConfig(name="s", machine="q35", fdsets=(5, (6, 5)),
                        drives=(Drive(id="d", path="/dev/fdset/5", format="qcow2",
                                      backing="/dev/fdset/8", backing_format="raw"),),
                        nics=(Nic(id="n", kind="tap", ifname="t0", fd=9),))
    a = qemu.argv(cfg)
    assert a[a.index("-sandbox") + 1] == qemu.SANDBOX
    assert "fd=6,set=5" in a
    assert ("file=/dev/fdset/5,format=qcow2,if=none,id=d,backing.file.filename=/dev/fdset/8,"
            "backing.driver=raw") in a
    assert "tap,id=n,fd=9" in a
    assert "-sandbox" not in qemu.argv(MachineConfig(name="s", machine="q35", sandbox=False))


def test_shares_get_virtiofs_devices_shared_ram_and_modern_mmio() -> None:
    """A volume shared over virtio-fs: a vhost-user-fs device per share on virtiofsd's socket,
    guest RAM in a shared memfd (vhost-user maps it), virtio 1.0 MMIO (libvhost-user has no
    legacy devices), and the init told to load fuse + virtiofs."""
    from isle.vm.config import FsShare

    boot = microvm.Boot(kernel="/k", initrd="/i", rootdisk="/d.erofs")
    sh = (FsShare(tag="isle0", socket="/r/isle0.sock", source="/v", readonly=True),)
    a = qemu.argv(microvm.machine_config(boot, "/r", stdout="", stderr="", shares=sh))
    assert "memory-backend-memfd,id=mem,size=128M,share=on" in a
    assert a[a.index("-machine") + 1].endswith(",memory-backend=mem")
    assert ["-global", "virtio-mmio.force-legacy=false"] == a[a.index("-global"):][:2]
    assert "socket,id=fs0,path=/r/isle0.sock" in a
    assert "vhost-user-fs-device,chardev=fs0,tag=isle0" in a
    assert "isle.shares=1" in a[a.index("-append") + 1]
    plain = qemu.argv(microvm.machine_config(boot, "/r", stdout="", stderr=""))
    assert "-global" not in plain and "isle.shares=1" not in plain[plain.index("-append") + 1]
    assert not any("memfd" in x for x in plain)  # cold boots and templates keep their layout
