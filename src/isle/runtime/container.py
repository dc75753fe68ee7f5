"""The container lifecycle, runtime side: create, start, kill, delete, run, exec, pause, resume.

    c = create(root, "c1", bundle)        # init waits on exec.fifo; state "created"
    start(root, "c1")                     # init execs the process; poststart hooks run
    kill(root, "c1", 15); delete(root, "c1", force=True)

The verbs only: the launch pipeline (spec checks, cgroup, the init's fork, id maps, hooks) is in
runtime/launch.py, taking a container apart in runtime/teardown.py; both are imported by the
verbs that need them, so `start`, `state` and `kill` load neither. Every failure in create undoes
what it did (process, cgroup, state dir) before raising.
"""

from __future__ import annotations

import os

from isle.errors import ConfigError, InvalidState, IsleError, Unsupported
from isle.runtime.state import (
    CREATED,
    CREATING,
    PAUSED,
    RUNNING,
    STOPPED,
    Container,
    alive,
    trace,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["create", "start", "kill", "delete", "run", "exec_process", "pause", "resume",
           "Options"]


class Options:
    """Flags shared by create/run/exec (runc's)."""

    def __init__(self, **kw: Any) -> None:
        self.bundle: str = kw.get("bundle") or os.getcwd()
        self.pid_file: str | None = kw.get("pid_file")
        self.console_socket: str | None = kw.get("console_socket")
        self.no_pivot: bool = bool(kw.get("no_pivot"))
        self.no_new_keyring: bool = bool(kw.get("no_new_keyring"))
        self.preserve_fds: int = int(kw.get("preserve_fds") or 0)
        self.systemd_cgroup: bool = bool(kw.get("systemd_cgroup"))
        self.foreground: bool = bool(kw.get("foreground"))
        #: `run`: the init execs as soon as it is set up (no exec.fifo round trip with `start`)
        self.start_now: bool = bool(kw.get("start_now"))


def create(root: str, cid: str, opts: Options) -> Container:
    """The container in state "created", its init waiting on exec.fifo (see launch.py)."""
    from isle.runtime.launch import launch

    return launch(root, cid, opts)


def start(root: str, cid: str, foreground: bool = False) -> Container:
    import select

    ctr = Container(root, cid).load()
    status = ctr.status()
    if status != CREATED:
        raise InvalidState(f"cannot start a container that is {status}"
                           if status != STOPPED else "cannot start a container that has stopped")
    fd = os.open(ctr.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            if p.poll(100):
                if os.read(fd, 1):
                    break
            if not alive(ctr.pid, ctr.data.get("starttime")):
                raise IsleError("container init died before start")
    finally:
        os.close(fd)
    trace('fifo read')
    os.unlink(ctr.fifo)
    _poststart(ctr)
    return ctr


def _poststart(ctr: Container) -> None:
    hk = (ctr.data.get("config") or {}).get("hooks")
    if not hk or not hk.get("poststart"):
        return
    from isle.runtime import hooks
    from isle.runtime.teardown import warn

    for w in hooks.run_hooks(hk, "poststart", ctr.hook_state(RUNNING), warn_only=True):
        warn(w)


def kill(root: str, cid: str, sig: int, all_: bool = False) -> None:
    """Signal the init; with all_, every process in the container's cgroup, as runc does, even
    once the init has exited: containerd's shim asks so for what a container left behind in a
    pod's shared pid namespace (the init's death kills nothing there)."""
    ctr = Container(root, cid).load()
    status = ctr.status()
    cg = ctr.cgroup()
    if all_ and cg is not None:
        try:
            pids = cg.pids()
        except OSError:  # the cgroup went with the last process
            pids = []
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if sig == 9 and pids and (status == PAUSED or _frozen(cg)):
            cg.thaw()
        return
    if status == STOPPED:
        raise InvalidState("container not running")
    assert ctr.pid
    os.kill(ctr.pid, sig)
    if status == PAUSED and sig == 9 and cg is not None:
        cg.thaw()


def _frozen(cg: Any) -> bool:
    try:
        return bool(cg.frozen())
    except OSError:
        return False


def delete(root: str, cid: str, force: bool = False) -> None:
    ctr = Container(root, cid)
    if not ctr.exists():
        if force:
            return
        ctr.load()  # raises NotFound
    with ctr.lock():
        ctr.load()
        status = ctr.status()
        if status in (RUNNING, PAUSED) and not force:
            raise InvalidState(f"cannot delete container {cid} that is not stopped: {status}")
        from isle.runtime.teardown import destroy

        destroy(ctr, hooks=ctr.data.get("status") != CREATING)


def run(root: str, cid: str, opts: Options, detach: bool) -> int:
    from isle.runtime.launch import hold_signals, launch, wait_forwarding
    from isle.runtime.teardown import destroy
    from isle.sys import libc as L

    if not detach:
        opts.foreground = True
        L.LinuxSyscalls().prctl(L.PR_SET_CHILD_SUBREAPER, 1)
        hold_signals()  # the init runs the process at once: a signal must not kill us first
    opts.start_now = True  # create+start in one process: the init does not wait on exec.fifo
    ctr = launch(root, cid, opts)
    try:
        _poststart(ctr)
    except BaseException:
        destroy(ctr, hooks=True)
        raise
    trace('started')
    if detach:
        return 0
    code = wait_forwarding(ctr.data["pid"])
    trace('exited')
    destroy(ctr, hooks=True)  # the state we saved: nothing else rewrites it while we wait
    trace('destroyed')
    return code


def pause(root: str, cid: str) -> None:
    ctr = Container(root, cid).load()
    status = ctr.status()
    if status != RUNNING:
        raise InvalidState(f"cannot pause a container that is {status}")
    cg = ctr.cgroup()
    if cg is None:
        raise Unsupported("pause needs a freezer cgroup")
    cg.freeze()


def resume(root: str, cid: str) -> None:
    ctr = Container(root, cid).load()
    status = ctr.status()
    if status != PAUSED:
        raise InvalidState(f"cannot resume a container that is {status}")
    ctr.cgroup().thaw()


def exec_process(root: str, cid: str, proc: dict[str, Any], opts: Options,
                 detach: bool) -> int:
    from isle.runtime import reexec
    from isle.runtime.init import seccomp_program
    from isle.runtime.launch import (
        child_error,
        connect_console,
        may_ptrace_init,
        recv,
        send,
        wait_forwarding,
        write_pid_file,
    )
    from isle.sys import libc as L

    ctr = Container(root, cid).load()
    status = ctr.status()
    if status not in (RUNNING, CREATED):
        raise InvalidState(f"cannot exec in a {status} container")
    cfg = ctr.data["config"]
    if status == CREATED and may_ptrace_init(cfg, proc):
        raise InvalidState("cannot exec a process that may hold CAP_SYS_PTRACE into a created "
                           "container: its init is isle's own until `start` (it could be "
                           "traced); start the container first")
    if proc.get("terminal") and not opts.console_socket and detach:
        raise ConfigError("process.terminal", "needs --console-socket with --detach")
    console_fd = connect_console(opts.console_socket) if (
        opts.console_socket and proc.get("terminal")) else None
    if not detach:
        L.LinuxSyscalls().prctl(L.PR_SET_CHILD_SUBREAPER, 1)
    # the helper joins the container: a fresh interpreter from a sealed executable, with an
    # empty environment and only what it needs of the config (see reexec.py); it starts first,
    # and boots while this process looks up the cgroup and the seccomp program
    try:
        pid, chan = reexec.spawn(keep=(console_fd,), preserve=opts.preserve_fds)
    finally:
        if console_fd is not None:
            os.close(console_fd)
    reaped = False
    try:
        cg = ctr.cgroup()
        lx = cfg.get("linux") or {}
        need = {"namespaces": lx.get("namespaces") or [], "seccomp": lx.get("seccomp")}
        reexec.send_payload(chan, "exec", {
            "cfg": {"linux": need}, "proc": proc, "init_pid": ctr.data["pid"],
            "opts": reexec.payload_opts({"console_fd": console_fd,
                                         "preserve_fds": opts.preserve_fds,
                                         "seccomp_prog": seccomp_program(cfg)})})
        # as root the exec'd side joins the v1 cgroups itself (no grace period; see create)
        files = cg.self_join_files() if cg is not None and os.geteuid() == 0 else None
        if cg is not None and not files:
            cg.apply(pid)
        send(chan, "go", join=files)
        xpid = recv(chan, "pid")["pid"]
        os.waitpid(pid, 0)
        reaped = True
        msg = chan.recv()
        if msg is not None and "error" in msg:
            if not detach:
                wait_forwarding(xpid)
            raise child_error(msg["error"])
    except BaseException:
        chan.close()
        if not reaped:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        raise
    chan.close()
    write_pid_file(opts.pid_file, xpid)
    if detach:
        return 0
    return wait_forwarding(xpid)
