"""Full-OS VMs: q35 + firmware (SeaBIOS or OVMF) booting a user-brought raw/qcow2 disk.

Each VM gets a qcow2 overlay over the user's disk (the base is shared and never written), a serial
console on a unix socket and a QMP socket; QEMU daemonizes so VMs outlive the isle process.

    store = MachineStore(root="/var/lib/isle/vms", runroot="/run/isle/vms")
    store.create("deb", "/images/debian.qcow2", memory_mib=1024)
    store.start("deb"); path = store.console("deb")   # connect a unix socket to path
    store.stop("deb"); store.rm("deb")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from isle.errors import AlreadyExists, ConfigError, InvalidState, NotFound, VMError
from isle.sys import proc
from isle.sys.fs import atomic_write
from isle.vm import accel as _accel
from isle.vm import disk
from isle.vm.config import Chardev, Drive, MachineConfig, Nic
from isle.vm.qemu import argv as qemu_argv

__all__ = ["MachineSpec", "MachineInfo", "MachineStore", "OVMF_CODE", "OVMF_VARS"]

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


@dataclass(slots=True, kw_only=True)
class MachineSpec:
    name: str
    base: str  # the user's disk (never written)
    base_format: str
    memory_mib: int = 1024
    vcpus: int = 1
    firmware: str = "bios"  # bios (SeaBIOS) | uefi (OVMF)
    network: str = "none"  # none | user
    #: set for a disk built from an image: microvm + direct kernel boot into the disk's own init
    kernel: str = ""
    initrd: str = ""
    init: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


@dataclass(slots=True, kw_only=True)
class MachineInfo:
    spec: MachineSpec
    status: str  # stopped | running
    pid: int
    disk: str
    console: str
    qmp: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.spec),
            "status": self.status,
            "pid": self.pid,
            "disk": self.disk,
            "console": self.console,
            "qmp": self.qmp,
        }


class MachineStore:
    """VMs under root/<name>/ (machine.json, disk.qcow2, OVMF vars); sockets under runroot."""

    def __init__(self, root: str, runroot: str) -> None:
        self.root = root
        self.runroot = runroot

    # -- paths ---------------------------------------------------------------------------------
    def _dir(self, name: str) -> str:
        if not _NAME.match(name):
            raise ConfigError("name", f"{name!r} is not a valid VM name")
        return os.path.join(self.root, name)

    def _run(self, name: str) -> str:
        return os.path.join(self.runroot, name)

    def _load(self, name: str) -> MachineSpec:
        try:
            with open(os.path.join(self._dir(name), "machine.json")) as f:
                return MachineSpec(**json.load(f))
        except FileNotFoundError:
            raise NotFound(f"no VM named {name}") from None

    def _pid(self, name: str) -> int:
        try:
            with open(os.path.join(self._run(name), "qemu.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"qemu-system" not in f.read():
                    return 0
            return pid
        except (OSError, ValueError):
            return 0

    # -- verbs ---------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        base: str,
        *,
        memory_mib: int = 1024,
        vcpus: int = 1,
        firmware: str = "bios",
        network: str = "none",
        kernel: str = "",
        initrd: str = "",
        init: str = "",
    ) -> MachineInfo:
        """A VM over base; with kernel (+initrd, init) it boots that kernel into the disk's init."""
        if firmware not in ("bios", "uefi"):
            raise ConfigError("firmware", f"{firmware!r} is not bios or uefi")
        if network not in ("none", "user"):
            raise ConfigError("network", f"{network!r} is not none or user")
        if firmware == "uefi" and not os.path.exists(OVMF_CODE):
            raise VMError(f"UEFI firmware {OVMF_CODE} missing: apt-get install ovmf")
        fmt = disk.check_bootable(base) if not kernel else str(disk.info(base).get("format"))
        d = self._dir(name)
        os.makedirs(self.root, exist_ok=True)
        try:
            os.mkdir(d)
        except FileExistsError:
            raise AlreadyExists(f"a VM named {name} exists") from None
        try:
            disk.overlay(base, os.path.join(d, "disk.qcow2"), fmt)
            if firmware == "uefi":
                shutil.copy(OVMF_VARS, os.path.join(d, "OVMF_VARS.fd"))
            spec = MachineSpec(
                name=name,
                base=os.path.abspath(base),
                base_format=fmt,
                memory_mib=memory_mib,
                vcpus=vcpus,
                firmware=firmware,
                network=network,
                kernel=kernel,
                initrd=initrd,
                init=init,
            )
            MachineConfig(name=name, machine="q35", vcpus=vcpus, memory_mib=memory_mib)  # validates
            atomic_write(os.path.join(d, "machine.json"), json.dumps(asdict(spec)).encode())
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return self.inspect(name)

    def config(self, name: str) -> MachineConfig:
        """The MachineConfig start() runs (pure given the record)."""
        spec, d, r = self._load(name), self._dir(name), self._run(name)
        acc = _accel.detect()[0]
        cmdline = ""
        if spec.kernel:
            from isle.vm.microvm import cmdline as micro_cmdline

            cmdline = micro_cmdline("ext4", _accel.host_tsc_khz() if acc == "tcg" else None)
            cmdline = cmdline.replace(" quiet", "") + f" isle.init={spec.init or '/sbin/init'}"
        return MachineConfig(
            name=name,
            machine="microvm" if spec.kernel else "q35",
            kernel=spec.kernel,
            initrd=spec.initrd,
            cmdline=cmdline,
            accel=acc,
            vcpus=spec.vcpus,
            memory_mib=spec.memory_mib,
            pflash=(OVMF_CODE, os.path.join(d, "OVMF_VARS.fd")) if spec.firmware == "uefi" else (),
            drives=(Drive(id="disk0", path=os.path.join(d, "disk.qcow2"), format="qcow2"),),
            nics=(Nic(id="net0"),) if spec.network == "user" else (),
            console=Chardev(backend="socket", path=os.path.join(r, "console.sock"),
                            log=os.path.join(r, "console.log")),
            qmp_socket=os.path.join(r, "qmp.sock"),
            pidfile=os.path.join(r, "qemu.pid"),
        )

    def start(self, name: str) -> MachineInfo:
        if self._pid(name):
            raise InvalidState(f"VM {name} is already running")
        cfg = self.config(name)
        r = self._run(name)
        shutil.rmtree(r, ignore_errors=True)
        os.makedirs(r, mode=0o700)
        if len(cfg.qmp_socket) > 100:
            raise ConfigError("runroot", f"{r} is too long for unix sockets")
        argv = qemu_argv(cfg) + ["-daemonize", "-D", os.path.join(r, "qemu.log")]
        try:
            proc.run(argv, timeout=60)
        except Exception as exc:
            shutil.rmtree(r, ignore_errors=True)
            raise VMError(f"VM {name} did not start: {exc}") from exc
        return self.inspect(name)

    def stop(self, name: str, timeout: float = 30.0) -> MachineInfo:
        """ACPI power button, then quit/kill after timeout (a hung guest still stops)."""
        pid = self._pid(name)
        if pid:
            from isle.vm.qmp import Monitor

            try:
                mon = Monitor(os.path.join(self._run(name), "qmp.sock"), timeout=5)
                try:
                    mon.cmd("system_powerdown")
                    deadline = time.monotonic() + timeout
                    while self._pid(name) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    if self._pid(name):
                        mon.cmd("quit")
                finally:
                    mon.close()
            except VMError:
                pass
            deadline = time.monotonic() + 5
            while self._pid(name) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._pid(name):
                os.kill(pid, signal.SIGKILL)
                while self._pid(name):
                    time.sleep(0.05)
        shutil.rmtree(self._run(name), ignore_errors=True)
        return self.inspect(name)

    def rm(self, name: str, force: bool = False) -> None:
        self._load(name)
        if self._pid(name):
            if not force:
                raise InvalidState(f"VM {name} is running: stop it first or force")
            self.stop(name, timeout=0)
        shutil.rmtree(self._dir(name), ignore_errors=True)
        shutil.rmtree(self._run(name), ignore_errors=True)

    def inspect(self, name: str) -> MachineInfo:
        spec, r = self._load(name), self._run(name)
        pid = self._pid(name)
        return MachineInfo(
            spec=spec,
            status="running" if pid else "stopped",
            pid=pid,
            disk=os.path.join(self._dir(name), "disk.qcow2"),
            console=os.path.join(r, "console.sock"),
            qmp=os.path.join(r, "qmp.sock"),
        )

    def ls(self) -> list[MachineInfo]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [
            self.inspect(n)
            for n in names
            if os.path.exists(os.path.join(self.root, n, "machine.json"))
        ]

    def console(self, name: str) -> str:
        """Path of the running VM's serial console socket (connect to it, read/write bytes)."""
        info = self.inspect(name)
        if info.status != "running":
            raise InvalidState(f"VM {name} is not running")
        return info.console
