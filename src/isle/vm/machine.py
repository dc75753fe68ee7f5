"""Full-OS VMs: q35 + firmware (SeaBIOS or OVMF) booting a user-brought raw/qcow2 disk.

Each VM gets a qcow2 overlay over the user's disk (the base is shared and never written), a serial
console on a unix socket and a QMP socket; QEMU runs in its own session so VMs outlive the isle
process. QEMU is jailed (vm.jail): its own uid, no capabilities, -sandbox, a mount namespace with
only its files; the disks (overlay, base, UEFI vars) reach it as fds. Its run directory
(<runroot>/<name>/: sockets, logs) belongs to that uid; what isle trusts (QEMU's pid) is kept
beside it in <runroot>/<name>.pid, root's, never written by QEMU.

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
from isle.vm.config import Chardev, Drive, MachineConfig, Nic, SerialPort
from isle.vm.qemu import argv as qemu_argv

__all__ = ["MachineSpec", "MachineInfo", "MachineStore", "OVMF_CODE", "OVMF_VARS", "parse_port"]

AGENT_PORT = "org.qemu.guest_agent.0"

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
    #: an OS image's own kernel (kernel, initrd above): q35 direct boot with this command line
    cmdline: str = ""
    #: provisioned by a cloud-init seed (<dir>/seed.iso): the login user, the guest's host name
    user: str = ""
    hostname: str = ""
    #: user network: published ports, "[ip:]host:guest[/proto]"; SSH gets a free port at start
    ports: list[str] = field(default_factory=list)
    #: qemu-guest-agent port (virtio-serial) for `isle vm exec`
    agent: bool = False
    #: an isle network's address asked for (--ip)
    ip: str = ""
    #: the isle image the disk was built from (--from-image)
    image: str = ""
    #: the (root, runroot) whose network manager holds the VM's isle network attachment (set
    #: when a live migration brought the VM here: its lease and tap stay where they were)
    netroot: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


@dataclass(slots=True, kw_only=True)
class MachineInfo:
    spec: MachineSpec
    status: str  # stopped | running
    pid: int
    disk: str
    console: str
    qmp: str
    #: running only: host ports forwarded to the guest ({"22/tcp": 40123})
    forwards: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.spec),
            "status": self.status,
            "pid": self.pid,
            "disk": self.disk,
            "console": self.console,
            "qmp": self.qmp,
            "forwards": self.forwards,
        }


_TAG = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def _check_tag(tag: str) -> None:
    if not _TAG.match(tag):
        raise ConfigError("snapshot", f"{tag!r} is not a valid snapshot name")


def parse_port(p: str) -> str:
    """-p [ip:]host:guest[/tcp|udp] -> "[ip:]host:guest/proto" (ConfigError naming it if bad)."""
    spec, _, proto = p.partition("/")
    proto = proto or "tcp"
    parts = spec.split(":")
    ok = proto in ("tcp", "udp") and len(parts) in (2, 3) and all(
        x.isdigit() and 0 < int(x) < 65536 for x in parts[-2:])
    if not ok:
        raise ConfigError("--publish", f"{p!r} is not [ip:]hostport:guestport[/tcp|udp]")
    return f"{spec}/{proto}"


def _hostfwd(item: tuple[str, int]) -> str:
    """("22/tcp@127.0.0.1", 40123) -> "tcp:127.0.0.1:40123-:22"."""
    key, host = item
    guest, _, ip = key.partition("@")
    port, _, proto = guest.partition("/")
    return f"{proto or 'tcp'}:{ip}:{host}-:{port}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _spawn_detached(argv: list[str], log: int, pass_fds: tuple[int, ...],
                    preexec: Any) -> tuple[int, int]:
    """Start argv (QEMU) so that it outlives isle and is reaped when it ends: a forked keeper in
    its own session ignores SIGCHLD (the kernel reaps its children), spawns QEMU (which jails
    itself and joins its cgroup in its preexec), reports the pid, then becomes `tail --pid`,
    which ends with QEMU. (An orphan QEMU left to an init that does not reap would stay a zombie
    in its cgroup, which could then never be removed.) Returns (QEMU's pid, the keeper's)."""
    import subprocess

    r, w = os.pipe()
    keeper = os.fork()
    if keeper == 0:  # pragma: no cover - the child's own life
        code = 1
        try:
            os.close(r)
            os.setsid()
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)
            from isle.vm.jail import ENV

            try:
                p = proc.spawn(argv, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, pass_fds=pass_fds, preexec_fn=preexec,
                               env=ENV)
            except subprocess.SubprocessError as exc:  # the jail's failure is in the log
                raise VMError(f"QEMU could not be started ({exc})") from exc
            os.write(w, f"{p.pid}".encode())
            os.close(w)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 65536)
            os.execv("/usr/bin/tail", ["tail", f"--pid={p.pid}", "-s", "0.1", "-f", "/dev/null"])
        except BaseException as exc:
            try:
                os.write(w, f"error {exc}".encode())
            except OSError:
                pass
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    if not msg.isdigit():
        raise VMError(msg.removeprefix("error ") or "the QEMU keeper died")
    return int(msg), keeper


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot): with the pid, its identity."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


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

    def _pidfile(self, name: str) -> str:
        return self._run(name) + ".pid"

    def _pid(self, name: str) -> int:
        """QEMU's pid from isle's own record (pid and start time: a reused pid is not it)."""
        try:
            with open(self._pidfile(name)) as f:
                pid_s, start = f.read().split()[:2]
            pid = int(pid_s)
            if _start_time(pid) != start:
                return 0
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
        cmdline: str = "",
        user: str = "",
        hostname: str = "",
        ports: list[str] | None = None,
        agent: bool = False,
        provision: Any = None,
        ip: str = "",
        image: str = "",
    ) -> MachineInfo:
        """A VM over base; with kernel (+initrd, init) it boots that kernel into the disk's init."""
        if firmware not in ("bios", "uefi"):
            raise ConfigError("firmware", f"{firmware!r} is not bios or uefi")
        if network not in ("none", "user") and not (cmdline and _NAME.match(network)):
            raise ConfigError("network", f"{network!r} is not none or user (an isle network "
                              "needs an OS image)")
        ports = [parse_port(p) for p in ports or ()]
        if ports and network == "none":
            raise ConfigError("--publish", "published ports need a network")
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
                cmdline=cmdline,
                user=user,
                hostname=hostname,
                ports=ports,
                agent=agent,
                ip=ip,
                image=image,
            )
            if provision is not None:  # e.g. the cloud-init seed, written into the VM's dir
                provision(d)
            MachineConfig(name=name, machine="q35", vcpus=vcpus, memory_mib=memory_mib)  # validates
            atomic_write(os.path.join(d, "machine.json"), json.dumps(asdict(spec)).encode())
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return self.inspect(name)

    def config(self, name: str, forwards: dict[str, int] | None = None,
               nic: Nic | None = None, cmdline_extra: str = "",
               incoming: str = "") -> MachineConfig:
        """The MachineConfig start() runs (pure given the record, the forwarded ports and, on an
        isle network, the tap NIC the engine made and the guest's address on the command line)."""
        forwards = forwards or {}
        spec, d, r = self._load(name), self._dir(name), self._run(name)
        acc = _accel.detect()[0]
        cmdline = " ".join(x for x in (spec.cmdline, cmdline_extra) if x)
        if spec.kernel and not spec.cmdline:
            from isle.vm.microvm import cmdline as micro_cmdline

            cmdline = micro_cmdline("ext4", _accel.host_tsc_khz() if acc == "tcg" else None)
            cmdline = cmdline.replace(" quiet", "") + f" isle.init={spec.init or '/sbin/init'}"
        return MachineConfig(
            name=name,
            machine="microvm" if spec.kernel and not spec.cmdline else "q35",
            kernel=spec.kernel,
            initrd=spec.initrd,
            cmdline=cmdline,
            accel=acc,
            vcpus=spec.vcpus,
            memory_mib=spec.memory_mib,
            pflash=(OVMF_CODE, os.path.join(d, "OVMF_VARS.fd")) if spec.firmware == "uefi" else (),
            drives=(Drive(id="disk0", path=os.path.join(d, "disk.qcow2"), format="qcow2",
                          backing=spec.base, backing_format=spec.base_format),)
            + ((Drive(id="seed", path=os.path.join(d, "seed.iso"), format="raw", readonly=True),)
               if os.path.exists(os.path.join(d, "seed.iso")) else ()),
            nics=(Nic(id="net0", hostfwd=tuple(_hostfwd(f) for f in forwards.items())),)
            if spec.network == "user" else (nic,) if nic is not None else (),
            serial_ports=(SerialPort(name=AGENT_PORT, nr=1, chardev=Chardev(
                backend="socket", path=os.path.join(r, "qga.sock"))),) if spec.agent else (),
            console=Chardev(backend="socket", path=os.path.join(r, "console.sock"),
                            log=os.path.join(r, "console.log")),
            qmp_socket=os.path.join(r, "qmp.sock"),
            incoming=incoming,
            # whole-OS VMs (an OS image's kernel, or firmware) migrate live: two QEMUs hold the
            # disk during the switch-over (isle's pid record guards against a second start)
            image_locking=bool(spec.kernel and not spec.cmdline),
        )

    def start(self, name: str, *, cgroup_files: tuple[str, ...] = (),
              timeout: float = 60.0, nic: Nic | None = None,
              cmdline_extra: str = "", incoming: str = "",
              forwards: dict[str, int] | None = None) -> MachineInfo:
        """Start QEMU jailed, in the cgroup whose procs files are given (the engine's), and wait
        until its monitor answers (the machine is built); VMError with QEMU's log if it fails.
        forwards: the user network's host ports (default: the published ones + a free SSH one;
        {} for a live migration's incoming QEMU, which takes the source's after it quits)."""
        from isle.vm import jail
        from isle.vm.qmp import Monitor

        if self._pid(name):
            raise InvalidState(f"VM {name} is already running")
        if forwards is None:
            forwards = self._pick_forwards(self._load(name))
        cfg = self.config(name, forwards, nic, cmdline_extra, incoming)
        r = self._run(name)
        if len(cfg.qmp_socket) > 100:
            raise ConfigError("runroot", f"{r} is too long for unix sockets")
        shutil.rmtree(r, ignore_errors=True)
        os.makedirs(os.path.dirname(r), mode=0o700, exist_ok=True)
        os.mkdir(r, 0o700)
        fds: list[int] = []
        j = None
        p: int | None = None
        try:
            cfg, fds = jail.drives_by_fd(cfg)
            if os.geteuid() == 0:
                j = jail.plan(cfg, r, cgroup_files=cgroup_files, pdeathsig=False)
            log = os.open(os.path.join(r, "qemu.log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                          | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                p, keeper = _spawn_detached(qemu_argv(cfg), log,
                                    tuple(fds) + ((j.lease_fd,) if j else ())
                                    + ((nic.fd,) if nic is not None and nic.fd >= 0 else ()),
                                    jail.child(j) if j else None)
            finally:
                os.close(log)
            atomic_write(self._pidfile(name), f"{p} {_start_time(p)} {keeper}\n".encode(),
                         durable=False)
            atomic_write(self._run(name) + ".fwd", json.dumps(forwards).encode(), durable=False)
            # QMP answers once the machine is built (what -daemonize used to wait for); the
            # socket file exists a moment before QEMU listens on it
            deadline = time.monotonic() + timeout
            while True:
                try:
                    Monitor(cfg.qmp_socket, timeout=max(1.0, deadline - time.monotonic()),
                            alive=lambda: _alive(p)).close()
                    break
                except VMError:
                    if not _alive(p) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        except Exception as exc:
            from isle.vm.microvm import _tail

            why = _tail(os.path.join(r, "qemu.log")).strip().splitlines()[-3:]
            if p is not None and _alive(p):
                os.kill(p, signal.SIGKILL)
            self._clean_run(name)
            raise VMError(f"VM {name} did not start: {exc}"
                          + (f": {' | '.join(why)}" if why else "")) from exc
        finally:
            for fd in fds:
                os.close(fd)
            if j is not None:
                j.release()
        return self.inspect(name)

    def _clean_run(self, name: str) -> None:
        """QEMU is gone: its keeper follows within 0.1 s; then its files go."""
        try:
            with open(self._pidfile(name)) as f:
                keeper = int(f.read().split()[2])
            for _ in range(100):
                if not _alive(keeper):
                    break
                time.sleep(0.01)
        except (OSError, ValueError, IndexError):
            pass
        log = os.path.join(self._run(name), "console.log")
        keep = os.path.join(self.root, name)
        if os.path.isdir(keep):  # `isle logs` shows the last boot's (QEMU's uid owns the run
            try:                 # dir: no following its links; the last 4 MiB)
                fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size - (4 << 20)))
                    atomic_write(os.path.join(keep, "console.log"), f.read(), durable=False)
            except OSError:
                pass
        shutil.rmtree(self._run(name), ignore_errors=True)
        for p in (self._pidfile(name), self._run(name) + ".fwd"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

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
        self._clean_run(name)
        return self.inspect(name)

    def rm(self, name: str, force: bool = False) -> None:
        self._load(name)
        if self._pid(name):
            if not force:
                raise InvalidState(f"VM {name} is running: stop it first or force")
            self.stop(name, timeout=0)
        shutil.rmtree(self._dir(name), ignore_errors=True)
        self._clean_run(name)

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
            forwards=self._forwards(name) if pid else {},
        )

    def add_forwards(self, name: str, forwards: dict[str, int]) -> list[str]:
        """Add host port forwards to the running VM's user network (HMP hostfwd_add) and record
        them; the rules QEMU refused (a port taken meanwhile), each with QEMU's reason."""
        from isle.vm.qmp import Monitor

        have, failed = self._forwards(name), []
        mon = Monitor(os.path.join(self._run(name), "qmp.sock"), timeout=10)
        try:
            for item in forwards.items():
                rule = _hostfwd(item)
                why = str(mon.cmd("human-monitor-command",
                                  **{"command-line": f"hostfwd_add net0 {rule}"}) or "").strip()
                if why:
                    failed.append(f"{rule}: {why}")
                else:
                    have[item[0]] = item[1]
        finally:
            mon.close()
        atomic_write(self._run(name) + ".fwd", json.dumps(have).encode(), durable=False)
        return failed

    def _forwards(self, name: str) -> dict[str, int]:
        try:
            with open(self._run(name) + ".fwd") as f:
                return {str(k): int(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _pick_forwards(spec: MachineSpec) -> dict[str, int]:
        """Host ports for the user network: the published ones, and a free one for SSH when the
        VM was provisioned (so `isle vm ssh` works without a published port)."""
        if spec.network != "user":
            return {}
        fw: dict[str, int] = {}
        for p in spec.ports:
            hostpart, guest = p.rsplit(":", 1)
            fw[guest] = int(hostpart.rsplit(":", 1)[-1])
            if ":" in hostpart:
                fw[guest + "@" + hostpart.rsplit(":", 1)[0]] = fw.pop(guest)
        if spec.user and not any(k.split("@")[0] == "22/tcp" for k in fw):
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                fw["22/tcp@127.0.0.1"] = s.getsockname()[1]
        return fw

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

    # -- snapshots (QEMU's internal qcow2 snapshots of the VM's overlay) ----------------------
    def _hmp(self, name: str, line: str, timeout: float = 600) -> str:
        from isle.vm.qmp import Monitor

        mon = Monitor(os.path.join(self._run(name), "qmp.sock"), timeout=timeout)
        try:
            out = str(mon.cmd("human-monitor-command", **{"command-line": line}) or "")
        finally:
            mon.close()
        if out.strip() and ("rror" in out or "not" in out.lower()):
            raise VMError(f"{line}: {out.strip()}")
        return out

    def snapshot_create(self, name: str, tag: str) -> None:
        """A running VM: disk and RAM (savevm; the guest resumes); a stopped one: its disk."""
        _check_tag(tag)
        if tag in {s["name"] for s in self.snapshots(name)}:
            raise AlreadyExists(f"VM {name} has a snapshot {tag}")
        if self._pid(name):
            self._hmp(name, f"savevm {tag}")
        else:
            self._qemu_img_snapshot(name, "-c", tag)

    def snapshot_restore(self, name: str, tag: str) -> None:
        _check_tag(tag)
        if tag not in {s["name"] for s in self.snapshots(name)}:
            raise NotFound(f"VM {name} has no snapshot {tag}")
        if self._pid(name):
            self._hmp(name, f"loadvm {tag}")
        else:
            self._qemu_img_snapshot(name, "-a", tag)

    def snapshot_rm(self, name: str, tag: str) -> None:
        _check_tag(tag)
        if tag not in {s["name"] for s in self.snapshots(name)}:
            raise NotFound(f"VM {name} has no snapshot {tag}")
        if self._pid(name):
            self._hmp(name, f"delvm {tag}")
        else:
            self._qemu_img_snapshot(name, "-d", tag)

    def snapshots(self, name: str) -> list[dict[str, Any]]:
        """[{name, date, vm_state_size, ...}] of the VM's overlay (read shared while it runs)."""
        self._load(name)
        path = os.path.join(self._dir(name), "disk.qcow2")
        r = proc.run(["qemu-img", "snapshot", "-U", "-l", path], timeout=60, check=False)
        if r.returncode != 0:
            raise VMError(f"qemu-img snapshot -l {path}: {r.stderr.decode().strip()}")
        out = []
        # ID TAG VM_SIZE DATE VM_CLOCK [ICOUNT]: the size is "291 MiB" (two words, or "0 B")
        row = re.compile(r"^(\d+)\s+(\S+)\s+(\d+(?:\.\d+)?\s*[KMGT]?i?B)\s+"
                         r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
        for line in r.stdout.decode(errors="replace").splitlines():
            m = row.match(line.strip())
            if m:
                out.append({"id": m.group(1), "name": m.group(2), "vm_size": m.group(3),
                            "date": m.group(4)})
        return out

    def _qemu_img_snapshot(self, name: str, op: str, tag: str) -> None:
        path = os.path.join(self._dir(name), "disk.qcow2")
        r = proc.run(["qemu-img", "snapshot", op, tag, path], timeout=600, check=False)
        if r.returncode != 0:
            raise VMError(f"qemu-img snapshot {op} {tag}: {r.stderr.decode().strip()}")

    # -- moving ---------------------------------------------------------------------------------
    def export(self, name: str, out: str, fmt: str) -> str:
        """The VM's disk (overlay + base, flattened) as one fmt image at out (stopped VMs only:
        a running guest's disk is not consistent)."""
        if self._pid(name):
            raise InvalidState(f"VM {name} is running: stop it before exporting")
        self._load(name)
        sub = "streamOptimized" if fmt == "vmdk" else ""
        return disk.convert(os.path.join(self._dir(name), "disk.qcow2"), out, fmt, subformat=sub)

    def console(self, name: str) -> str:
        """Path of the running VM's serial console socket (connect to it, read/write bytes)."""
        info = self.inspect(name)
        if info.status != "running":
            raise InvalidState(f"VM {name} is not running")
        return info.console
