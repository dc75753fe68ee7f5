"""MachineConfig -> QEMU argv, pure (golden-tested): microvm + virtio-mmio, or q35 + firmware."""

from __future__ import annotations

from isle.vm.config import HOTPLUG_PORT, Chardev, MachineConfig

__all__ = ["argv", "QEMU", "SANDBOX"]

QEMU = "qemu-system-x86_64"
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def _esc(v: str) -> str:
    """QEMU option values double commas to keep them literal."""
    return v.replace(",", ",,")


def _chardev(id: str, c: Chardev) -> str:
    if c.backend == "null":
        return f"null,id={id}"
    if c.backend == "socket":
        log = f",logfile={_esc(c.log)},logappend=on" if c.log else ""
        return f"socket,id={id},path={_esc(c.path)},server=on,wait=off{log}"
    return f"file,id={id},path={_esc(c.path)},append={'on' if c.append else 'off'}"


def argv(cfg: MachineConfig, qemu: str = QEMU) -> list[str]:
    micro = cfg.machine == "microvm"
    # microvm: no PIT/PIC/RTC emulation to speak of, ACPI on (its poweroff), virtio over MMIO
    machine = "microvm,pit=off,pic=off,isa-serial=on" if micro else "q35"
    if micro and cfg.hotplug_slot:  # a PCIe host bridge (ECAM, described by ACPI)
        machine += ",pcie=on"
    if cfg.memory_backend is not None:
        machine += ",memory-backend=mem"
    a = [
        qemu,
        "-name",
        _esc(cfg.name),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        machine,
        "-accel",
        cfg.accel,
        "-smp",
        str(cfg.vcpus),
        "-m",
        f"{cfg.memory_mib}M",
    ]
    if cfg.sandbox:  # QEMU's own seccomp filter, every optional group denied
        a += ["-sandbox", SANDBOX]
    if cfg.accel == "kvm":
        a += ["-cpu", "host"]
    for fd in cfg.fdsets:
        n, s = fd if isinstance(fd, tuple) else (fd, fd)
        a += ["-add-fd", f"fd={n},set={s}"]
    if cfg.memory_backend is not None:
        mb = cfg.memory_backend
        if mb.path:
            obj = (f"memory-backend-file,id=mem,size={cfg.memory_mib}M,"
                   f"mem-path={_esc(mb.path)},share={'on' if mb.share else 'off'}")
        else:
            obj = f"memory-backend-memfd,id=mem,size={cfg.memory_mib}M,share=on"
        a += ["-object", obj]
    a += ["-no-reboot"]  # a guest reboot or panic ends QEMU: isle treats both as the VM's end
    if cfg.kernel:
        a += ["-kernel", cfg.kernel]
    if cfg.initrd:
        a += ["-initrd", cfg.initrd]
    if cfg.cmdline:
        a += ["-append", cfg.cmdline]
    if cfg.firmware and not micro:
        a += ["-bios", cfg.firmware]
    for i, fw in enumerate(cfg.pflash if not micro else ()):
        ro = ",readonly=on" if i == 0 else ""
        a += ["-drive", f"if=pflash,format=raw,unit={i},file={_esc(fw)}{ro}"]
    a += ["-chardev", _chardev("console", cfg.console), "-serial", "chardev:console"]
    blk = "virtio-blk-device" if micro else "virtio-blk-pci"
    for d in cfg.drives:
        opts = f"file={_esc(d.path)},format={d.format},if=none,id={d.id}"
        if d.readonly:
            opts += ",readonly=on"
        if d.snapshot:
            opts += ",snapshot=on"
        if d.backing:
            opts += f",backing.file.filename={_esc(d.backing)},backing.driver={d.backing_format}"
        if not cfg.image_locking:
            opts += ",file.locking=off" + (",backing.file.locking=off" if d.backing else "")
        a += ["-drive", opts, "-device", f"{blk},drive={d.id}"]
    net = "virtio-net-device" if micro else "virtio-net-pci"
    for nic in cfg.nics:
        if nic.kind == "tap" and nic.fd >= 0:  # opened by isle (jail.open_tap)
            a += ["-netdev", f"tap,id={nic.id},fd={nic.fd}"]
        elif nic.kind == "tap":
            # no name: QEMU makes a tapN it removes
            name = f",ifname={nic.ifname}" if nic.ifname else ""
            a += ["-netdev", f"tap,id={nic.id}{name},script=no,downscript=no"]
        else:
            a += ["-netdev", f"user,id={nic.id}" + "".join(f",hostfwd={h}" for h in nic.hostfwd)]
        a += ["-device", f"{net},netdev={nic.id}" + (f",mac={nic.mac}" if nic.mac else "")]
    if cfg.serial_ports:
        a += ["-device", "virtio-serial-device" if micro else "virtio-serial-pci"]
        for p in cfg.serial_ports:
            cid = f"port{p.nr}"
            a += [
                "-chardev",
                _chardev(cid, p.chardev),
                "-device",
                f"{'virtconsole' if p.console else 'virtserialport'},chardev={cid},"
                f"name={p.name},nr={p.nr}",
            ]
    if cfg.balloon:  # free-page reporting only: isle never inflates it
        a += ["-device", ("virtio-balloon-device" if micro else "virtio-balloon-pci")
              + ",free-page-reporting=on"]
    if micro and cfg.hotplug_slot:  # empty: vhost-user-fs-pci goes there after a restore
        a += ["-device", f"pcie-root-port,id={HOTPLUG_PORT},bus=pcie.0,chassis=1,slot=1"]
    fs = "vhost-user-fs-device" if micro else "vhost-user-fs-pci"
    if micro and cfg.shares:  # virtiofsd (libvhost-user) serves virtio 1.0 devices only
        a += ["-global", "virtio-mmio.force-legacy=false"]
    for i, sh in enumerate(cfg.shares):
        a += ["-chardev", f"socket,id=fs{i},path={_esc(sh.socket)}",
              "-device", f"{fs},chardev=fs{i},tag={_esc(sh.tag)}"]
    if cfg.qmp_socket:
        a += ["-qmp", f"unix:{_esc(cfg.qmp_socket)},server=on,wait=off"]
    if cfg.pidfile:
        a += ["-pidfile", cfg.pidfile]
    if cfg.incoming:
        a += ["-incoming", cfg.incoming]
    return a
