"""Run one microVM: spawn QEMU from a MachineConfig, speak the guest init's protocol, clean up.

Control protocol (port org.isle.ctl, one line each):
    guest -> host  ready | started | exit N | xexit SLOT N | error MSG
    host -> guest  job N (+ N script lines) | kill SIGNUM | exec SLOT B64
The program's stdout and stderr have their own ports (org.isle.stdout / org.isle.stderr) whose host
ends are files QEMU opens (/proc/self/fd/N or an fd set); the kernel console is a log file.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from isle.errors import VMError
from isle.sys import proc
from isle.vm import accel as _accel
from isle.vm.config import (
    Chardev,
    Drive,
    FsShare,
    MachineConfig,
    MemoryBackend,
    Nic,
    SerialPort,
    replace,
)
from isle.vm.qemu import argv as qemu_argv

__all__ = ["Boot", "cmdline", "machine_config", "MicroVM", "short_dir", "host_end", "writable",
           "EXEC_SLOTS", "TTY_PORT"]

PR_SET_PDEATHSIG = 1
#: how many `exec`s may run at once in one VM
EXEC_SLOTS = 2
#: the virtconsole a terminal process runs on (the guest's /dev/hvc0)
TTY_PORT = "org.isle.tty"


@dataclass(frozen=True, slots=True, kw_only=True)
class Boot:
    """What a microVM boots: kernel, initramfs, image disk and size."""

    kernel: str
    initrd: str
    rootdisk: str
    fstype: str = "erofs"
    vcpus: int = 1
    memory_mib: int = 128
    accel: str = "tcg"
    #: "" (no NIC), "tap" or "user": part of the device layout, so templates are per net kind
    net: str = ""
    #: the device layout's version (part of a template's key: a clone must match its template);
    #: 2: a virtconsole (hvc0: the process's terminal or one exec's)
    layout: int = 2
    #: exec slots (out/err/in ports each): EXEC_SLOTS, more for a pod's VM whose containers
    #: each take one (runtime.vm.pod)
    slots: int = EXEC_SLOTS
    #: a writable second disk (/dev/vdb, a host file: vm.disk.upper_image) is the guest's overlay
    #: upper instead of guest RAM: part of the layout (a template carries its own fresh one)
    upper: bool = False
    #: a pod's VM: an empty PCIe slot (a root port the guest's pciehp watches) its share is
    #: hot-plugged into when it starts as a template's clone (vm.snapshot.restore), virtio-fs
    #: loaded; part of the layout
    pod: bool = False


def cmdline(fstype: str, tsc_khz: int | None, net: bool = False, shares: bool = False,
            slots: int = EXEC_SLOTS, upper: bool = False, balloon: bool = False,
            pod: bool = False) -> str:
    """Kernel command line; each item was paid for under TCG.

    tsc_early_khz: without it ~1 boot in 3 hangs calibrating the TSC; tsc=reliable and
    cryptomgr.notests save ~1 s; panic=-1 + QEMU's -no-reboot turn a panic into QEMU's exit;
    i8042.* skip probing a PS/2 controller microvm lacks. Not used: acpi=off (hangs microvm) and
    noapic (breaks its poweroff); rtc=off on the machine costs two 1 s RTC timeouts.
    """
    parts = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "reboot=t",
        "cryptomgr.notests",
        "tsc=reliable",
        "i8042.noaux",
        "i8042.nokbd",
        f"isle.rootfs={fstype}",
    ]
    if tsc_khz:
        parts.insert(3, f"tsc_early_khz={tsc_khz}")
    if net:
        parts.append("isle.net=1")
    if shares:  # the init loads fuse + virtiofs only then
        parts.append("isle.shares=1")
    if slots != EXEC_SLOTS:  # the init waits for this many exec slots' ports
        parts.append(f"isle.slots={int(slots)}")
    if upper:  # the overlay upper is /dev/vdb (ext4), not a tmpfs
        parts.append("isle.upper=1")
    if balloon:  # the init loads virtio_balloon only then
        parts.append("isle.balloon=1")
    if pod:  # virtio_pci loaded; pciehp handles the slot (microvm's ACPI grants no hotplug: _OSC)
        parts += ["isle.pci=1", "pcie_ports=native"]
    return " ".join(parts)


def short_dir(prefix: str = "isle-vm-") -> str:
    """A private directory with a short path (unix socket paths must stay under 108 bytes)."""
    base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def machine_config(
    boot: Boot,
    rundir: str,
    *,
    stdout: str,
    stderr: str,
    stdin_sock: bool = False,
    memory_backend: MemoryBackend | None = None,
    incoming: str = "",
    name: str = "isle",
    fdsets: tuple[int, ...] = (),
    tap: str = "",
    mac: str = "",
    shares: tuple[FsShare, ...] = (),
    tty_sock: bool = False,
    upper: str = "",
    balloon: bool = False,
) -> MachineConfig:
    """The MachineConfig of an isle microVM (pure: paths in, data out).

    The terminal is a virtconsole (the guest's /dev/hvc0, a real tty there; host end
    <rundir>/tty.sock), always present so every VM has one layout: the process's when it has a
    terminal (tty_sock), else free for one `exec -t` at a time. With boot.upper, upper is the
    writable layer's file (drive 'upper': the guest's /dev/vdb). balloon: free-page reporting
    (an idle guest's freed RAM goes back to the host); not in a template's layout, so a cold
    boot's own (vm.config.MachineConfig.balloon says why)."""
    if boot.upper and not upper:
        raise VMError("a VM whose writable layer is a disk (Boot.upper) needs that disk's file")
    if shares and memory_backend is None:  # vhost-user needs guest RAM QEMU can hand over
        memory_backend = MemoryBackend(path="", share=True)
    ports = [
        SerialPort(
            name="org.isle.ctl",
            nr=1,
            chardev=Chardev(backend="socket", path=os.path.join(rundir, "ctl.sock")),
        ),
        SerialPort(
            name="org.isle.stdout",
            nr=2,
            chardev=Chardev(backend="file", path=stdout) if stdout else Chardev(backend="null"),
        ),
        SerialPort(
            name="org.isle.stderr",
            nr=3,
            chardev=Chardev(backend="file", path=stderr) if stderr else Chardev(backend="null"),
        ),
    ]
    # always present so cold boots, templates and clones share one device layout
    ports.append(
        SerialPort(
            name="org.isle.stdin",
            nr=4,
            chardev=Chardev(backend="socket", path=os.path.join(rundir, "in.sock"))
            if stdin_sock
            else Chardev(backend="null"),
        )
    )
    # exec slots: out/err/in ports per concurrent `exec`; the exec caller uses their sockets
    for i in range(1, boot.slots + 1):
        for k, (suffix, tag) in enumerate((("out", "o"), ("err", "e"), ("in", "i"))):
            ports.append(
                SerialPort(
                    name=f"org.isle.x{i}.{suffix}",
                    nr=5 + 3 * (i - 1) + k,
                    chardev=Chardev(backend="socket", path=os.path.join(rundir, f"x{i}{tag}.sock")),
                )
            )
    # one virtconsole only: a guest with several (hvc0, hvc1, ...) ran out of memory at boot in
    # ~4 of 10 TCG boots (128 MiB); so one terminal at a time: the process's or one exec's
    ports.append(SerialPort(name=TTY_PORT, nr=5 + 3 * boot.slots, console=True,
                            chardev=Chardev(backend="socket",
                                            path=os.path.join(rundir, "tty.sock"))))
    return MachineConfig(
        name=name,
        machine="microvm",
        accel=boot.accel,
        vcpus=boot.vcpus,
        memory_mib=boot.memory_mib,
        kernel=boot.kernel,
        initrd=boot.initrd,
        cmdline=cmdline(
            boot.fstype,
            _accel.host_tsc_khz() if boot.accel == "tcg" else None,
            net=bool(boot.net),
            shares=bool(shares) or boot.pod,
            slots=boot.slots,
            upper=boot.upper,
            balloon=balloon,
            pod=boot.pod,
        ),
        # a template has no tap of its own: QEMU makes a throwaway one (the tap backend's offload
        # features must match the clones' or the migration stream is refused)
        nics=(Nic(id="net0", kind=boot.net, ifname=tap, mac=mac),) if boot.net else (),
        drives=(Drive(id="image", path=boot.rootdisk, readonly=True),)
        + ((Drive(id="upper", path=upper),) if boot.upper else ()),
        serial_ports=tuple(ports),
        console=Chardev(backend="file", path=os.path.join(rundir, "console.log"), append=False),
        qmp_socket=os.path.join(rundir, "qmp.sock"),
        memory_backend=memory_backend,
        incoming=incoming,
        pidfile=os.path.join(rundir, "qemu.pid"),
        fdsets=fdsets,
        shares=shares,
        balloon=balloon,
        hotplug_slot=boot.pod,
    )


def host_end(fd: int) -> tuple[str, tuple[int, ...]]:
    """(path QEMU opens, fd sets to pass) so guest output lands on our fd as if we wrote it.

    Always an fd set: QEMU, in its jail, has no /proc to reopen anything through. The fd must be
    write-only (QEMU dups it only for the access mode it asks): see writable().
    """
    import fcntl
    import stat as _stat

    if _stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise VMError(f"fd {fd} is a socket: QEMU cannot open it; relay it through a pipe")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_WRONLY:
        raise VMError(f"fd {fd} is not write-only: reopen it with writable() first")
    return f"/dev/fdset/{fd}", (fd,)


def writable(fd: int) -> int:
    """A new write-only fd for what fd is (a write-only regular file: a dup, sharing its offset as
    runc's children do; a pipe, tty or other file: reopened through /proc/self/fd, appending, as
    QEMU used to reopen it itself)."""
    import fcntl
    import stat as _stat

    st = os.fstat(fd)
    if _stat.S_ISREG(st.st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        return os.dup(fd)
    return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY)


class MicroVM:
    """One QEMU process and its control channel; always call close() (or use ``with``)."""

    def __init__(
        self,
        cfg: MachineConfig,
        rundir: str,
        *,
        pass_fds: tuple[int, ...] = (),
        die_with_parent: bool = True,
        own_rundir: bool = True,
        cgroup_files: tuple[str, ...] = (),
        groups: tuple[int, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.rundir = rundir
        self.own_rundir = own_rundir
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: socket.socket | None = None
        self._buf = b""
        self._pass_fds = pass_fds
        self._die_with_parent = die_with_parent
        self._stdin_sock: socket.socket | None = None
        self._tty_sock: socket.socket | None = None
        self._tty_out: Any = None
        self._fsd: list[subprocess.Popen[bytes]] = []  # one virtiofsd per cfg.shares entry
        #: the container's cgroup (its procs files): QEMU and virtiofsd join it before exec
        self.cgroup_files = cgroup_files
        self._groups = groups  # supplementary groups of QEMU's uid (the template group)
        self.uid = 0  # QEMU's own uid (jail.lease), once spawned
        #: the guest reported the process's exit ('exit N' read): close() need not wait
        self.reported_exit = False

    def __enter__(self) -> MicroVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- process -------------------------------------------------------------------------------
    def spawn(self) -> None:
        """Start QEMU jailed (vm.jail): its own uid, no capabilities, seccomp, own mount namespace
        holding only its files, in the container's cgroup. Disks and taps go by fd."""
        if not proc.which("qemu-system-x86_64"):
            raise VMError("qemu-system-x86_64 not found: install Debian's qemu-system-x86")
        from isle.vm import jail

        cfg, fds = jail.drives_by_fd(self.cfg)
        try:
            nics = []
            for n in cfg.nics:
                if n.kind == "tap" and n.fd < 0:
                    fd = jail.open_tap(n.ifname)
                    fds.append(fd)
                    n = Nic(id=n.id, kind="tap", ifname=n.ifname, mac=n.mac, fd=fd)
                nics.append(n)
            cfg = replace(cfg, nics=tuple(nics))
            j = jail.plan(cfg, self.rundir, cgroup_files=self.cgroup_files, groups=self._groups,
                          pdeathsig=self._die_with_parent) if os.geteuid() == 0 else None
            try:  # (not root: QEMU runs as the caller already, with -sandbox and no_new_privs)
                self.uid = j.uid if j else os.getuid()
                if cfg.shares:
                    from isle.vm import virtiofs

                    for sh in cfg.shares:  # QEMU connects to each socket as it starts
                        self._fsd.append(virtiofs.start(
                            sh, os.path.join(self.rundir, "virtiofsd.log"),
                            cgroup_files=self.cgroup_files))
                        if j:
                            os.chown(sh.socket, j.uid, j.gid)
                log = os.open(os.path.join(self.rundir, "qemu.log"),
                              os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600)
                try:
                    self.proc = _spawn_or_say_why(
                        self.rundir,
                        qemu_argv(cfg),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=tuple(self._pass_fds) + tuple(fds) + ((j.lease_fd,) if j else ()),
                        start_new_session=True,
                        env=jail.ENV,
                        preexec_fn=jail.child(j) if j else _unjailed(self._die_with_parent),
                    )
                finally:
                    os.close(log)
            finally:
                if j:
                    j.release()
        finally:
            for fd in fds:
                os.close(fd)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def diagnose(self) -> str:
        """Why a VM went wrong, from QEMU's own log and the tail of the kernel console."""
        bits = []
        if self.proc is not None and self.proc.poll() is not None:
            rc = self.proc.returncode
            bits.append(f"QEMU killed by signal {-rc}" if rc < 0 else f"QEMU exited {rc}")
        for name, n in (("qemu.log", 3), ("console.log", 4)):
            tail = _tail(os.path.join(self.rundir, name)).strip().splitlines()[-n:]
            if tail:
                bits.append(f"{name}: " + " | ".join(t.strip() for t in tail))
        return "; ".join(bits)

    # -- control channel -----------------------------------------------------------------------
    def connect(self, timeout: float = 30.0) -> None:
        path = os.path.join(self.rundir, "ctl.sock")
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                s.connect(path)
                self.ctl = s
                return
            except OSError:
                s.close()
            if not self.alive():
                raise VMError(f"QEMU ended before its control socket opened: {self.diagnose()}")
            if time.monotonic() > deadline:
                raise VMError(f"control socket {path} not ready after {timeout:.0f}s")
            time.sleep(0.002)

    def feed_stdin(self, fd: int) -> None:
        """Copy fd to the guest's org.isle.stdin port in a thread; EOF reaches the guest."""
        import threading

        s = _connect_unix(os.path.join(self.rundir, "in.sock"), "stdin socket")

        def pump() -> None:
            # half-close on EOF: a full close could make QEMU drop data the guest has not read yet;
            # after SHUT_WR QEMU reads the rest, then sees EOF and the guest's read returns 0
            try:
                while chunk := os.read(fd, 65536):
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        self._stdin_sock = s

        threading.Thread(target=pump, name="isle-vm-stdin", daemon=True).start()

    def attach_tty(self, fd: int) -> None:
        """Relay the guest's terminal (tty.sock) and fd (the host pty's slave, raw) both ways,
        in two threads; the guest's tty does echo, line editing and ^C."""
        import threading

        s = _connect_unix(os.path.join(self.rundir, "tty.sock"), "terminal socket")
        src, dst = os.dup(fd), os.dup(fd)

        def to_guest() -> None:
            try:
                while chunk := os.read(src, 65536):
                    s.sendall(chunk)
            except OSError:
                pass
            finally:
                os.close(src)

        def from_guest() -> None:
            try:
                while chunk := s.recv(65536):
                    while chunk:
                        chunk = chunk[os.write(dst, chunk):]
            except OSError:
                pass
            finally:
                os.close(dst)

        self._tty_sock = s
        for fn in (to_guest, from_guest):
            t = threading.Thread(target=fn, name="isle-vm-tty", daemon=True)
            t.start()
        self._tty_out = t  # joined by close(): the guest's last output reaches the pty

    def send(self, line: bytes) -> None:
        assert self.ctl is not None
        try:
            self.ctl.sendall(line + b"\n")
        except OSError as exc:
            raise VMError(f"control channel to the guest broke: {exc}; {self.diagnose()}") from exc

    def send_job(self, script: str) -> None:
        lines = script.rstrip("\n").split("\n")
        self.send(f"job {len(lines)}\n".encode() + "\n".join(lines).encode())

    def signal(self, signum: int, all: bool = False) -> None:
        """Signal the job's process (all=True: every process in the guest but its init)."""
        self.send(f"{'killall' if all else 'kill'} {int(signum)}".encode())

    def has_line(self) -> bool:
        """Whether a whole control line is buffered already (readline returns it at once): a
        select on the control socket does not see it (a clone's replayed 'ready', two lines
        received in one read)."""
        return b"\n" in self._buf

    def readline(self, timeout: float | None) -> str:
        """Next control line from the guest; VMError on EOF (QEMU gone) or timeout."""
        assert self.ctl is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise VMError(f"guest did not answer within {timeout:.0f}s; {self.diagnose()}")
            r, _, _ = select.select([self.ctl], [], [], left if left is None else min(left, 1.0))
            if not r:
                continue
            try:
                chunk = self.ctl.recv(4096)
            except OSError:  # ECONNRESET: QEMU died with unread data queued; an EOF as well
                chunk = b""
            if not chunk:
                if self.proc is not None:
                    try:
                        self.proc.wait(2)
                    except subprocess.TimeoutExpired:
                        pass
                raise VMError(f"the guest went away without reporting: {self.diagnose()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode(errors="replace").strip()
        if text.startswith("exit "):
            self.reported_exit = True
        return text

    def expect(self, word: str, timeout: float | None) -> str:
        """Read until a line starting with word; 'error ...' from the guest raises VMError."""
        while True:
            line = self.readline(timeout)
            if line.startswith("error"):
                raise VMError(f"guest init failed: {line[6:]}; {self.diagnose()}")
            if line.split(" ", 1)[0] == word:
                return line

    def wait_exit(self, timeout: float | None = None) -> int:
        line = self.expect("exit", timeout)
        try:
            return int(line.split()[1])
        except (IndexError, ValueError) as exc:
            raise VMError(f"bad exit report from the guest: {line!r}") from exc

    # -- teardown ------------------------------------------------------------------------------
    def close(self, grace: float = 3.0) -> None:
        """Wait briefly for QEMU to power off, else kill it; remove the run directory.

        Once the guest reported the process's exit there is nothing left to wait for: its output
        went through the ports before (a port write returns once QEMU took the data), the job
        synced any disk, and the rest of its power-off is seen by no one; QEMU is killed at once
        (a guest's poweroff under TCG costs tens of ms on every run)."""
        if self.reported_exit:
            grace = 0.0
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self._stdin_sock is not None:
            self._stdin_sock.close()
            self._stdin_sock = None
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                _wait(p, grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if self._tty_sock is not None:
            if self._tty_out is not None:
                self._tty_out.join(2)  # QEMU gone: its end closed, the relay drains and ends
            self._tty_sock.close()
            self._tty_sock = None
        if self._fsd:
            from isle.vm import virtiofs

            for d in self._fsd:
                virtiofs.stop(d)
            self._fsd.clear()
        if self.own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)


def _spawn_or_say_why(rundir: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """proc.spawn, with a failed jail set-up (subprocess: 'Exception occurred in preexec_fn')
    turned into a VMError naming what failed (the child wrote it to QEMU's log)."""
    try:
        return proc.spawn(argv, **kw)
    except subprocess.SubprocessError as exc:
        why = _tail(os.path.join(rundir, "qemu.log")).strip().splitlines()[-1:]
        raise VMError(why[0] if why else f"QEMU could not be started: {exc}") from exc


def _unjailed(pdeathsig: bool) -> Any:
    """preexec_fn of a QEMU started by a non-root caller: it is that user's already."""
    from isle.sys.libc import PR_SET_NO_NEW_PRIVS, LinuxSyscalls

    sc = LinuxSyscalls()

    def setup() -> None:
        if pdeathsig:
            sc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        sc.prctl(PR_SET_NO_NEW_PRIVS, 1)

    return setup


def _tail(path: str, size: int = 2000) -> str:
    """The end of a regular file in a directory QEMU's uid owns: never a link QEMU put there
    (O_NOFOLLOW), never a FIFO it could block us on (O_NONBLOCK + S_ISREG)."""
    import stat as _stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(fd, max(0, st.st_size - size), os.SEEK_SET)
        return os.read(fd, size).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _wait(p: subprocess.Popen[bytes], timeout: float) -> int:
    """Popen.wait(timeout) without its sleep loop (it polls at up to 50 ms steps): a pidfd."""
    import select

    try:
        fd = os.pidfd_open(p.pid)
    except OSError:  # already reaped, or a kernel without pidfd
        return p.wait(timeout)
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(p.args, timeout)
    finally:
        os.close(fd)
    return p.wait()


def _connect_unix(path: str, what: str, tries: int = 5000) -> socket.socket:
    """A stream socket connected to QEMU's chardev socket at path, retried while QEMU has not
    opened it yet (~10 s); VMError naming what when it never does."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    for _ in range(tries):
        try:
            s.connect(path)
            return s
        except OSError:
            time.sleep(0.002)
    s.close()
    raise VMError(f"{what} {path} never opened")
