"""The forked side of create and exec: join/unshare namespaces, fork into the pid ns, set up, exec.

Process tree (runc's shape, without the re-exec): runtime -> stage-1 child (joins and
unshares namespaces; the parent writes uid/gid maps and joins it to the cgroup) -> container
init (pid 1 of the new pid ns: rootfs, console, process settings, waits on exec.fifo, execs).
As root without user/time namespaces (``direct_ok``) there is no stage 1: the runtime forks the
init straight into its pid namespace, and the init joins its v1 cgroups itself (``tasks``
files: no RCU grace period, see V1Manager.self_join_files).
Parent and children talk over a ``Chan`` (JSON lines on two pipes); any failure is sent back as
``{"error": ...}`` so the runtime prints one message and cleans up.
"""

from __future__ import annotations

import os

from isle.errors import ConfigError, IsleError, Unsupported
from isle.oci import fastjson as json
from isle.runtime.plan import split_namespaces
from isle.runtime.state import trace
from isle.sys import libc as L

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["Chan", "stage1", "init_direct", "direct_ok", "exec_stage1", "NS_PROC_NAMES",
           "init_hooks_wait"]

NS_PROC_NAMES = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid",
                 "cgroup": "cgroup", "time": "time", "mount": "mnt"}
_JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


class Chan:
    """JSON-line messages over a pipe pair; recv() is None at EOF."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd, self.buf = rfd, wfd, b""

    def send(self, **msg: Any) -> None:
        os.write(self.wfd, json.dumps(msg).encode() + b"\n")

    def recv(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def expect(self, op: str) -> dict[str, Any]:
        msg = self.recv()
        if msg is None:
            raise EOFError(f"runtime went away while waiting for {op!r}")
        if "error" in msg:
            raise _Relay(msg["error"])
        if msg.get("op") != op:
            raise RuntimeError(f"protocol: expected {op!r}, got {msg!r}")
        return msg

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Relay(Exception):
    pass


def _fail(chan: Chan, exc: BaseException) -> None:
    if os.environ.get("ISLE_RUNTIME_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, OSError) and not isinstance(exc, ConfigError):
        msg = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        if exc.strerror and exc.strerror not in str(exc.args[-1]):
            msg = str(exc)
    else:
        msg = str(exc)
    try:
        chan.send(error=msg)
    except OSError:
        pass
    os._exit(1)


def preload(cfg: dict[str, Any], proc: dict[str, Any], seccomp: bool = True) -> bytes | None:
    """Import (in the runtime, before fork) what the child needs after pivot_root / setns mnt,
    and compile the seccomp filter (unless seccomp=False: the init then does it itself, see
    ``seccomp_in_init``); returns the BPF program or None."""
    preload_imports(proc)
    sc = (cfg.get("linux") or {}).get("seccomp")
    if not sc:
        return None
    import isle.sys.seccomp_lib  # noqa: F401  (the install after pivot_root needs it)
    from isle.runtime.seccomp_cache import lookup

    prog = lookup(sc)  # a hit is ~0.3 ms and imports no json/re/libseccomp
    if prog is not None or not seccomp:
        return prog
    return _seccomp_load(sc)


def seccomp_program(cfg: dict[str, Any]) -> bytes | None:
    """The compiled filter of cfg's linux.seccomp (the cache, else compiled), None without one;
    for a process that runs the init's code in a fresh interpreter (reexec), which imports the
    modules itself."""
    sc = (cfg.get("linux") or {}).get("seccomp")
    if not sc:
        return None
    from isle.runtime.seccomp_cache import lookup

    prog = lookup(sc)
    return prog if prog is not None else _seccomp_prog(sc)


def preload_imports(proc: dict[str, Any]) -> None:
    """The modules the init or exec'd process needs once the host's paths are gone."""
    import fcntl  # noqa: F401

    from isle.runtime import hooks, process, rootfs  # noqa: F401

    if proc.get("rlimits"):
        import resource  # noqa: F401
    if proc.get("terminal") or proc.get("consoleSize"):
        import socket  # noqa: F401
        import struct  # noqa: F401
        import termios  # noqa: F401
    if os.environ.get("ISLE_RUNTIME_DEBUG"):
        import traceback  # noqa: F401


def _seccomp_load(sc: dict[str, Any]) -> bytes:
    import isle.sys.seccomp_lib  # noqa: F401  (install_filter imports it lazily)

    if sc.get("listenerPath"):
        import socket  # noqa: F401
    return _seccomp_prog(sc)


def seccomp_in_init(cfg: dict[str, Any]) -> bool:
    """Let the container's init import isle.runtime.seccomp and compile the filter (~20 ms of
    CPU), while the runtime waits on the kernel to join the cgroup, instead of before the fork.
    Not with a new user namespace: the mapped root may not read the filter cache."""
    lx = cfg.get("linux") or {}
    return bool(lx.get("seccomp")) and not any(
        n["type"] == "user" and not n.get("path") for n in lx.get("namespaces") or [])


def _unshare(sys: Any, flags: int) -> None:
    """unshare the namespaces in flags (none: nothing), an error naming linux.namespaces."""
    if flags:
        try:
            sys.unshare(flags)
        except OSError as exc:
            raise Unsupported(f"linux.namespaces: unshare: {os.strerror(exc.errno or 0)}"
                              ) from None


def _ns_fd_join(sys: L.Syscalls, typ: str, path: str, field: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(field, f"{path}: {os.strerror(exc.errno or 0)}") from None
    try:
        sys.setns(fd, L.NAMESPACE_FLAGS[typ])
    except OSError as exc:
        raise ConfigError(field, f"setns {typ} {path}: {os.strerror(exc.errno or 0)}") from None
    finally:
        os.close(fd)


def _become_root_in_userns() -> None:
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError:
        pass  # root not mapped: keep the ids we have; caps still apply in the new ns


def stage1(chan: Chan, cfg: dict[str, Any], opts: dict[str, Any]) -> None:
    """Child of the runtime: namespaces, then fork the container's init. Never returns."""
    sys = L.LinuxSyscalls()
    try:
        sys.prctl(L.PR_SET_PDEATHSIG, 9)
        lx = cfg.get("linux") or {}
        nss = lx.get("namespaces") or []
        new, join = split_namespaces(nss)
        for typ, path in join:  # user first: the others may be owned by it
            idx = next(i for i, n in enumerate(nss) if n["type"] == typ)
            _ns_fd_join(sys, typ, path, f"linux.namespaces[{idx}].path")
        if new & L.CLONE_NEWUSER:
            sys.unshare(L.CLONE_NEWUSER)
            chan.send(op="userns")
            chan.expect("maps")
            _become_root_in_userns()
        if opts.get("wait_go", True):  # the runtime joins us to the cgroup first
            chan.expect("go")
        trace('s1 go')
        _unshare(sys, new & ~L.CLONE_NEWUSER)
        offs = lx.get("timeOffsets")
        if offs and new & L.CLONE_NEWTIME:
            lines = "".join(f"{k} {v.get('secs', 0)} {v.get('nanosecs', 0)}\n"
                            for k, v in offs.items())
            with open("/proc/self/timens_offsets", "w") as f:
                f.write(lines)
        if opts.get("sealed"):  # the init is born where others see it (see reexec.py)
            from isle.runtime import process

            process.set_oom_score((cfg.get("process") or {}).get("oomScoreAdj"))
            opts["oom_done"] = True  # a non-dumpable process's /proc files are the host root's
            sys.prctl(L.PR_SET_DUMPABLE, 0)
        pid = os.fork()
        if pid == 0:
            _init(sys, chan, cfg, opts, bool(new & L.CLONE_NEWUSER) or any(
                n["type"] == "user" for n in nss))
        trace('s1 forked')
        chan.send(op="pid", pid=pid)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 -- everything goes back to the runtime
        _fail(chan, exc)


#: namespaces a directly forked init may join by path: pid by the runtime around the fork,
#: the others by the init itself (a mount or cgroup namespace by path keeps the stage 1)
DIRECT_JOIN = ("pid", "network", "ipc", "uts")


def needs_sealed_init(cfg: dict[str, Any]) -> bool:
    """Whether a new container's init is born where others can see it: a pid namespace joined by
    path, or none (the runtime's own, the host's); it then starts from a fresh, sealed
    interpreter (reexec.py)."""
    for n in (cfg.get("linux") or {}).get("namespaces") or []:
        if n["type"] == "pid":
            return bool(n.get("path"))
    return True


def direct_ok(cfg: dict[str, Any]) -> bool:
    """Whether the runtime forks the init itself, with no stage 1 in between: as root, with no
    user or time namespace, joining by path only DIRECT_JOIN ones. The runtime then unshares
    (or joins) just the pid namespace (that applies to its children only), forks the init, and
    sets its own back; the init joins and unshares the rest. One Python fork and one process
    exit fewer on create's critical path."""
    if os.geteuid() != 0:
        return False
    return not any(n["type"] in ("user", "time") or n.get("path") and n["type"] not in
                   DIRECT_JOIN for n in (cfg.get("linux") or {}).get("namespaces") or [])


def init_direct(chan: Chan, cfg: dict[str, Any], opts: dict[str, Any]) -> None:
    """Child of the runtime born in its new pid namespace (see direct_ok): unshare the other
    namespaces, then be the container's init. Never returns."""
    sys = L.LinuxSyscalls()
    try:
        # first: setsid measured ~0.3 ms here and ~0.8 ms after the unshare below (new
        # namespaces, and the runtime's cgroup mkdirs running by then)
        os.setsid()
        opts["setsid_done"] = True
        if opts.get("wait_go", True):  # the runtime joins us to the cgroup first
            chan.expect("go")
        nss = (cfg.get("linux") or {}).get("namespaces") or []
        new, join = split_namespaces(nss)
        for typ, path in join:
            if typ != "pid":  # the runtime forked us into that one
                idx = next(i for i, n in enumerate(nss) if n["type"] == typ)
                _ns_fd_join(sys, typ, path, f"linux.namespaces[{idx}].path")
        _unshare(sys, new & ~L.CLONE_NEWPID)
    except BaseException as exc:  # noqa: BLE001 -- everything goes back to the runtime
        _fail(chan, exc)
    _init(sys, chan, cfg, opts, False)


def _init(sys: L.LinuxSyscalls, chan: Chan, cfg: dict[str, Any], opts: dict[str, Any],
          in_userns: bool) -> None:
    """The container's init. Never returns: execs the process or exits with the error sent."""
    from isle.runtime import hooks, rootfs

    try:
        proc = cfg["process"]
        lx = cfg.get("linux") or {}
        rootdir = opts["rootfs"]
        _close_inherited(opts.get("preserve_fds", 0), (chan.rfd, chan.wfd, *_opt_fds(opts)))
        if not opts.get("setsid_done"):
            os.setsid()
        if not opts.get("no_new_keyring"):
            _join_session_keyring(sys, opts["cid"])
        types = {n["type"] for n in lx.get("namespaces") or []}
        if "uts" in types:
            if cfg.get("hostname"):
                sys.sethostname(cfg["hostname"])
            if cfg.get("domainname"):
                sys.setdomainname(cfg["domainname"])
        if lx.get("namespaces") and "network" in types and not any(
                n.get("path") for n in lx["namespaces"] if n["type"] == "network"):
            _loopback_up()
        trace('init start')
        own_mnt = "mount" in types
        if own_mnt:
            rootfs.prepare_root(sys, rootdir, lx.get("rootfsPropagation"))
        if opts.get("seccomp_prog") is None and lx.get("seccomp"):
            opts["seccomp_prog"] = _seccomp_load(lx["seccomp"])  # host paths still visible
        trace('init prepared')
        mounts = cfg.get("mounts") or []
        cg_wait: list[dict[str, Any]] = []

        def joined() -> dict[str, Any]:  # we are in our cgroup: the runtime's move, or our own
            if not cg_wait:
                trace('init wait cg')
                msg = chan.expect("cgroup")
                for f in msg.get("join") or ():
                    _join_self(f)
                cg_wait.append(msg)
            return cg_wait[0]

        rootfs.do_mounts(sys, mounts, rootdir, opts["bundle"], before_cgroup=joined,
                         cgroup_mounts=opts.get("cgroup_mounts"))
        trace('init mounted')
        dev_bound = any(m["destination"].rstrip("/") == "/dev" and "bind" in (
            m.get("type") or "") + ",".join(m.get("options") or []) for m in mounts)
        if not dev_bound:
            rootfs.setup_dev(sys, rootdir, lx.get("devices") or [], in_userns)
        trace('init dev')
        fifo_fd = opts["fifo_fd"]
        joined()
        if init_hooks_wait(cfg.get("hooks")):
            chan.send(op="hooks")
            chan.expect("go")
        hooks.run_hooks(cfg.get("hooks"), "createContainer", opts["hook_state"])
        trace('init go')
        if own_mnt:
            rootfs.pivot(sys, rootdir, opts.get("no_pivot", False),
                         lx.get("rootfsPropagation") or None)
        else:  # runc's way without a mount namespace: chroot
            os.chdir(rootdir)
            os.chroot(".")
            os.chdir("/")
        trace('init pivoted')
        console = opts.get("console_fd")
        if proc.get("terminal") and console is not None:
            _setup_console(sys, console, proc)
        elif proc.get("terminal"):
            _inherit_tty()
        rootfs.finalize(sys, lx, bool(cfg["root"].get("readonly")))
        _exec_common(sys, chan, cfg, proc, fifo_fd=fifo_fd, hook_state=opts["hook_state"],
                     preserve_fds=opts.get("preserve_fds", 0), in_userns=in_userns,
                     opts_prog=opts.get("seccomp_prog"), start_now=bool(opts.get("start_now")),
                     oom_done=bool(opts.get("oom_done")))
    except BaseException as exc:  # noqa: BLE001
        _fail(chan, exc)


def _join_self(tasks: str) -> None:
    """Move this (single-threaded) process into a v1 cgroup by writing "0" to its tasks file:
    no threadgroup lock, so no RCU grace period (see V1Manager.self_join_files)."""
    try:
        fd = os.open(tasks, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError as exc:
        raise IsleError(f"joining cgroup {os.path.dirname(tasks)}: "
                        f"{os.strerror(exc.errno or 0)}") from None


def init_hooks_wait(hk: dict[str, Any] | None) -> bool:
    """Whether the init stops for the runtime to run prestart/createRuntime hooks (only if any)."""
    return bool(hk and (hk.get("prestart") or hk.get("createRuntime")))


def _exec_common(sys: L.LinuxSyscalls, chan: Chan, cfg: dict[str, Any], proc: dict[str, Any],
                 *, fifo_fd: int | None, hook_state: dict[str, Any] | None, preserve_fds: int,
                 in_userns: bool, opts_prog: bytes | None, start_now: bool = False,
                 oom_done: bool = False) -> None:
    """Process settings, seccomp, then (after exec.fifo for init) execve. Never returns."""
    exe, envd = _prepare(sys, cfg, proc, in_userns, opts_prog, hook_state, oom_done)
    _finish(chan, cfg, proc, exe, envd, fifo_fd=fifo_fd, hook_state=hook_state,
            preserve_fds=preserve_fds, opts_prog=opts_prog, start_now=start_now)


def _prepare(sys: L.LinuxSyscalls, cfg: dict[str, Any], proc: dict[str, Any], in_userns: bool,
             opts_prog: bytes | None, hook_state: dict[str, Any] | None,
             oom_done: bool = False) -> tuple[str, dict[str, str]]:
    """The process's settings that a fork inherits: oom score, rlimits, LSM labels, seccomp
    unless NNP, cwd (checked to be inside the root), user and capabilities, NNP.
    -> (executable, environment) to execve."""
    from isle.runtime import process

    lx = cfg.get("linux") or {}
    if not oom_done:
        process.set_oom_score(proc.get("oomScoreAdj"))
    process.set_rlimits(proc.get("rlimits") or [])
    process.lsm_labels(proc)
    nnp = bool(proc.get("noNewPrivileges"))
    sc = lx.get("seccomp")
    prog = opts_prog if sc else None
    if prog is not None and sc and not nnp:
        _install_seccomp(prog, sc, hook_state)  # needs CAP_SYS_ADMIN without NNP: do it now
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
        cwd_done = True
    except OSError:
        cwd_done = False
    process.set_user_and_caps(sys, proc, in_userns)
    if not cwd_done:
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise ConfigError("process.cwd", f"{cwd}: {os.strerror(exc.errno or 0)}") from None
    _check_cwd(cwd)
    if nnp:
        sys.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    env = proc.get("env") or []
    exe = process.lookup_exec(proc["args"][0], env)
    return exe, dict(e.split("=", 1) for e in env)


def _check_cwd(cwd: str) -> None:
    """The cwd must be inside the container's root (CVE-2024-21626: a cwd through an fd or
    a path that leads outside it). getcwd(3) fails (ENOENT) for a directory not reachable from
    the process's root, which the kernel reports as "(unreachable)/..."."""
    try:
        here = os.getcwd()
    except OSError:
        here = ""
    if not here.startswith("/"):
        raise ConfigError("process.cwd", f"{cwd}: not inside the container's root filesystem")


def _finish(chan: Chan, cfg: dict[str, Any], proc: dict[str, Any], exe: str,
            envd: dict[str, str], *, fifo_fd: int | None, hook_state: dict[str, Any] | None,
            preserve_fds: int, opts_prog: bytes | None, start_now: bool = False) -> None:
    """fds, the start handshake (init), seccomp with NNP, startContainer hooks, execve."""
    from isle.runtime import hooks

    lx = cfg.get("linux") or {}
    sc = lx.get("seccomp")
    prog = opts_prog if sc else None
    nnp = bool(proc.get("noNewPrivileges"))
    trace('init pre-fifo')
    _close_extra_fds(preserve_fds, keep={chan.rfd, chan.wfd, fifo_fd or -1})
    if fifo_fd is not None or start_now:
        chan.send(op="ready")
        chan.close()
    if fifo_fd is not None:  # blocks until `start` opens exec.fifo
        # an `exec` into the created container sees this process until then: no /proc/1/exe,
        # environ or mem for it without CAP_SYS_PTRACE (see reexec.py), no host paths in its
        # cmdline, and its environment block (the runtime's caller's) wiped
        L.LinuxSyscalls().prctl(L.PR_SET_DUMPABLE, 0)
        L.scrub_cmdline()
        fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, b"0")
        os.close(fd)
        os.close(fifo_fd)
    if prog is not None and sc and nnp:
        _install_seccomp(prog, sc, hook_state)
    if hook_state is not None and (cfg.get("hooks") or {}).get("startContainer"):
        hooks.run_hooks(cfg["hooks"], "startContainer", dict(hook_state, status="running"))
    trace('init exec')
    _default_signals()
    os.execve(exe, proc["args"], envd)


def _default_signals() -> None:
    """Every signal back to its default action for the container's process, as runc gives it:
    an ignored disposition survives execve, and the Python running this init ignores SIGPIPE
    and SIGXFSZ (so `yes | head` in the container would see EPIPE instead of dying), and a
    caller started in the background of a shell ignores SIGINT and SIGQUIT (then the process
    could not trap them)."""
    import _signal  # type: ignore[import-not-found]

    for s in range(1, 65):
        if s in (9, 19, 32, 33):  # KILL and STOP cannot change; 32/33 belong to the C library
            continue
        try:
            _signal.signal(s, 0)  # SIG_DFL
        except (OSError, ValueError):
            pass


def _seccomp_prog(sc: dict[str, Any]) -> bytes:
    try:
        from isle.runtime import seccomp
    except ImportError:
        raise Unsupported("linux.seccomp: seccomp support is not available in this build") from None
    return seccomp.compile_filter(sc)


def _install_seccomp(prog: bytes, sc: dict[str, Any], state: dict[str, Any] | None) -> None:
    from isle.runtime.seccomp_cache import install_simple

    if install_simple(prog, sc):
        return
    from isle.runtime import seccomp

    listener = seccomp.install_filter(prog, flags=seccomp.filter_flags(sc))
    if listener is not None:
        if sc.get("listenerPath"):
            seccomp.send_listener(sc["listenerPath"], listener, dict(
                state or {}, metadata=sc.get("listenerMetadata", "")))
        os.close(listener)


def _close_extra_fds(preserve: int, keep: set[int]) -> None:
    limit = 2 + preserve
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > limit and fd not in keep:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
    for fd in range(3, limit + 1):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass


def _opt_fds(opts: dict[str, Any]) -> list[int]:
    """The fds the runtime hands its child by number: every ``*_fd`` option."""
    return [v for k, v in opts.items() if k.endswith("_fd") and isinstance(v, int)]


def _close_inherited(preserve: int, keep: tuple[int | None, ...]) -> None:
    """Close every fd above stdio but the preserved ones (3..2+preserve) and keep: whatever the
    runtime's caller or the runtime itself left open must not reach the container, not even as
    /proc/self/fd/N for a cwd or a path (CVE-2024-21626). close_range: no /proc listing."""
    lo = 3 + preserve
    for fd in sorted(k for k in keep if k is not None and k >= lo) + [1 << 30]:
        if fd > lo:
            os.closerange(lo, fd)
        lo = max(lo, fd + 1)


def _join_session_keyring(sys: L.LinuxSyscalls, cid: str) -> None:
    """A fresh session keyring, as runc gives each container (unless --no-new-keyring)."""
    try:
        sys.join_session_keyring(cid)
    except OSError:
        pass  # keyrings disabled or out of quota: runc ignores ENOSYS/EDQUOT likewise


def _loopback_up() -> None:
    """ip link set lo up, via ioctl on a raw socket fd (no socket module: it costs ~4 ms)."""
    import fcntl

    fd = L.libc().socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM|SOCK_CLOEXEC
    if fd < 0:
        return
    try:
        ifr = bytearray(b"lo".ljust(40, b"\0"))
        fcntl.ioctl(fd, 0x8913, ifr)  # SIOCGIFFLAGS
        ifr[16] |= 1  # IFF_UP
        fcntl.ioctl(fd, 0x8914, ifr)  # SIOCSIFFLAGS
    finally:
        os.close(fd)


def _setup_console(sys: L.LinuxSyscalls, console_fd: int, proc: dict[str, Any]) -> None:
    """Make a pty in the container's devpts, send the master over --console-socket, use slave."""
    import fcntl
    import termios

    from isle.runtime import rootfs

    master, slave = os.openpty()
    size = proc.get("consoleSize")
    if size:
        import struct

        fcntl.ioctl(slave, termios.TIOCSWINSZ,
                    struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0))
    path = os.ttyname(slave)
    rootfs.mount_console(sys, path, slave)
    _hand_console(console_fd, path, master, slave)


def _inherit_tty() -> None:
    """terminal: true without a console socket (foreground run): adopt an inherited tty."""
    import fcntl
    import termios

    if os.isatty(0):
        try:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError:
            pass


def exec_stage1(chan: Chan, cfg: dict[str, Any], proc: dict[str, Any], init_pid: int,
                opts: dict[str, Any]) -> None:
    """Child of `exec`: join the container's namespaces, fork, set up proc, exec. Never returns."""
    sys = L.LinuxSyscalls()
    try:
        sys.prctl(L.PR_SET_PDEATHSIG, 9)
        for f in chan.expect("go").get("join") or ():  # before setns mnt: host paths
            _join_self(f)
        from isle.runtime import process

        process.set_oom_score(proc.get("oomScoreAdj"))  # on the host's procfs, while dumpable
        sys.prctl(L.PR_SET_DUMPABLE, 0)  # as runc: before joining anything (see reexec.py)
        types = {n["type"] for n in (cfg.get("linux") or {}).get("namespaces") or []}
        in_userns = "user" in types
        for t in _JOIN_ORDER:
            if t not in types:
                continue
            name = NS_PROC_NAMES[t]
            path = f"/proc/{init_pid}/ns/{name}"
            try:
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
            except FileNotFoundError:
                continue
            _ns_fd_join(sys, t, path, f"namespace {t}")
            if t == "user":
                _become_root_in_userns()
        # everything a fork inherits happens here, outside the container's pid namespace: the
        # process the container can see already has the user, caps and cwd it execs with
        exe, envd = _prepare(sys, cfg, proc, in_userns, opts.get("seccomp_prog"), None,
                             oom_done=True)
        sys.prctl(L.PR_SET_DUMPABLE, 0)  # still (only an execve sets it back)
        pid = os.fork()
        if pid == 0:
            try:
                if proc.get("terminal"):
                    os.setsid()
                    if opts.get("console_fd") is not None:
                        _setup_console_exec(opts["console_fd"], proc)
                _finish(chan, cfg, proc, exe, envd, fifo_fd=None, hook_state=None,
                        preserve_fds=opts.get("preserve_fds", 0),
                        opts_prog=opts.get("seccomp_prog"))
            except BaseException as exc:  # noqa: BLE001
                _fail(chan, exc)
        chan.send(op="pid", pid=pid)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        _fail(chan, exc)


def _setup_console_exec(console_fd: int, proc: dict[str, Any]) -> None:
    master, slave = os.openpty()
    _hand_console(console_fd, os.ttyname(slave), master, slave)


def _hand_console(console_fd: int, path: str, master: int, slave: int) -> None:
    """Send the pty master over --console-socket; the slave becomes this process's controlling
    terminal and stdio."""
    import fcntl
    import socket
    import termios

    sock = socket.socket(fileno=console_fd)
    try:
        socket.send_fds(sock, [path.encode()], [master])
    finally:
        sock.close()
    os.close(master)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
