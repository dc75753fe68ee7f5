"""MachineConfig: everything QEMU needs to know about one VM, as plain frozen data (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from isle.errors import ConfigError

__all__ = ["Chardev", "Drive", "Nic", "SerialPort", "MemoryBackend", "FsShare", "MachineConfig",
           "replace", "HOTPLUG_PORT"]

#: the root port of MachineConfig.hotplug_slot
HOTPLUG_PORT = "hp0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Chardev:
    """A host end: 'file' (append keeps what is there), 'socket' (QEMU listens) or 'null'."""

    backend: str
    path: str = ""
    append: bool = True
    log: str = ""  # socket only: also append everything the guest writes to this file

    def __post_init__(self) -> None:
        if self.backend not in ("file", "socket", "null"):
            raise ConfigError("chardev.backend", f"{self.backend!r} is not file, socket or null")
        if self.backend != "null" and not self.path:
            raise ConfigError("chardev.path", f"a {self.backend} chardev needs a path")


@dataclass(frozen=True, slots=True, kw_only=True)
class Drive:
    id: str
    path: str
    format: str = "raw"
    readonly: bool = False
    #: snapshot=on: writes go to a temp file QEMU deletes (a throwaway writable disk)
    snapshot: bool = False
    #: a qcow2 overlay's backing image given explicitly (an fd set: QEMU in its jail cannot
    #: open the path in the overlay's header), and that image's format
    backing: str = ""
    backing_format: str = "raw"


@dataclass(frozen=True, slots=True, kw_only=True)
class Nic:
    """user: QEMU's slirp (no host setup); tap: an existing tap device made by the net layer."""

    id: str
    kind: str = "user"
    ifname: str = ""
    mac: str = ""
    #: tap only: an open tap fd QEMU inherits (isle opens the tap; QEMU needs no /dev/net/tun)
    fd: int = -1
    #: user only: forwarded ports, QEMU's hostfwd syntax ("tcp:127.0.0.1:2222-:22")
    hostfwd: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPort:
    """A named virtio-serial port (/sys/class/virtio-ports/*/name in the guest); nr fixed."""

    name: str
    chardev: Chardev
    nr: int
    #: a virtconsole (a tty in the guest, /dev/hvcN) rather than a plain port
    console: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryBackend:
    """Guest RAM in a file: share=True writes through (template), False is copy-on-write (clone).
    path "": an anonymous memfd (shared: what vhost-user devices such as virtio-fs need)."""

    path: str
    share: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FsShare:
    """A host directory shared into the guest over virtio-fs (a virtiofsd on socket)."""

    tag: str  # what the guest mounts: mount -t virtiofs TAG DIR
    socket: str  # virtiofsd's vhost-user socket
    source: str  # the host directory
    readonly: bool = False
    #: "": the share's root is source; NAME: a directory of virtiofsd's own holding source as NAME
    #: (the guest binds TAG/NAME, so its mountinfo names the directory as a host bind mount would)
    expose: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineConfig:
    name: str
    machine: str = "microvm"  # or "q35" (firmware, full OS)
    accel: str = "tcg"
    vcpus: int = 1
    memory_mib: int = 128
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    firmware: str = ""  # q35 only: a -bios image; empty = QEMU's SeaBIOS
    #: q35 UEFI: (code, vars) pflash images; code read-only, vars this VM's own copy
    pflash: tuple[str, ...] = ()
    drives: tuple[Drive, ...] = ()
    nics: tuple[Nic, ...] = ()
    serial_ports: tuple[SerialPort, ...] = ()
    #: the legacy UART (ttyS0): kernel console / firmware console
    console: Chardev = field(default_factory=lambda: Chardev(backend="null"))
    qmp_socket: str = ""
    memory_backend: MemoryBackend | None = None
    incoming: str = ""  # "defer": wait for migrate-incoming over QMP
    pidfile: str = ""
    #: inherited fds QEMU takes as fd sets (-add-fd fd=N,set=N; open them as /dev/fdset/N);
    #: an (fd, set) pair adds fd to another fd's set (a disk's read-write and read-only fds)
    fdsets: tuple[int | tuple[int, int], ...] = ()
    #: QEMU's seccomp sandbox (-sandbox on with every optional deny); off only for tests
    sandbox: bool = True
    #: virtio-fs shares (need guest RAM QEMU can share: a memfd memory backend)
    shares: tuple[FsShare, ...] = ()
    #: QEMU's image locks (OFD locks on the disk files); off where isle's own records guarantee
    #: one writer and a live migration's two QEMUs hold the same disk
    image_locking: bool = True
    #: a virtio-balloon with free-page reporting: the guest hands pages it frees back to the
    #: host. Never with a file-backed RAM a clone maps privately (a template's): QEMU < 8.1
    #: discards reported pages of any fd-backed RAM by punching holes in the file itself
    balloon: bool = False
    #: microvm only: a PCIe host bridge with one empty root port (id HOTPLUG_PORT) a device can
    #: be hot-plugged into (device_add), which microvm's virtio-mmio transports cannot take
    hotplug_slot: bool = False

    def __post_init__(self) -> None:
        if self.machine not in ("microvm", "q35"):
            raise ConfigError("machine", f"{self.machine!r} is not microvm or q35")
        if self.accel not in ("kvm", "tcg"):
            raise ConfigError("accel", f"{self.accel!r} is not kvm or tcg")
        if not 1 <= self.vcpus <= 64:
            raise ConfigError("vcpus", f"{self.vcpus} is not between 1 and 64")
        if not 16 <= self.memory_mib <= 1 << 20:
            raise ConfigError(
                "memory_mib", f"{self.memory_mib} MiB is not between 16 MiB and 1 TiB"
            )
        if self.machine == "microvm" and not self.kernel:
            raise ConfigError("kernel", "a microvm boots a kernel directly: kernel is required")
        ids = [d.id for d in self.drives] + [n.id for n in self.nics]
        if len(ids) != len(set(ids)):
            raise ConfigError("drives", f"device ids are not unique: {ids}")
        if self.balloon and self.memory_backend is not None and self.memory_backend.path:
            raise ConfigError("balloon", "free-page reporting would punch holes in the RAM file "
                              f"{self.memory_backend.path} (a template's, shared by its clones)")
        if self.hotplug_slot and self.machine != "microvm":
            raise ConfigError("hotplug_slot", "a hot-plug slot is a microvm's only")
        nrs = [p.nr for p in self.serial_ports]
        if len(nrs) != len(set(nrs)) or any(n < 1 for n in nrs):
            raise ConfigError("serial_ports", f"port numbers must be unique and >= 1: {nrs}")
