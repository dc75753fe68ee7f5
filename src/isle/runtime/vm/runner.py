"""The VM runtime's work: provision a bundle, run it in the foreground or under a detached monitor.

The monitor (one small process per VM, like conmon's child) is QEMU's parent: it holds the control
channel, starts the job on `start`, forwards `kill`, records the exit code in <root>/<id>/exit and
exits with that code, so a subreaper (conmon) sees the program's real status.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any

from isle.config import Settings
from isle.errors import ConfigError, IsleError, VMError
from isle.oci import runtime_spec
from isle.runtime.vm import spec as vmspec
from isle.runtime.vm import state as st
from isle.vm import accel, disk, initramfs, kernel
from isle.vm import job as vmjob
from isle.vm.microvm import Boot, MicroVM, host_end, machine_config, short_dir

__all__ = [
    "Prepared",
    "prepare",
    "boot_of",
    "run",
    "create",
    "start",
    "kill",
    "delete",
    "pause",
    "resume",
    "READY_TIMEOUT",
    "guest_ps",
    "guest_stats",
    "qemu_pss",
    "console",
]

READY_TIMEOUT = float(os.environ.get("ISLE_VM_READY_TIMEOUT", "90"))
FAILED = 255  # exit code recorded when the VM itself failed (QEMU died, guest vanished)


@dataclass(slots=True)
class Prepared:
    cfg: dict[str, Any]
    boot: Boot
    script: str
    template: bool
    stdin: bool = False
    #: the caller's network namespace the guest takes over (runtime.vm.network.Plan)
    net: Any = None
    #: process.terminal: the process runs on a guest tty relayed to tty_fd (a pty slave, raw)
    terminal: bool = False
    tty_fd: int = -1


def stdin_wanted(fd: int = 0) -> bool:
    """Forward stdin when it is a pipe, file or socket (never a tty or /dev/null)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return (
        stat.S_ISFIFO(mode)
        or stat.S_ISSOCK(mode)
        or (stat.S_ISREG(mode) and os.fstat(fd).st_size > 0)
    )


def prepare(bundle: str, settings: Settings, *, stdin: bool = False) -> Prepared:
    """Validate config.json and make sure kernel, initramfs and image disk are cached."""
    bundle = os.path.abspath(bundle)
    cfg = runtime_spec.load(os.path.join(bundle, "config.json"))
    terminal = bool((cfg.get("process") or {}).get("terminal"))
    stdin = stdin and not terminal  # a terminal is the process's stdin
    job = vmspec.to_job(cfg, stdin=stdin)
    if terminal:
        from dataclasses import replace as _replace

        job = _replace(job, terminal=True)
    boot = boot_of(cfg, bundle, settings)
    plan = _net_plan(cfg) if not vmspec.net_of(cfg)[0] else None
    if plan is not None:
        from dataclasses import replace

        job = replace(job, net=plan.guest)
    ann = cfg.get("annotations") or {}
    template = ann.get("org.isle.vm.template", os.environ.get("ISLE_VM_TEMPLATE", "")) in (
        "1",
        "true",
    ) and not vmspec.shares_of(cfg) and not terminal  # (devices a template does not have)
    return Prepared(cfg=cfg, boot=boot, script=vmjob.render(job), template=template, stdin=stdin,
                    net=plan, terminal=terminal)


def boot_of(cfg: dict[str, Any], bundle: str, settings: Settings) -> Boot:
    """What the VM for cfg boots (kernel, initramfs, image disk, size): a template's identity."""
    vcpus, mem = vmspec.vm_size(cfg)
    ann = cfg.get("annotations") or {}
    fstype = ann.get("org.isle.vm.rootfs", "erofs")
    k = kernel.find(settings.cache)
    return Boot(
        kernel=k.boot_image,
        initrd=initramfs.build(k, settings.cache),
        rootdisk=disk.rootfs_image(vmspec.rootfs_path(cfg, bundle), settings.cache, fstype,
                                   ann.get("org.isle.vm.rootfs-key", "")),
        fstype=fstype,
        vcpus=vcpus,
        memory_mib=mem,
        accel=accel.detect()[0],
        # an engine-made tap (annotations), else a NIC when the network namespace config.json
        # names has an interface to take over (the caller's veth, as Kata): a template's key
        net=vmspec.net_of(cfg)[0] or ("tap" if _net_plan(cfg) is not None else ""),
    )


_plans: dict[str, Any] = {}


def _net_plan(cfg: dict[str, Any]) -> Any:
    """runtime.vm.network.Plan of the network namespace config.json names (None: no namespace
    path, or nothing in it to give a guest); read once per process (boot_of and prepare)."""
    from isle.runtime.vm import network

    path = network.netns_of(cfg)
    if not path:
        return None
    if path not in _plans:
        _plans[path] = network.discover(path)
    return _plans[path]


def _reopenable(fd: int) -> int:
    """A write-only fd QEMU can take as an fd set (microvm.writable); a socket (QEMU cannot open
    one) gets a pipe and a relay."""
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        from isle.vm.microvm import writable

        return writable(fd)
    import threading

    r, w = os.pipe()
    dst = os.dup(fd)

    def relay() -> None:
        try:
            while data := os.read(r, 65536):
                while data:
                    data = data[os.write(dst, data) :]
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(dst)

    t = threading.Thread(target=relay, name=f"isle-vm-relay-{fd}", daemon=True)
    t.start()
    _relays.append(t)
    return w


_relays: list[Any] = []


def _drain_relays(timeout: float = 5.0) -> None:
    """Wait for socket relays to pass on the last output (they end when QEMU's pipe end closes)."""
    for t in _relays:
        t.join(timeout)
    _relays.clear()


def launch(
    p: Prepared,
    settings: Settings,
    out_fd: int,
    err_fd: int,
    *,
    in_fd: int = 0,
    die_with_parent: bool = True,
    cgroup_files: tuple[str, ...] = (),
) -> MicroVM:
    """Start QEMU (cold, or a template's clone) on our stdout/stderr; connected, not yet ready."""
    out, err = _reopenable(out_fd), _reopenable(err_fd)
    tapfd = -1
    try:
        (opath, ofds), (epath, efds) = host_end(out), host_end(err)
        _, tap, mac, _ = vmspec.net_of(p.cfg)
        if p.net is not None:
            from isle.runtime.vm import network
            from isle.vm import jail

            tap, mac = network.TAP, p.net.guest.mac
            tapfd = network.connect(p.net)
            jail.PREOPENED[tap] = tapfd  # QEMU gets it by fd: the tap is in another namespace
        if p.template:
            from isle.vm import snapshot

            return snapshot.restore(
                p.boot,
                settings.cache,
                stdout=opath,
                stderr=epath,
                pass_fds=(out, err),
                die_with_parent=die_with_parent,
                stdin_fd=in_fd if p.stdin else None,
                fdsets=ofds + efds,
                tap=tap,
                mac=mac,
                cgroup_files=cgroup_files,
            )
        rundir = short_dir()
        from isle.vm.config import FsShare

        shares = tuple(
            FsShare(tag=tag, socket=os.path.join(rundir, f"{tag}.sock"), source=src, readonly=ro)
            for tag, src, _, ro in vmspec.shares_of(p.cfg)
        )
        cfg = machine_config(
            p.boot,
            rundir,
            stdout=opath,
            stderr=epath,
            stdin_sock=p.stdin,
            fdsets=ofds + efds,
            tap=tap,
            mac=mac,
            shares=shares,
            tty_sock=p.terminal,
        )
        vm = MicroVM(cfg, rundir, pass_fds=(out, err), die_with_parent=die_with_parent,
                     cgroup_files=cgroup_files)
        try:
            vm.spawn()
            vm.connect()
            if p.stdin:
                vm.feed_stdin(in_fd)
            if p.terminal:
                vm.attach_tty(p.tty_fd)
        except BaseException:
            vm.close(grace=0)
            raise
        return vm
    finally:
        os.close(out)
        os.close(err)
        if tapfd >= 0:
            from isle.vm import jail

            jail.PREOPENED.pop(network.TAP, None)
            os.close(tapfd)  # QEMU holds the tap now; it goes when QEMU does


def make_cgroup(cid: str, p: Prepared) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """The container's host cgroup (linux.cgroupsPath, default /isle/<id>), made and limited
    (spec.host_resources) as isle-runtime makes a container's: (its state, the cgroup.procs files
    QEMU writes itself into before exec). Not as a non-root caller (QEMU is not jailed then)."""
    if os.geteuid() != 0:
        return None, ()
    from isle.runtime.cgroup import manager, resources_with_defaults

    lx = p.cfg.get("linux") or {}
    res = resources_with_defaults(
        vmspec.host_resources(p.cfg, p.boot.vcpus, p.boot.memory_mib,
                              shares=len(vmspec.shares_of(p.cfg)), kvm=p.boot.accel == "kvm"),
        lx.get("devices"))
    cg = manager(lx.get("cgroupsPath"), cid)
    cg.drop_unused_unified(res)
    cg.create()
    try:
        cg.set(res)
    except BaseException:
        cg.destroy()
        raise
    return cg.to_state(), procs_files(cg)


def procs_files(cg: Any) -> tuple[str, ...]:
    """The cgroup.procs files a process writes "0" to, to join cg (every v1 hierarchy, and the
    unified one where it is joined)."""
    if hasattr(cg, "dirs"):  # v1 or hybrid
        files = [d + "/cgroup.procs" for d in cg.dirs()]
        if cg.unified is not None:
            files.append(cg.unified.dir + "/cgroup.procs")
    else:
        files = [cg.dir + "/cgroup.procs"]
    return tuple(dict.fromkeys(files))


def drop_cgroup(state: dict[str, Any] | None) -> None:
    """Remove the container's host cgroup (QEMU and virtiofsd gone first)."""
    if not state:
        return
    import time

    from isle.runtime.cgroup import from_state

    cg = from_state(state)
    deadline = time.monotonic() + 15  # a QEMU (or virtiofsd) that just quit may still be leaving
    while True:
        try:
            cg.destroy()  # every hierarchy each time; a busy one is retried
            return
        except (IsleError, OSError) as exc:
            if time.monotonic() > deadline:  # said, never silently left behind
                print(f"isle-vm-runtime: {exc}", file=sys.stderr)
                return
            time.sleep(0.05)


def _net_state(s: st.State, p: Prepared) -> None:
    if p.net is not None:
        s.netns, s.veth = p.net.netns, p.net.veth


def _unplug(s: st.State) -> None:
    """Undo what the runtime added to the caller's network namespace (QEMU gone: its tap too)."""
    if s.netns:
        from isle.runtime.vm import network

        network.disconnect(s.netns, s.veth)


def console(path: str) -> int:
    """A pty whose master goes to the --console-socket at path (as runc sends it: SCM_RIGHTS,
    the slave's name as data); its slave, raw (the guest's tty does the line discipline)."""
    import tty

    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        tty.setraw(slave)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            socket.send_fds(sock, [name.encode()], [master])
        finally:
            sock.close()
    except OSError as exc:
        os.close(slave)
        raise ConfigError("--console-socket", f"{path}: {exc.strerror or exc}") from exc
    finally:
        os.close(master)
    return slave


def _winsize(fd: int) -> tuple[int, int]:
    import fcntl
    import struct
    import termios

    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    except OSError:
        return 0, 0
    return rows, cols


def _write_pid(pid_file: str | None, pid: int) -> None:
    if pid_file:
        from isle.sys.fs import atomic_write

        atomic_write(pid_file, str(pid).encode(), durable=False)


def run(cid: str, bundle: str, root: str, settings: Settings, pid_file: str | None = None,
        console_socket: str | None = None) -> int:
    """`run` in the foreground: boot, run the job, stream stdio, return its exit code, clean up."""
    d = st.create_dir(root, cid)
    vm: MicroVM | None = None
    s: st.State | None = None
    restore: Any = None
    p: Prepared | None = None
    try:
        p = prepare(bundle, settings, stdin=stdin_wanted(0))
        if p.terminal:
            if console_socket:
                p.tty_fd = console(console_socket)
            elif os.isatty(0):  # runc's way without a socket: our own terminal, raw meanwhile
                import termios
                import tty

                restore = termios.tcgetattr(0)
                tty.setraw(0)
                p.tty_fd = os.dup(0)
            else:
                raise ConfigError("process.terminal",
                                  "a terminal needs --console-socket or a tty on stdin")
        s = st.State(
            id=cid,
            bundle=os.path.abspath(bundle),
            pid=os.getpid(),
            annotations=p.cfg.get("annotations") or {},
        )
        _net_state(s, p)
        s.cgroup, files = make_cgroup(cid, p)
        st.save(root, s)
        vm = launch(p, settings, 1, 2, cgroup_files=files)
        vm.send_job(p.script)
        lsock = _listen(vm)
        s.qemu_pid, s.rundir = vm.pid, vm.rundir
        s.pid_start, s.qemu_start = st.starttime(s.pid), st.starttime(vm.pid)
        st.save(root, s)
        _write_pid(pid_file, os.getpid())
        try:
            return _serve(root, s, p, vm, lsock, job_sent=True, forward_signals=True)
        finally:
            lsock.close()
    finally:
        if vm is not None:
            vm.close()
        _drain_relays()
        if p is not None and p.tty_fd >= 0:
            os.close(p.tty_fd)
        if restore is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, restore)
        if s is not None:
            _unplug(s)
        drop_cgroup(s.cgroup if s is not None else None)
        st.remove(root, cid)
        del d


# -- detached: create / start / kill -------------------------------------------------------------
def create(
    cid: str, bundle: str, root: str, settings: Settings, pid_file: str | None = None,
    console_socket: str | None = None,
) -> None:
    """Boot the VM to 'ready' under a detached monitor; the job waits for `start`."""
    d = st.create_dir(root, cid)
    try:
        p = prepare(bundle, settings, stdin=stdin_wanted(0))
        if p.terminal:
            if not console_socket:
                raise ConfigError("process.terminal",
                                  "a detached container with a terminal needs --console-socket")
            p.tty_fd = console(console_socket)
    except BaseException:
        st.remove(root, cid)
        raise
    s = st.State(id=cid, bundle=os.path.abspath(bundle), annotations=p.cfg.get("annotations") or {})
    _net_state(s, p)
    try:
        s.cgroup, files = make_cgroup(cid, p)
    except BaseException:
        st.remove(root, cid)
        raise
    st.save(root, s)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # intermediate: new session, then the monitor, so it is nobody's child but init's
        os.close(r)
        try:
            os.setsid()
            if os.fork() == 0:
                code = _monitor(root, s, p, settings, w, files)
                os._exit(code)
        finally:
            os._exit(0)
    os.close(w)
    if p.tty_fd >= 0:
        os.close(p.tty_fd)  # the monitor has its copy
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace").strip()
    if not msg.startswith("ok"):
        drop_cgroup(s.cgroup)
        st.remove(root, cid)
        raise VMError(msg or "the VM monitor died before the guest was ready")
    _write_pid(pid_file, int(msg.split()[1]))
    del d
    try:  # OCI hooks run on the host, as isle-runtime runs them; a failing one undoes the create
        _hooks_save(root, cid, p.cfg.get("hooks"))
        for kind in ("prestart", "createRuntime"):
            _run_hooks(root, cid, kind)
    except BaseException:
        delete(cid, root, force=True)
        raise


def _hooks_save(root: str, cid: str, hooks: Any) -> None:
    """The hooks as they were at create (later edits of config.json must not count)."""
    if hooks:
        import json

        from isle.sys.fs import atomic_write

        atomic_write(os.path.join(root, cid, "hooks.json"), json.dumps(hooks).encode(),
                     durable=False)  # 0600, as every state file


def _run_hooks(root: str, cid: str, kind: str, warn_only: bool = False) -> None:
    import json

    try:
        with open(os.path.join(root, cid, "hooks.json")) as f:
            hooks = json.load(f)
    except FileNotFoundError:
        return
    if not (hooks or {}).get(kind):
        return
    import sys

    from isle.runtime.hooks import run_hooks

    for w in run_hooks(hooks, kind, st.load(root, cid).oci(), warn_only=warn_only):
        sys.stderr.write(f"isle-vm-runtime: warning: {w}\n")


def _monitor(root: str, s: st.State, p: Prepared, settings: Settings, ready_w: int,
             cgroup_files: tuple[str, ...] = ()) -> int:
    """The detached monitor's life; returns the exit code for os._exit."""
    vm: MicroVM | None = None
    code = FAILED
    sdir = os.path.join(root, s.id)
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        stdin = os.dup(0)
        os.dup2(devnull, 0)
        vm = launch(p, settings, 1, 2, in_fd=stdin, cgroup_files=cgroup_files)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        vm.expect("ready", READY_TIMEOUT)
        lsock = _listen(vm)
        s.status, s.pid, s.qemu_pid, s.rundir = "created", os.getpid(), vm.pid, vm.rundir
        s.pid_start, s.qemu_start = st.starttime(s.pid), st.starttime(vm.pid)
        st.save(root, s)
        os.write(ready_w, f"ok {os.getpid()}\n".encode())
        os.close(ready_w)
        ready_w = -1
        code = _serve(root, s, p, vm, lsock)
    except IsleError as exc:
        if ready_w >= 0:
            os.write(ready_w, f"error {exc}\n".encode())
        else:
            _note(sdir, "error", str(exc))
    except BaseException as exc:  # the monitor must never die silently
        if ready_w >= 0:
            os.write(ready_w, f"error monitor: {exc!r}\n".encode())
    finally:
        if vm is not None:
            vm.close()
        _drain_relays()
        _unplug(s)
        drop_cgroup(s.cgroup)
        if os.path.isdir(sdir):
            _note(sdir, "exit", str(code))
    return code


def _note(sdir: str, name: str, text: str) -> None:
    from isle.sys.fs import atomic_write

    try:
        atomic_write(os.path.join(sdir, name), text.encode(), durable=False)
    except OSError:
        pass


def _listen(vm: MicroVM) -> socket.socket:
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    lsock.bind(os.path.join(vm.rundir, "monitor.sock"))
    lsock.listen(8)
    return lsock


def _recvline(conn: socket.socket, limit: int = 1 << 20) -> str:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


def _serve(
    root: str,
    s: st.State,
    p: Prepared,
    vm: MicroVM,
    lsock: socket.socket,
    *,
    job_sent: bool = False,
    forward_signals: bool = False,
) -> int:
    """The monitor loop: guest control lines, and start/kill/exec requests on monitor.sock."""
    from isle.vm.microvm import EXEC_SLOTS

    assert vm.ctl is not None
    started = False
    waiting: list[socket.socket] = []  # `start` callers answered once the guest says started
    slots: dict[int, socket.socket | None] = {i: None for i in range(1, EXEC_SLOTS + 1)}
    busy: set[int] = set()
    tty_slot = 0  # the exec slot the VM's terminal (hvc0) is lent to
    asking: dict[str, list[socket.socket]] = {"ps": [], "stats": []}  # guest agent queries
    stop = {"sig": 0}

    def on_term(signum: int, _f: Any) -> None:
        if forward_signals:
            try:
                vm.signal(signum)
            except VMError:
                pass
        else:
            stop["sig"] = signum

    for sig in (signal.SIGTERM,) + ((signal.SIGINT, signal.SIGHUP) if forward_signals else ()):
        signal.signal(sig, on_term)
    import time

    deadline = time.monotonic() + READY_TIMEOUT
    size = (0, 0)
    while True:
        if stop["sig"]:
            return 128 + stop["sig"]
        if started and p.tty_fd >= 0 and (now := _winsize(p.tty_fd)) != size:
            size = now  # the caller resized the pty (conmon, `exec -t`'s resize): tell the guest
            if now[0] and now[1]:
                vm.send(f"winsz 0 {now[0]} {now[1]}".encode())
        if job_sent and not started and time.monotonic() > deadline:
            raise VMError(
                f"the guest did not start the process within {READY_TIMEOUT:.0f}s; {vm.diagnose()}"
            )
        try:
            r, _, _ = select.select([vm.ctl, lsock], [], [], 0.2 if p.tty_fd >= 0 else 1.0)
        except InterruptedError:
            continue
        if vm.ctl in r or b"\n" in vm._buf:
            line = vm.readline(5)
            if line == "started":
                started = True
                s.status = "running"
                st.save(root, s)
                for c in waiting:
                    c.sendall(b"ok\n")
                    c.close()
                waiting.clear()
            elif line.startswith("exit"):
                for pending in slots.values():
                    if pending is not None:
                        pending.close()
                return int(line.split()[1])
            elif line.startswith("xexit"):
                _, slot, code = line.split()
                caller = slots.get(int(slot))
                slots[int(slot)] = None
                busy.discard(int(slot))
                if tty_slot == int(slot):
                    tty_slot = 0
                if caller is not None:
                    try:
                        caller.sendall(f"exit {code}\n".encode())
                    except OSError:
                        pass
                    caller.close()
            elif line.split(" ", 1)[0] in asking:  # the guest agent's answer: to the askers
                word, _, rest = line.partition(" ")
                for c in asking[word]:
                    try:
                        c.sendall(f"ok {rest}\n".encode())
                    except OSError:
                        pass
                    c.close()
                asking[word].clear()
            elif line.startswith("error"):
                raise VMError(f"guest init failed: {line[6:]}")
        if lsock in r:
            conn, _ = lsock.accept()
            conn.settimeout(5)
            try:
                cmd = conn.recv(4096).decode().split()
            except OSError:
                conn.close()
                continue
            if cmd[:1] == ["alloc"]:
                free = [i for i in slots if i not in busy]
                if cmd[1:] == ["tty"] and started and free and (p.terminal or tty_slot):
                    conn.sendall(b"error the VM's terminal is taken (by the container's "
                                 + (b"process" if p.terminal else b"other exec -t") + b")\n")
                    conn.close()
                    continue
                if not started or not free:
                    conn.sendall(
                        b"error "
                        + (
                            b"all exec slots are busy"
                            if started
                            else b"the container's process has not started"
                        )
                        + b"\n"
                    )
                    conn.close()
                    continue
                i = free[0]
                try:
                    conn.sendall(f"slot {i}\n".encode())
                    req = _recvline(conn).split()
                except OSError:
                    conn.close()
                    continue
                if req[:2] != ["exec", str(i)] or len(req) != 3:
                    conn.close()
                    continue
                busy.add(i)
                slots[i] = conn
                if cmd[1:] == ["tty"]:
                    tty_slot = i
                vm.send(f"exec {i} {req[2]}".encode())
            elif cmd[:1] == ["start"]:
                if started or job_sent:  # (job_sent: a foreground run, or a second start)
                    conn.sendall(b"error already started\n")
                    conn.close()
                else:
                    vm.send_job(p.script)
                    job_sent = True
                    deadline = time.monotonic() + READY_TIMEOUT
                    waiting.append(conn)
            elif cmd[:1] in (["ps"], ["stats"]) and len(cmd) == 1:
                if not started:
                    conn.sendall(b"error the container's process has not started\n")
                    conn.close()
                else:
                    if not asking[cmd[0]]:
                        vm.send(cmd[0].encode())
                    asking[cmd[0]].append(conn)
            elif cmd[:1] == ["winsz"] and len(cmd) == 4 and all(x.isdigit() for x in cmd[1:]):
                # an exec's terminal resized: winsz SLOT ROWS COLS (the slot's tty is hvcSLOT)
                if tty_slot and int(cmd[1]) == tty_slot:
                    vm.send(f"winsz 0 {int(cmd[2])} {int(cmd[3])}".encode())
                conn.sendall(b"ok\n")
                conn.close()
            elif cmd[:1] == ["kill"] and len(cmd) in (2, 3):
                signum = int(cmd[1])
                conn.sendall(b"ok\n")
                conn.close()
                if started:
                    vm.signal(signum, all=cmd[2:] == ["all"])
                else:  # nothing runs yet: the VM itself is what a signal stops
                    return 128 + signum
            else:
                conn.sendall(b"error unknown command\n")
                conn.close()


def _ask(s: st.State, line: str, timeout: float = READY_TIMEOUT) -> str:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.path.join(s.rundir, "monitor.sock"))
        sock.sendall(line.encode() + b"\n")
        ans = sock.recv(4096).decode().strip()
    except OSError as exc:
        raise VMError(f"container {s.id}: its VM monitor does not answer ({exc})") from exc
    finally:
        sock.close()
    if not ans.startswith("ok"):
        raise VMError(f"container {s.id}: {ans.removeprefix('error ') or 'monitor went away'}")
    return ans[3:]


def _running(cid: str, root: str) -> st.State:
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status not in ("running", "paused"):
        raise InvalidState(f"container {cid} is {s.status}, not running")
    return s


def guest_ps(cid: str, root: str) -> list[list[str]]:
    """The container's processes as the guest sees them (for `top`): a header row (PID USER
    TIME COMMAND) then one row each; asked of the guest over the control channel."""
    import base64

    if _running(cid, root).status == "paused":
        from isle.errors import InvalidState

        raise InvalidState(f"container {cid} is paused: its guest cannot answer")
    text = base64.b64decode(_ask(_running(cid, root), "ps", timeout=30)).decode(errors="replace")
    return [ln.split(None, 3) for ln in text.splitlines() if ln.strip()]


def guest_stats(cid: str, root: str) -> dict[str, int]:
    """The guest's view for `stats`: memory used and total (bytes, MemTotal - MemAvailable),
    CPU time of all guest vCPUs outside idle (ns), the container's processes, and the PSS of
    QEMU on the host (what the VM really costs the host)."""
    s = _running(cid, root)
    out: dict[str, int] = {"qemu_pss": qemu_pss(s)}
    if s.status == "running":
        try:
            total, avail, ticks, pids = (int(x) for x in _ask(s, "stats", timeout=30).split())
        except ValueError as exc:
            raise VMError(f"container {cid}: a malformed stats answer from the guest") from exc
        out.update(memory_usage=(total - avail) << 10, memory_limit=total << 10,
                   cpu_ns=ticks * 10_000_000, pids=pids)  # USER_HZ = 100
    return out


def qemu_pss(s: st.State) -> int:
    """Proportional set size of the VM's QEMU in bytes (shared template pages split among the
    clones that map them); 0 when it is gone."""
    if not st.pid_alive(s.qemu_pid, s.qemu_start):
        return 0
    try:
        with open(f"/proc/{s.qemu_pid}/smaps_rollup") as f:
            for ln in f:
                if ln.startswith("Pss:"):
                    return int(ln.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def start(cid: str, root: str) -> None:
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status != "created":
        raise InvalidState(f"container {cid} is {s.status}, not created")
    _ask(s, "start")
    _run_hooks(root, cid, "poststart", warn_only=True)


def kill(cid: str, root: str, sig: int, all: bool = False) -> None:
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status not in ("created", "running", "paused"):
        # runc's words: containerd's runc shim takes "container not running" after a kill as
        # "already finished" (anything else fails the CRI's StopPodSandbox, which then retries)
        raise InvalidState(f"container not running: {cid} is {s.status}")
    _ask(s, f"kill {sig}" + (" all" if all else ""), timeout=10)


def delete(cid: str, root: str, force: bool = False) -> None:
    import shutil
    import time

    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status in ("running", "paused") and not force:
        raise InvalidState(f"container {cid} is {s.status}: stop it or use --force")
    # only the processes recorded, by pid AND start time: a recycled pid is someone else's
    if st.signal_if_same(s.pid, s.pid_start, signal.SIGTERM):
        for _ in range(300):
            if not st.pid_alive(s.pid, s.pid_start):
                break
            time.sleep(0.02)
        else:
            st.signal_if_same(s.pid, s.pid_start, signal.SIGKILL)
    if st.signal_if_same(s.qemu_pid, s.qemu_start, signal.SIGKILL):
        for _ in range(500):  # gone before its cgroup can go
            if not st.pid_alive(s.qemu_pid, s.qemu_start):
                break
            time.sleep(0.01)
    _unplug(s)
    drop_cgroup(s.cgroup)
    if s.rundir and os.path.basename(s.rundir).startswith("isle-vm-"):
        shutil.rmtree(s.rundir, ignore_errors=True)
    _run_hooks(root, cid, "poststop", warn_only=True)
    st.remove(root, cid)


def _qmp(s: st.State, command: str) -> None:
    from isle.vm.qmp import Monitor

    mon = Monitor(os.path.join(s.rundir, "qmp.sock"), timeout=10)
    try:
        mon.cmd(command)
    finally:
        mon.close()


def pause(cid: str, root: str) -> None:
    """Freeze the whole VM (QMP stop): the guest's clock and vCPUs halt, like a cgroup freeze."""
    _move(cid, root, "running", "stop", "paused")


def resume(cid: str, root: str) -> None:
    _move(cid, root, "paused", "cont", "running")


def _move(cid: str, root: str, want: str, command: str, then: str) -> None:
    """A VM in state `want` told `command` over QMP, then recorded as `then`."""
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status != want:
        raise InvalidState(f"container {cid} is {s.status}, not {want}")
    _qmp(s, command)
    s.status = then
    st.save(root, s)


def exec_(cid: str, root: str, job: vmjob.Job, tty_fd: int = -1) -> int:
    """Run one more process in a running VM on a free exec slot; stream its stdio; its exit code.

    With job.terminal the process runs on the slot's guest tty, relayed to tty_fd (a raw pty
    slave, or our own terminal), whose size changes are passed on."""
    import base64
    import threading

    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status != "running":
        raise InvalidState(f"container {cid} is {s.status}, not running")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    socks: list[socket.socket] = [conn]
    try:
        try:
            conn.connect(os.path.join(s.rundir, "monitor.sock"))
            conn.sendall(b"alloc tty\n" if job.terminal else b"alloc\n")
            ans = _recvline(conn, 256).split()
        except OSError as exc:
            raise VMError(f"container {cid}: its VM monitor does not answer ({exc})") from exc
        if ans[:1] != ["slot"]:
            raise VMError(
                f"container {cid}: exec refused: {' '.join(ans[1:]) or 'monitor went away'}"
            )
        i = int(ans[1])
        ends = {}
        tags = ("t",) if job.terminal else ("o", "e") + (("i",) if job.stdin else ())
        for tag in tags:
            x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            x.connect(os.path.join(s.rundir, "tty.sock" if tag == "t" else f"x{i}{tag}.sock"))
            socks.append(x)
            ends[tag] = x
        if job.stdin and not job.terminal:
            xi = ends["i"]

            def pump() -> None:
                try:
                    while chunk := os.read(0, 65536):
                        xi.sendall(chunk)
                    xi.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            threading.Thread(target=pump, daemon=True).start()
        script = base64.b64encode(vmjob.render_exec(job, i).encode()).decode()
        conn.sendall(f"exec {i} {script}\n".encode())
        outs = {ends["t"]: tty_fd} if job.terminal else {ends["o"]: 1, ends["e"]: 2}
        code: int | None = None
        buf = b""
        size = (0, 0)
        keys = job.terminal  # reading the terminal for keys (until its end closes)
        while True:
            watch: list[Any] = list(outs) + ([conn] if code is None else [])
            if keys and code is None:
                watch.append(tty_fd)
                if (now := _winsize(tty_fd)) != size and now[0] and now[1]:
                    size = now
                    try:
                        _ask(s, f"winsz {i} {now[0]} {now[1]}", timeout=5)
                    except VMError:
                        pass
            timeout = (0.2 if job.terminal else None) if code is None else 0.2
            r, _, _ = select.select(watch, [], [], timeout)
            if not r:
                if code is None:
                    continue
                return code  # drained after the exit report
            for x in r:
                if isinstance(x, int):  # keys typed on tty_fd: to the guest's tty (it echoes)
                    try:
                        data = os.read(tty_fd, 65536)
                    except OSError:
                        data = b""
                    if data:
                        ends["t"].sendall(data)
                    else:
                        keys = False  # the caller closed its end
                    continue
                data = x.recv(65536)
                if x is conn:
                    if not data:
                        raise VMError(f"container {cid} ended while exec was running")
                    buf += data
                    if b"\n" in buf:
                        line = buf.split(b"\n", 1)[0].decode().split()
                        if line[:1] != ["exit"]:
                            raise VMError(f"exec: {' '.join(line)}")
                        code = int(line[1])
                elif data:
                    os.write(outs[x], data)
                else:
                    del outs[x]
    finally:
        for x in socks:
            x.close()
