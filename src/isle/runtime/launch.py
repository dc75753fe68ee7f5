"""The launch pipeline: from a bundle to an init that waits on exec.fifo (or, for `run`, already
runs its process), and the parent's side of the exchange with it.

    ctr = launch(root, "c1", opts)   # checks, state dir, cgroup, fork, id maps, hooks

Steps, in order: the spec is loaded and checked (check_support, check_pidns_started), the state
dir made, the cgroup made before the fork when the init gets a cgroup namespace (else after it,
while the init sets itself up), the init forked (directly, in the spec's pid namespace, or
through a stage 1 / a sealed fresh interpreter), its user namespace mapped (write_maps), its
cgroup joined, the createRuntime/prestart hooks run, then "ready". Every failure undoes what was
made (teardown.destroy) before raising. Also the foreground wait of `run` and `exec` (signals
forwarded to the container's process).
"""

from __future__ import annotations

import os

from isle.errors import AlreadyExists, ConfigError, InvalidState, IsleError, Unsupported
from isle.runtime.state import (
    CREATED,
    CREATING,
    RUNNING,
    Container,
    now_rfc3339,
    private_root,
    proc_starttime,
    trace,
)
from isle.runtime.teardown import destroy, warn

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

    from isle.runtime.container import Options

__all__ = ["launch", "child_error", "write_pid_file", "connect_console", "send", "recv",
           "may_ptrace_init", "hold_signals", "wait_forwarding", "FWD_SIGNALS"]


def child_error(msg: str) -> IsleError:
    # messages from the init already name the field ("mounts[2]: ...")
    return ConfigError("", msg) if ":" in msg else IsleError(msg)


def write_pid_file(path: str | None, pid: int) -> None:
    if path:
        from isle.sys.fs import atomic_write

        # no fsync (runc's neither): it names a process that does not outlive the boot, and the
        # caller's state dir may be on a busy disk (containerd's task dir: 5-20 ms per fsync)
        atomic_write(os.path.abspath(path), str(pid).encode(), 0o644, durable=False)


def connect_console(path: str) -> int:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        raise ConfigError("--console-socket", f"{path}: {os.strerror(exc.errno or 0)}") from None
    return s.detach()


def resolve_rootfs(cfg: dict[str, Any], bundle: str) -> str:
    p = cfg["root"]["path"]
    rootfs = os.path.normpath(p if p.startswith("/") else os.path.join(bundle, p))
    if not os.path.isdir(rootfs):
        raise ConfigError("root.path", f"{rootfs}: no such directory")
    return os.path.realpath(rootfs)


def check_support(cfg: dict[str, Any], opts: Options) -> None:
    if opts.systemd_cgroup:
        raise Unsupported("--systemd-cgroup: the systemd cgroup driver is not supported by "
                          "isle-runtime; use cgroupfs")
    lx = cfg.get("linux") or {}
    types = [n["type"] for n in lx.get("namespaces") or []]
    if "mount" not in types and (lx.get("maskedPaths") or lx.get("readonlyPaths")
                                 or cfg["root"].get("readonly")):
        raise ConfigError("linux.namespaces", "maskedPaths, readonlyPaths and root.readonly "
                          "need a mount namespace")
    for i, n in enumerate(lx.get("namespaces") or []):
        if n.get("path") and not os.path.exists(n["path"]):
            raise ConfigError(f"linux.namespaces[{i}].path", f"{n['path']}: no such file")
    proc = cfg.get("process")
    if proc is None:
        raise ConfigError("process", "is required to create a container")
    if proc.get("terminal") and not opts.console_socket and not opts.foreground:
        raise ConfigError("process.terminal", "needs --console-socket (or terminal: false)")
    if lx.get("seccomp") and not os.path.exists(os.path.join(os.path.dirname(__file__),
                                                             "seccomp.py")):
        raise Unsupported("linux.seccomp: seccomp support is not available in this build")


def write_maps(pid: int, lx: dict[str, Any]) -> None:
    """Root writes the maps itself. An unprivileged caller may write only its own id, once
    (gid_map after setgroups "deny"); any wider map (its /etc/subuid, /etc/subgid ranges) goes
    through the setuid newuidmap/newgidmap, which check those files, as runc and podman do."""
    root = os.geteuid() == 0
    for key, fname, own in (("gidMappings", "gid_map", os.getegid()),
                            ("uidMappings", "uid_map", os.geteuid())):
        maps = lx.get(key) or []
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
        if not root and not (len(maps) == 1 and maps[0]["hostID"] == own and maps[0]["size"] == 1):
            _newidmap("new" + fname.replace("_map", "map"), pid, key, maps)
            continue
        try:
            if not root and fname == "gid_map":
                with open(f"/proc/{pid}/setgroups", "w") as f:
                    f.write("deny")
            with open(f"/proc/{pid}/{fname}", "w") as f:
                f.write(lines)
        except OSError as exc:
            raise ConfigError(f"linux.{key}", f"the kernel refused the mapping "
                              f"{lines.strip()!r}: {os.strerror(exc.errno or 0)}") from None


def _newidmap(tool: str, pid: int, key: str, maps: list[dict[str, Any]]) -> None:
    from isle.errors import CommandError
    from isle.sys import proc

    path = proc.which(tool)
    if path is None:
        raise Unsupported(f"linux.{key}: mapping more than uid/gid {os.geteuid()}/{os.getegid()} "
                          f"without root needs {tool} (Debian's uidmap package)")
    argv = [path, str(pid)] + [str(int(m[k])) for m in maps
                               for k in ("containerID", "hostID", "size")]
    try:
        proc.run(argv, timeout=10)
    except CommandError as exc:
        why = (exc.stderr or str(exc)).strip().replace("\n", "; ")
        raise ConfigError(f"linux.{key}", f"{tool} refused the mapping "
                          f"{' '.join(argv[2:])!r}: {why} (see /etc/sub{key[:3]})") from None


def launch(root: str, cid: str, opts: Options) -> Container:
    """create's work: the container in state "created" (or "running" when opts.start_now)."""
    from isle.oci import runtime_spec

    trace('create')
    bundle = os.path.abspath(opts.bundle)
    cfg = runtime_spec.load(os.path.join(bundle, "config.json"))
    rootfs = resolve_rootfs(cfg, bundle)
    check_support(cfg, opts)
    check_pidns_started(cfg)
    unknown = runtime_spec.unknown_capabilities(cfg.get("process"))
    if unknown:
        warn(f"ignoring unknown or unavailable capabilities: {', '.join(unknown)}")
    ctr = Container(root, cid)
    private_root(root)  # 0700 like runc's /run/runc (tightened if older); the init reaches
    try:  # exec.fifo through an fd (/proc/self/fd), never by path: no search bit for "other"
        os.mkdir(ctr.dir, 0o700)
    except FileExistsError:
        raise AlreadyExists(f"container with id {cid!r} already exists") from None
    console_fd = None
    try:
        ctr.data = {"ociVersion": cfg["ociVersion"], "id": cid, "status": CREATING,
                    "bundle": bundle, "rootfs": rootfs, "created": now_rfc3339(),
                    "annotations": cfg.get("annotations") or {}, "config": cfg}
        lx = cfg.get("linux") or {}
        from isle.runtime.cgroup import cgroup_mounts

        mcache = os.path.join(root, ".cgroup-mounts")  # reading mountinfo costs 1-9 ms here
        # the init must be born inside its cgroup when it gets a cgroup namespace; otherwise the
        # cgroup manager is built (~1.5 ms of imports) and the cgroup made after the fork, while
        # the init sets up its namespaces and mounts, and the init itself is moved in
        early = any(n["type"] == "cgroup" for n in lx.get("namespaces") or [])
        if not self_join_likely(cfg, early):
            from isle.runtime.cgroup import kick_attach

            kick_attach()  # the runtime writes cgroup.procs: start its grace period now
        cg = res = None
        if early:
            cg, res = make_cgroup(ctr, lx, mcache)
            if cg is not None:
                cg.create()
                ctr.data["cgroup"] = cg.to_state()
                ctr.save()
                cg.set(res)
            ctr.save()
        trace('saved1')
        if not opts.start_now:
            os.mkfifo(ctr.fifo, 0o622)
            os.chmod(ctr.fifo, 0o622)  # past the umask: an init in a user ns writes it as "other"
        if opts.console_socket and (cfg["process"].get("terminal")):
            console_fd = connect_console(opts.console_socket)
        trace('spawn')
        cgm = cgroup_mounts(mcache) if any(m.get("type") == "cgroup" for m in cfg.get(
            "mounts") or []) else None
        spawn_init(ctr, cfg, cg, opts, rootfs, console_fd, res, early, cgm, mcache)
        ctr.data["status"] = RUNNING if opts.start_now else CREATED
        ctr.save()
        if not opts.start_now:
            _start_plan(ctr, cfg)
        trace('created')
        write_pid_file(opts.pid_file, ctr.data["pid"])
        return ctr
    except BaseException:
        destroy(ctr, hooks=False)
        raise


def _start_plan(ctr: Container, cfg: dict[str, Any]) -> None:
    """<dir>/start.plan: what the native front (runtime/front.c) needs to do `start` without an
    interpreter: the init's pid and start time, and whether poststart hooks must run (then
    Python starts it). Written once the container is "created"; gone with its directory."""
    hooks = 1 if ((cfg.get("hooks") or {}).get("poststart")) else 0
    fd = os.open(os.path.join(ctr.dir, "start.plan"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{ctr.data['pid']} {ctr.data.get('starttime') or 0} {hooks}\n".encode())
    finally:
        os.close(fd)


def self_join_likely(cfg: dict[str, Any], early: bool) -> bool:
    """Whether the init will join its cgroups itself through v1 tasks files (no grace period
    to warm up for): a directly forked init, no cgroup namespace, no limit that may need the
    unified hierarchy of a hybrid host. A wrong guess only costs time."""
    from isle.runtime.init import direct_ok

    res = (cfg.get("linux") or {}).get("resources") or {}
    return (not early and direct_ok(cfg) and not res.get("hugepageLimits")
            and not res.get("unified") and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"))


def make_cgroup(ctr: Container, lx: dict[str, Any], mcache: str | None
                 ) -> tuple[Any, dict[str, Any]]:
    """The container's cgroup manager (nothing made yet) and its resources; recorded in the
    state first, so that a delete --force after a crash finds what create() may have made."""
    from isle.runtime.cgroup import manager, resources_with_defaults

    cg = manager(lx.get("cgroupsPath"), ctr.id, mcache)
    res = resources_with_defaults(lx.get("resources"), lx.get("devices"))
    if cg is not None:
        ctr.data["cgroup"] = cg.to_state()
    return cg, res


def spawn_init(ctr: Container, cfg: dict[str, Any], cg: Any, opts: Options, rootfs: str,
                console_fd: int | None, res: dict[str, Any] | None, early: bool,
                cgroup_mounts: list[tuple[str, str, str, str]] | None = None,
                mcache: str | None = None) -> None:
    """Fork the init. Unless early (cg made before), cg and res are None here and are built
    after the fork (make_cgroup), in parallel with the init's own set-up."""
    from isle.runtime import hooks
    from isle.runtime.init import (
        Chan,
        _opt_fds,
        direct_ok,
        init_direct,
        init_hooks_wait,
        needs_sealed_init,
        preload,
        seccomp_in_init,
        stage1,
    )

    sealed = needs_sealed_init(cfg)  # others see the init: a fresh interpreter (see reexec.py)
    try:
        if sealed:
            from isle.runtime.init import seccomp_program

            prog = seccomp_program(cfg)
        else:
            prog = preload(cfg, cfg["process"], seccomp=not seccomp_in_init(cfg))
    except BaseException:
        if console_fd is not None:
            os.close(console_fd)
        raise
    hook_state = ctr.hook_state(CREATED)  # runtime-tools and crun: "created" in create hooks
    # O_PATH here, not in the init: a user-namespaced init may not traverse the runtime root
    fifo_fd = None if opts.start_now else os.open(ctr.fifo, os.O_PATH | os.O_CLOEXEC)
    child_opts = {"rootfs": rootfs, "bundle": ctr.data["bundle"], "fifo_fd": fifo_fd,
                  "no_pivot": opts.no_pivot, "preserve_fds": opts.preserve_fds,
                  "cid": ctr.id, "no_new_keyring": opts.no_new_keyring,
                  "console_fd": console_fd, "hook_state": hook_state, "seccomp_prog": prog,
                  "start_now": opts.start_now,
                  "wait_go": bool(cg is not None and early), "cgroup_mounts": cgroup_mounts}
    direct = direct_ok(cfg) and not sealed
    trace('fork')
    if sealed:
        from isle.runtime import reexec

        child_opts["sealed"] = True
        try:
            pid, chan = reexec.spawn(keep=tuple(_opt_fds(child_opts)),
                                     preserve=opts.preserve_fds)
            reexec.send_payload(chan, "stage1", {"cfg": cfg,
                                                 "opts": reexec.payload_opts(child_opts)})
        except BaseException:
            for fd in (fifo_fd, console_fd):
                if fd is not None:
                    os.close(fd)
            raise
    else:
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        pid = _fork_in_pidns(cfg) if direct else os.fork()
    if pid == 0:
        if opts.foreground:  # run's held signals: back to their defaults
            import _signal  # type: ignore[import-not-found]

            for s in FWD_SIGNALS:
                _signal.signal(s, 0)
        os.close(p2c_w)
        os.close(c2p_r)
        (init_direct if direct else stage1)(Chan(p2c_r, c2p_w), cfg, child_opts)
        os._exit(1)  # not reached
    # the init joins its v1 cgroups itself (tasks files) whether forked directly or by a stage 1
    # (a sealed init in a pod's pid namespace): the same process, single-threaded, not yet exec'd
    self_join = (direct or sealed) and self_join_likely(cfg, early)
    if not self_join:
        from isle.runtime.cgroup import kick_attach

        kick_attach()  # a write while the grace period's effect lasts extends it to the join
    if not sealed:
        os.close(p2c_r)
        os.close(c2p_w)
        chan = Chan(c2p_r, p2c_w)
    if fifo_fd is not None:
        os.close(fifo_fd)
    if console_fd is not None:
        os.close(console_fd)
    ctr.data["stage1"] = pid
    if direct:  # pid is the init itself
        ctr.data["pid"] = pid
    reaped = False
    try:
        lx = cfg.get("linux") or {}
        if cg is not None and early:
            join_cgroup(cg, pid)
        new_user = any(n["type"] == "user" and not n.get("path")
                       for n in lx.get("namespaces") or [])
        if new_user:
            recv(chan, "userns")
            write_maps(pid, lx)
            send(chan, "maps")
        if cg is not None and early:
            send(chan, "go")
        if not early:
            cg, res = make_cgroup(ctr, lx, mcache)
            if cg is not None and self_join:
                cg.drop_unused_unified(res)
                ctr.data["cgroup"] = cg.to_state()
            ctr.save()
        if cg is not None and not early:
            try:
                cg.create()
                ctr.data["cgroup"] = cg.to_state()
                cg.set(res)
            except BaseException:
                msg = None if direct else chan.recv()  # learn the init's pid, to stop it
                if msg and msg.get("op") == "pid":
                    ctr.data["pid"] = msg["pid"]
                    ctr.data["starttime"] = proc_starttime(msg["pid"])
                raise
        trace('cg set')
        init_pid = pid if direct else recv(chan, "pid")["pid"]
        ctr.data["pid"] = init_pid
        trace('pre-join')
        files = cg.self_join_files() if cg is not None and self_join and not early else None
        if cg is not None and not early and not files:
            join_cgroup(cg, init_pid)
        trace('joined')
        send(chan, "cgroup", join=files)  # the init waits on this (and joins itself by files)
        if not direct:
            os.waitpid(pid, 0)  # stage 1 is exiting (~1-3 ms of mm teardown): after the join
            reaped = True
        ctr.data["starttime"] = proc_starttime(init_pid)
        hk = cfg.get("hooks")
        if init_hooks_wait(hk):
            ctr.save()  # the hooks may ask for the state (pid); else create()'s last save does
            recv(chan, "hooks")
            state = dict(hook_state, pid=init_pid)
            hooks.run_hooks(hk, "prestart", state)
            hooks.run_hooks(hk, "createRuntime", state)
            send(chan, "go")
        trace('go2')
        recv(chan, "ready")
        reaped = True  # done: a direct init lives on (run reaps it)
    finally:
        chan.close()
        if not reaped:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass


def _fork_in_pidns(cfg: dict[str, Any]) -> int:
    """fork() with the child as pid 1 of a new pid namespace, or in the one named by path, when
    the spec asks (see init.direct_ok); this process stays in its own, its later children
    (hooks) too."""
    nss = (cfg.get("linux") or {}).get("namespaces") or []
    idx = next((i for i, n in enumerate(nss) if n["type"] == "pid"), None)
    if idx is None:
        return os.fork()
    from isle.sys import libc as L

    sysc = L.LinuxSyscalls()
    path = nss[idx].get("path")
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            if path:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    sysc.setns(fd, L.CLONE_NEWPID)
                finally:
                    os.close(fd)
            else:
                sysc.unshare(L.CLONE_NEWPID)
        except OSError as exc:
            field = f"linux.namespaces[{idx}]" + (".path" if path else "")
            raise ConfigError(field, f"{'setns ' + path if path else 'unshare'} pid: "
                              f"{os.strerror(exc.errno or 0)}") from None
        try:
            pid = os.fork()
        except BaseException:
            sysc.setns(own, L.CLONE_NEWPID)
            raise
        if pid:
            sysc.setns(own, L.CLONE_NEWPID)  # our later children (hooks) stay in our pid ns
        return pid
    finally:
        os.close(own)


def join_cgroup(cg: Any, pid: int) -> None:
    try:
        cg.apply(pid)
    except OSError as exc:
        raise IsleError(f"joining cgroup: {exc}") from None


def send(chan: Any, op: str, **kw: Any) -> None:
    """Send op; if the child already died, raise the error it left in the pipe instead."""
    try:
        chan.send(op=op, **{k: v for k, v in kw.items() if v is not None})
    except BrokenPipeError:
        recv(chan, "(an error)")
        raise IsleError("container init exited unexpectedly") from None


def recv(chan: Any, op: str) -> dict[str, Any]:
    msg = chan.recv()
    if msg is None:
        raise IsleError(f"container init exited unexpectedly (waiting for {op})")
    if "error" in msg:
        raise child_error(msg["error"])
    if msg.get("op") != op:
        raise IsleError(f"protocol error: expected {op!r}, got {msg!r}")
    return msg  # type: ignore[no-any-return]


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


FWD_SIGNALS = (2, 15, 1, 3, 10, 12, 28)  # INT TERM HUP QUIT USR1 USR2 WINCH
_pending: list[int] = []


def hold_signals() -> None:
    """Catch terminal signals from before the init exists; wait_forwarding delivers them."""
    import _signal  # `signal` wraps it in enums (~3 ms)

    for s in FWD_SIGNALS:
        _signal.signal(s, lambda sig, _f: _pending.append(sig))


def wait_forwarding(pid: int) -> int:
    """Wait for pid (we are its subreaper), forwarding terminal signals; -> exit code."""
    import _signal

    def fwd(sig: int, _frame: Any) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for s in FWD_SIGNALS:
        _signal.signal(s, fwd)
    while _pending:  # signals that arrived while the container was being made
        fwd(_pending.pop(0), None)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if wpid == pid:
            return _exit_code(status)


def check_pidns_started(cfg: dict[str, Any]) -> None:
    """A container that joins a pid namespace by path, and may trace (CAP_SYS_PTRACE), must not
    join one whose init is still isle's own, waiting on exec.fifo (a created, not started
    container: see may_ptrace_init); it shows "isle-runtime init" as its command line."""
    nss = (cfg.get("linux") or {}).get("namespaces") or []
    idx = next((i for i, n in enumerate(nss) if n["type"] == "pid" and n.get("path")), None)
    if idx is None or not may_ptrace_init(cfg, cfg.get("process") or {}):
        return
    try:
        want = os.readlink(nss[idx]["path"]) if nss[idx]["path"].startswith("/proc/") else (
            f"pid:[{os.stat(nss[idx]['path']).st_ino}]")
    except OSError:
        return  # check_support / the join report a bad path
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != want:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                unstarted = f.read(18) == b"isle-runtime init\0"
        except OSError:
            continue
        if unstarted:
            raise InvalidState(f"linux.namespaces[{idx}].path: the pid namespace's init has not "
                               "started its process yet (isle's init waits for `start`, and a "
                               "process with CAP_SYS_PTRACE could trace it); start that "
                               "container first")


def may_ptrace_init(cfg: dict[str, Any], proc: dict[str, Any]) -> bool:
    """Whether an exec'd process could trace a created container's init, which is still isle's
    Python waiting on exec.fifo (non-dumpable: only CAP_SYS_PTRACE over the host's user namespace
    reaches its /proc/1/exe, environ and memory; see reexec.py)."""
    if any(n["type"] == "user" for n in (cfg.get("linux") or {}).get("namespaces") or []):
        return False  # its CAP_SYS_PTRACE is over the container's user namespace only
    caps = proc.get("capabilities")
    return caps is None or any("CAP_SYS_PTRACE" in (v or []) for v in caps.values())
