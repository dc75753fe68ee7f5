"""The VM runtime's verbs: `run` in the foreground, or `create` under a detached monitor then
`start`/`kill`/`pause`/`resume`/`delete`; OCI hooks run on the host. The parts live in `boot`
(prepare and launch), `monitor` (the per-VM monitor process) and `control` (asking a running
monitor: exec, ps, stats); their public names are re-exported here."""

from __future__ import annotations

import os
import signal
from typing import Any

from isle.config import Settings
from isle.errors import ConfigError, VMError
from isle.oci import runtime_spec
from isle.runtime.vm import pod
from isle.runtime.vm import state as st
from isle.runtime.vm.boot import (
    Prepared,
    boot_of,
    console,
    drain_relays,
    drop_cgroup,
    launch,
    make_cgroup,
    net_state,
    prepare,
    procs_files,
    stdin_wanted,
    unplug,
)
from isle.runtime.vm.control import ask, exec_, guest_ps, guest_stats, qemu_pss
from isle.runtime.vm.monitor import FAILED, READY_TIMEOUT, listen, run_monitor, serve
from isle.vm.microvm import MicroVM

__all__ = [
    "Prepared",
    "prepare",
    "boot_of",
    "stdin_wanted",
    "procs_files",
    "drop_cgroup",
    "run",
    "create",
    "start",
    "kill",
    "delete",
    "pause",
    "resume",
    "exec_",
    "READY_TIMEOUT",
    "FAILED",
    "guest_ps",
    "guest_stats",
    "qemu_pss",
    "console",
]


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
        net_state(s, p)
        s.cgroup, files = make_cgroup(cid, p)
        st.save(root, s)
        vm = launch(p, settings, 1, 2, cgroup_files=files)
        hooks = p.cfg.get("hooks")
        if hooks:  # as create + start would: a failing one ends the run before the process
            _hooks_save(root, cid, hooks)
            for kind in CREATE_HOOKS:
                _run_hooks(root, cid, kind)
        vm.send_job(p.script)
        if hooks:
            _run_hooks(root, cid, "poststart", warn_only=True)
        lsock = listen(vm)
        s.qemu_pid, s.rundir = vm.pid, vm.rundir
        s.pid_start, s.qemu_start = st.starttime(s.pid), st.starttime(vm.pid)
        st.save(root, s)
        _write_pid(pid_file, os.getpid())
        try:
            return serve(root, s, p, vm, lsock, job_sent=True, forward_signals=True)
        finally:
            lsock.close()
    finally:
        if vm is not None:
            vm.close()
        drain_relays()
        if p is not None and p.tty_fd >= 0:
            os.close(p.tty_fd)
        if restore is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, restore)
        if s is not None:
            unplug(s)
        drop_cgroup(s.cgroup if s is not None else None)
        if s is not None and p is not None and p.cfg.get("hooks"):
            _run_hooks(root, cid, "poststop", warn_only=True)
        st.remove(root, cid)
        del d


# -- detached: create / start / kill -------------------------------------------------------------
def create(
    cid: str, bundle: str, root: str, settings: Settings, pid_file: str | None = None,
    console_socket: str | None = None,
) -> None:
    """Boot the VM to 'ready' under a detached monitor; the job waits for `start`."""
    d = st.create_dir(root, cid)
    sandbox = False
    try:
        cfg = runtime_spec.load(os.path.join(os.path.abspath(bundle), "config.json"))
        if pod.role(cfg.get("annotations"))[0] == "sandbox":  # a CRI pod's VM
            sandbox = True
            cfg = pod.sandbox_config(root, cid, cfg)
        p = prepare(bundle, settings, stdin=stdin_wanted(0), cfg=cfg)
        if sandbox:
            p = pod.as_sandbox(p)
        if p.terminal:
            if not console_socket:
                raise ConfigError("process.terminal",
                                  "a detached container with a terminal needs --console-socket")
            p.tty_fd = console(console_socket)
    except BaseException:
        _undo(root, cid, sandbox)
        raise
    s = st.State(id=cid, bundle=os.path.abspath(bundle), annotations=p.cfg.get("annotations") or {})
    net_state(s, p)
    try:
        s.cgroup, files = make_cgroup(cid, p)
    except BaseException:
        _undo(root, cid, sandbox)
        raise
    st.save(root, s)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # intermediate: new session, then the monitor, so it is nobody's child but init's
        os.close(r)
        try:
            os.setsid()
            if os.fork() == 0:
                code = run_monitor(root, s, p, settings, w, files)
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
        _undo(root, cid, sandbox)
        raise VMError(msg or "the VM monitor died before the guest was ready")
    _write_pid(pid_file, int(msg.split()[1]))
    del d
    try:  # OCI hooks run on the host, as isle-runtime runs them; a failing one undoes the create
        _hooks_save(root, cid, p.cfg.get("hooks"))
        for kind in CREATE_HOOKS:
            _run_hooks(root, cid, kind)
    except BaseException:
        delete(cid, root, force=True)
        raise


def _undo(root: str, cid: str, sandbox: bool) -> None:
    """A create that failed: its state, and a pod sandbox's shared directory."""
    if sandbox:
        pod.teardown_sandbox(root, cid)
    st.remove(root, cid)


#: run on the host once the VM exists, before its process starts. createContainer hooks belong in
#: the container's namespaces, which are the guest's: a host binary cannot run there, so they run
#: here too, after createRuntime (as Kata's runtime does); startContainer hooks (a binary inside the
#: container) are refused by spec.to_job rather than skipped
CREATE_HOOKS = ("prestart", "createRuntime", "createContainer")


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


def start(cid: str, root: str) -> None:
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status != "created":
        raise InvalidState(f"container {cid} is {s.status}, not created")
    ask(s, "start")
    _run_hooks(root, cid, "poststart", warn_only=True)


def kill(cid: str, root: str, sig: int, all: bool = False) -> None:
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status not in ("created", "running", "paused"):
        # runc's words: containerd's runc shim takes "container not running" after a kill as
        # "already finished" (anything else fails the CRI's StopPodSandbox, which then retries)
        raise InvalidState(f"container not running: {cid} is {s.status}")
    ask(s, f"kill {sig}" + (" all" if all else ""), timeout=10)


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
    unplug(s)
    drop_cgroup(s.cgroup)
    if s.rundir and os.path.basename(s.rundir).startswith("isle-vm-"):
        shutil.rmtree(s.rundir, ignore_errors=True)
    if pod.role(s.annotations)[0] == "sandbox":  # its containers' leftovers, its shared dir
        pod.teardown_sandbox(root, cid)
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


