"""Foreground `run --rm` without a monitor: the CLI owns stdio and the exit code, the runtime
runs once.

`isle run --rm IMAGE CMD` (no -d, no tty) lives exactly as long as its container, so conmon and
the `create` + `start` pair are pure overhead there: the runtime's `run` does create + start +
wait + delete at once. With isle's own runtime and the CLI as caller, that `run` is
the runtime's in-process `run` in a fork of this process (no second interpreter start, no
imports; isle's runtimes declare it: caps.in_process); other runtimes whose `run` waits and
forwards signals (caps.direct_run: runc, crun) run as one `<runtime> run --pid-file P ID` child.
This is a capability of the runtime (engine/runtimes.py), not a bypass of the seam.
The bookkeeping is the supervisor's, as for a monitored start (write_bundle, fail_start,
discard): the record says "running" before the runtime starts and keeps the runtime process's
pid + start time as its monitor, so a SIGKILLed `isle` never makes `ps` lie (Supervisor.refresh
sees the monitor alive, then dead without an exit file). The container's own pid is adopted
from the pid file by Supervisor.refresh, so stop/kill/rm -f from elsewhere work as usual.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # `signal` adds enums (~3 ms)
import os
import time

from isle.engine.layout import alive, proc_start_time, read_int, write_file
from isle.engine.quiet import suppress
from isle.engine.reports import RunReport
from isle.errors import NotFound

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

    from isle.engine.db import ContainerRecord
    from isle.engine.options import RunOptions
    from isle.engine.supervisor import Supervisor

__all__ = ["eligible", "run_direct"]

_FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2)


def eligible(sup: Supervisor, opts: RunOptions, stdin_fd: int | None) -> bool:
    """Whether nothing but the CLI's own life is needed: no detach/tty/restart/logs afterwards."""
    s = sup.ctx.s
    if os.environ.get("ISLE_NO_DIRECT_RUN") or not opts.remove or opts.detach or opts.tty:
        return False
    if opts.restart.name != "no" or s.rootless or opts.healthcheck is not None:
        return False
    from isle.engine.runtimes import for_path

    if not _forkable(sup, for_path(opts.runtime or "", s.runtime_root)):
        # only a forked runtime can hand a killed CLI's work on (_watch_owner): another
        # runtime's `run` would leave a killed CLI's container unrecorded and never removed
        return False
    # the runtime goes into its own process group (signals reach it once, through us): a
    # terminal's stdin would stop it with SIGTTIN, so an interactive terminal keeps conmon
    return not (opts.interactive and stdin_fd is not None and os.isatty(stdin_fd))


def run_direct(sup: Supervisor, rec: ContainerRecord, opts: RunOptions, stdin_fd: int | None,
               stdout_fd: int, stderr_fd: int) -> RunReport | None:
    """Run the created record `rec` to its end; None: the image has a healthcheck (use conmon)."""
    from isle.engine import fastimage
    from isle.engine.health import healthcheck_of

    ctx = sup.ctx
    p = ctx.paths(rec.id)
    done_w = -1  # the forked runtime's watcher reads "done" here, or EOF if this CLI died
    img = fastimage.resolve(ctx, rec.image_id)
    if healthcheck_of(opts, img.config.get("config") or {}) is not None:
        return None
    oci = ctx.oci(rec)
    fork = _forkable(sup, oci)
    with ctx.locked(rec.id):
        os.makedirs(p.run, exist_ok=True)
        rootfs = fastimage.mount(ctx, img, p.bundle, copy=False, volatile=True)
        try:
            sup.write_bundle(rec, opts, img, rootfs)  # the record says "running" from here on
            if fork:
                mon, status_r, done_w = _fork_runtime(
                    sup, oci, rec.id, opts, p, stdin_fd, stdout_fd, stderr_fd)
            else:
                child = _spawn_runtime(oci, rec.id, opts, p, stdin_fd, stdout_fd)
                mon = child.pid
            ctx.db.update_container(rec.id, monitor_pid=mon, monitor_start=proc_start_time(mon),
                                    event="start")
        except BaseException as exc:
            sup.fail_start(rec, str(exc))
            raise
    try:
        return _finish(sup, rec, p, fork, mon if fork else child, status_r if fork else -1,
                       stderr_fd)
    finally:
        if done_w >= 0:  # all recorded and released: the watcher has nothing to do
            with suppress(OSError):
                os.write(done_w, b"k")
            os.close(done_w)


def _finish(sup: Supervisor, rec: ContainerRecord, p: Any, fork: bool, child: Any,
            status_r: int, stderr_fd: int) -> RunReport:
    from isle.engine.supervisor import classify_runtime_error

    if fork:
        code, started, err = _wait_forked(child, status_r, p, stderr_fd,
                                          rec.opts.get("sig_proxy", True))
    else:
        code, started, err = _wait_runtime(child, p, stderr_fd)
    with suppress(OSError):
        write_file(p.exit_file, str(code).encode())
    db = sup.ctx.db
    with sup.ctx.locked(rec.id):
        try:
            cur = db.get_container(rec.id)
        except NotFound:  # removed under us (rm -f): nothing left to record
            return RunReport(id=rec.id, name=rec.name, exit_code=code, removed=True)
        if not started:
            msg = err.decode(errors="replace").strip() or f"the runtime exited {code}"
            sup.fail_start(cur, msg)
            sup.discard(cur)
            raise classify_runtime_error(msg)
        db.update_container(rec.id, state="exited", exit_code=code, pid=0,
                            finished_at=time.time(), event="die", attrs={"exitCode": str(code)})
        cur.state, cur.pid = "exited", 0
        sup.discard(cur)
    return RunReport(id=rec.id, name=rec.name, exit_code=code, removed=True)


def _forkable(sup: Supervisor, oci: Any) -> bool:
    """A runtime with an in-process `run` (isle's: caps.in_process), and this process is the CLI
    (single-threaded, nothing else to serve): its `run` goes into a fork of this process, not a
    fresh interpreter (~25 ms: start + imports)."""
    return (sup.ctx.own_process and oci.caps.in_process
            and oci.caps.direct_run and not os.environ.get("ISLE_NO_FORK_RUNTIME"))


def _fork_runtime(sup: Supervisor, oci: Any, cid: str, opts: RunOptions, p: Any,
                  stdin_fd: int | None, stdout_fd: int,
                  stderr_fd: int) -> tuple[int, int, int]:
    """The runtime's in-process `run` (create + start + wait + delete: oci.run_in_process) in a
    forked child, which is what `<runtime> run` would be minus exec: its own process group, the
    container's subreaper, alive after a SIGKILLed CLI. It writes the exit file itself (the real
    code, its time) and leaves a watcher that does the CLI's part if the CLI is gone
    (_watch_owner).
    -> (its pid, read end of its error pipe, write end of the CLI's "done" pipe)."""
    import sys

    r, w = os.pipe2(os.O_CLOEXEC)
    dr, dw = os.pipe2(os.O_CLOEXEC)
    for f in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            f.flush()
    pid = os.fork()
    if pid:
        os.close(w)
        os.close(dr)
        return pid, r, dw
    code = 125
    try:  # the child: never returns into the engine
        os.close(r)
        os.close(dw)
        os.setpgid(0, 0)
        if opts.interactive and stdin_fd is not None:
            if stdin_fd != 0:
                os.dup2(stdin_fd, 0)
        else:  # the container's stdin: /dev/null
            nul = os.open(os.devnull, os.O_RDONLY)
            os.dup2(nul, 0)
            os.close(nul)
        for fd, want in ((stdout_fd, 1), (stderr_fd, 2)):
            if fd != want:
                os.dup2(fd, want)
        # nothing of the engine's: its db files, and the container lock's open file, whose
        # flock would stay held while this child lives (rm -f from elsewhere would wait on it)
        lo = 3
        for keep in sorted((w, dr)):
            os.closerange(lo, keep)
            lo = keep + 1
        os.closerange(lo, os.sysconf("SC_OPEN_MAX"))
        code = oci.run_in_process(sup.ctx.s, cid, p.bundle, p.pidfile)
    except BaseException as exc:  # noqa: BLE001 - reported through the pipe, then _exit
        with suppress(OSError):
            os.write(w, (str(exc) or type(exc).__name__).encode(errors="replace")[:4096])
    finally:
        try:
            with suppress(OSError):  # the real code, and FinishedAt = now, whoever records it
                write_file(p.exit_file, str(code).encode())
            _watch_owner(sup.exit_command(cid), dr)
        finally:
            os._exit(code)


def _watch_owner(exit_argv: list[str], done_r: int) -> None:
    """Fork a watcher that waits for the CLI's "done" on done_r: EOF without it means the CLI
    died before it recorded the exit and released (or removed) the container, so the watcher
    execs the exit command (what conmon runs for a monitored container). An exec, not a call:
    sqlite's state copied by fork is not safe to use (its locks belong to the CLI)."""
    if os.fork():
        return
    try:
        nul = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the caller's pipes open
            os.dup2(nul, fd)
        os.close(nul)
        if not os.read(done_r, 1):
            os.execv(exit_argv[0], exit_argv)
    finally:
        os._exit(0)


def _wait_forked(pid: int, status_r: int, p: Any, stderr_fd: int,
                 proxy: bool = True) -> tuple[int, bool, bytes]:
    """Wait for the forked runtime, proxying signals to the container (--sig-proxy=false: none;
    the CLI then dies of them, and the watcher finishes for it). -> (code, created, error)."""
    old = {sg: signal.signal(sg, _forwarder(pid, p.pidfile)) for sg in _FORWARD} if proxy else {}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for sg, h in old.items():
            signal.signal(sg, h)
    os.set_blocking(status_r, False)
    try:
        err = os.read(status_r, 65536)
    except BlockingIOError:  # a container process still holds the pipe: it reported nothing
        err = b""
    finally:
        os.close(status_r)
    code = os.waitstatus_to_exitcode(status)
    started = os.path.exists(p.pidfile)  # written once create succeeded
    if started and err:  # the container ran; the runtime failed after (clean-up)
        _write_all(stderr_fd, b"isle: " + err + b"\n")
    return (128 - code if code < 0 else code), started, err  # <0: the child was killed


def _spawn_runtime(oci: Any, cid: str, opts: RunOptions, p: Any,
                   stdin_fd: int | None, stdout_fd: int) -> Any:
    """Another runtime (runc, crun; isle's when not forkable): its `run` in a child process."""
    from isle.sys import proc

    argv = oci.run_argv(cid, p.bundle, p.pidfile)
    stdin = stdin_fd if (opts.interactive and stdin_fd is not None) else proc.DEVNULL
    return proc.spawn(argv, stdin=stdin, stdout=stdout_fd, stderr=proc.PIPE, process_group=0)


def _wait_runtime(child: Any, p: Any, stderr_fd: int) -> tuple[int, bool, bytes]:
    old = {sg: signal.signal(sg, _forwarder(child.pid, p.pidfile)) for sg in _FORWARD}
    try:
        started, err = _pump_stderr(child.stderr.fileno(), stderr_fd, p.pidfile)
        child.stderr.close()
        code = child.wait()
    finally:
        for sg, h in old.items():
            signal.signal(sg, h)
    return (128 - code if code < 0 else code), started, err  # <0: the runtime itself was killed


def _forwarder(pid: int, pidfile: str) -> Any:
    """Docker's sig-proxy, to the container's init. The runtime's `run` may let the init exec
    before it writes the pid file and forwards signals itself, so a signal in that window waits
    (up to 2 s, only then) for the pid file; failing that it goes to the runtime (start aborted)."""
    start = proc_start_time(pid)

    def fwd(sig: int, _f: Any) -> None:
        with suppress(OSError):
            for _ in range(400):
                cpid = read_int(pidfile) or 0
                if cpid and proc_start_time(cpid):
                    os.kill(cpid, sig)
                    return
                if not alive(pid, start):
                    return
                time.sleep(0.005)
            os.kill(pid, sig)
    return fwd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pump_stderr(src: int, dst: int, pidfile: str) -> tuple[bool, bytes]:
    """Copy the runtime's stderr to ours; until its pid file exists, hold it back (a failed
    create is reported once, as isle's error). -> (the container was created, held bytes)."""
    held, started = b"", False
    while True:
        chunk = os.read(src, 65536)
        if not started and (os.path.exists(pidfile) or not chunk):
            started = os.path.exists(pidfile)
            if started and held:
                _write_all(dst, held)
                held = b""
        if not chunk:
            return started, held
        if started:
            _write_all(dst, chunk)
        else:
            held += chunk
