"""The supervisor: starts a container through the runtime seam (conmon + `runtime create` +
`runtime start`, or the monitor-less foreground run of direct.py where the runtime declares
it), re-derives the truth about a live one (`refresh`), signals it, and releases what a dead
one held. Every container verb (containers.py) goes through it; it holds no state of its own
beyond the shared Context.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # `signal` adds enums (~3 ms)
import os
import sys
import time

from isle.engine import bundle
from isle.engine.db import ContainerRecord
from isle.engine.layout import alive, proc_start_time, read_int, rmtree, write_file
from isle.engine.options import RunOptions
from isle.engine.quiet import nullcontext, suppress
from isle.engine.reports import CannotInvoke, CommandNotFound, RunReport
from isle.errors import CommandError, IsleError, NotFound
from isle.oci.fastjson import dumps

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    import socket
    from typing import Any

    from isle.engine.context import Context

__all__ = ["Supervisor", "classify_runtime_error"]

#: how long a look at a record whose starter died waits for the lock's holder to settle it
SETTLE_WAIT = 10.0
INTERRUPTED = "the start was interrupted"


def classify_runtime_error(msg: str) -> IsleError:
    """Runtime create/start stderr -> Docker's 127 (not found) / 126 (cannot invoke) / 125."""
    low = msg.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return CommandNotFound(msg.strip())
    if "permission denied" in low or "is a directory" in low or "exec format error" in low:
        return CannotInvoke(msg.strip())
    return IsleError(msg.strip() or "the runtime failed to start the container")


class Supervisor:
    """start / refresh / signal / release of one container at a time, over a Context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def get(self, ref: str) -> ContainerRecord:
        """A container record by id, name or id prefix, its state brought up to date."""
        return self.refresh(self.ctx.db.get_container(ref))

    def records(self, *, all: bool = False) -> list[ContainerRecord]:
        """Every record (all) or the live ones, each brought up to date."""
        out = []
        for rec in self.ctx.db.list_containers():
            try:
                rec = self.refresh(rec)
            except NotFound:  # removed meanwhile (its --rm, an rm -f elsewhere): not listed
                continue
            if all or rec.state in ("running", "paused"):
                out.append(rec)
        return out

    def exit_command(self, cid: str, owner: bool = False) -> list[str]:
        """owner: this process (a foreground `run`) records and removes the container itself;
        the exit command waits for it and does that only if it died first (exitcmd.py)."""
        s = self.ctx.s
        args = [s.root, s.runroot, cid]
        if owner:
            args += [str(os.getpid()), str(proc_start_time(os.getpid()))]
        if s.rootless:
            from isle.engine.rootless import python_argv

            return python_argv("isle.engine.exitcmd") + args
        return [sys.executable, "-m", "isle.engine.exitcmd", *args]

    def write_bundle(self, rec: ContainerRecord, opts: RunOptions, img: Any,
                     rootfs: str) -> dict[str, Any]:
        """config.json into the bundle (bundle.assemble), then the record says "running" before
        any monitor exists: if the starter dies from here on, refresh finds the monitor and the
        container through their pid files and never reports a live one as created. Both start
        paths (start, direct.run_direct) go through here; the caller holds the lock. The starter
        (this process) is named in the run dir: while the record has no pid, only it may hold
        the lock and leave the record "running" (refresh)."""
        spec = bundle.assemble(self.ctx, rec, opts, img, rootfs, self.get)
        p = self.ctx.paths(rec.id)
        write_file(p.config, dumps(spec).encode())
        me = os.getpid()
        write_file(p.starter, f"{me} {proc_start_time(me)}".encode())
        self.ctx.db.update_container(rec.id, state="running", pid=0, pid_start=0, monitor_pid=0,
                                     monitor_start=0, started_at=time.time(), finished_at=0.0,
                                     exit_code=0, oom_killed=False, error="")
        return spec

    # -- start --------------------------------------------------------------------------------
    def start(self, rec: ContainerRecord, *, attach: bool,
              foreground: bool) -> socket.socket | None:
        """conmon -> `runtime create`; then `runtime start`. Caller holds the container lock."""
        from isle.engine.monitor import (
            LOG_SIZE_MAX,
            MonitorArgs,
            conmon_argv,
            conmon_path,
            connect_attach,
            read_sync,
        )
        from isle.sys import proc

        p = self.ctx.paths(rec.id)
        opts = RunOptions.from_dict(rec.opts)
        oci = self.ctx.oci(rec)
        self.release(rec, final=False)
        for d in (p.run, p.exit_dir, p.socket_dir, p.bundle):
            os.makedirs(d, exist_ok=True)
        for f in (p.exit_file, p.oom_file, p.pidfile, p.monitor_pidfile,
                  os.path.join(p.exit_dir, rec.id)):
            with suppress(FileNotFoundError):
                os.unlink(f)
        from isle.engine import fastimage

        img = fastimage.resolve(self.ctx, rec.image_id)
        rootfs = fastimage.mount(self.ctx, img, p.bundle, copy=self.ctx.s.rootless)
        sock = None
        try:
            self.write_bundle(rec, opts, img, rootfs)
            # always: a foreground CLI may be killed, and then the exit command records the
            # exit and honours --rm (it waits while the CLI, the owner, lives)
            owner = foreground and opts.restart.name == "no"
            margs = MonitorArgs(
                container_id=rec.id, name=rec.name, runtime_path=oci.path,
                runtime_root=oci.root, runtime_args=oci.args, bundle=p.bundle, persist_dir=p.run,
                exit_dir=p.exit_dir, socket_dir=p.socket_dir, log_path=p.log,
                stdin=opts.interactive, tty=opts.tty,  # -i: open for a later attach too
                leave_stdin_open=opts.interactive and not opts.stdin_once,
                exit_command=self.exit_command(rec.id, owner=owner),
                conmon=conmon_path(), log_size_max=opts.log_max_size or LOG_SIZE_MAX)
            argv = conmon_argv(margs)
            r, w = os.pipe()
            env = dict(os.environ)
            env["_OCI_SYNCPIPE"] = str(w)
            try:
                with open(os.path.join(p.run, "conmon.err"), "wb") as errf:
                    child = proc.spawn(argv, pass_fds=(w,), env=env, stdin=proc.DEVNULL,
                                       stdout=errf, stderr=errf, close_fds=True,
                                       cwd=p.run)  # conmon drops an "oom" file in its cwd
                os.close(w)
                w = -1
                child.wait()
                try:
                    pid = read_sync(r, argv)
                except CommandError as exc:
                    raise classify_runtime_error(exc.stderr or str(exc)) from None
            finally:
                os.close(r)
                if w >= 0:
                    os.close(w)
            mon = read_int(p.monitor_pidfile) or 0
            if opts.network not in ("none", "host") and self.ctx.s.rootless:
                from isle.engine import netplug

                try:
                    more = netplug.after_start(self.ctx.s, rec.id, rec.name, pid, opts,
                                               img.config.get("config") or {})
                except BaseException:
                    with suppress(OSError):  # the record has no pid yet: fail_start cannot
                        os.kill(pid, signal.SIGKILL)  # and the init would wait on exec.fifo
                    raise
                if more:
                    rec.extra = {**rec.extra, **more}
                    self.ctx.db.update_container(rec.id, extra=rec.extra)
            self.ctx.db.update_container(rec.id, state="running", pid=pid,
                                         pid_start=proc_start_time(pid), monitor_pid=mon,
                                         monitor_start=proc_start_time(mon), started_at=time.time(),
                                         finished_at=0.0, exit_code=0, oom_killed=False, error="",
                                         event="start")
            from isle.engine.health import healthcheck_of, spawn_loop

            if healthcheck_of(opts, img.config.get("config") or {}) is not None:
                extra = dict(rec.extra)
                extra["health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
                self.ctx.db.update_container(rec.id, extra=extra)
                spawn_loop(self.ctx.s, rec.id)
            if attach:
                sock = connect_attach(p.bundle)
            try:
                oci.start(rec.id)
            except CommandError as exc:
                raise classify_runtime_error(exc.stderr or str(exc)) from None
            return sock
        except BaseException as exc:
            if sock is not None:
                sock.close()
            self.fail_start(rec, str(exc))
            raise

    def fail_start(self, rec: ContainerRecord, err: str) -> None:
        with suppress(Exception):
            self.signal(rec, signal.SIGKILL)
        with suppress(Exception):
            self.release(rec, final=False)
        with suppress(Exception):
            code = 127 if "not found" in err else 126 if "permission denied" in err else 128
            # a container that never ran stays "created" (Docker's: its ExitCode and Error set)
            self.ctx.db.update_container(rec.id, state="exited" if rec.started_at else "created",
                                         exit_code=code, pid=0, finished_at=time.time(),
                                         error=err[:2000], event="die")

    # -- foreground run -------------------------------------------------------------------------
    def run_foreground(self, rec: ContainerRecord, opts: RunOptions, stdin_fd: int | None,
                       stdout_fd: int, stderr_fd: int, *, direct: bool = False) -> RunReport:
        """Start `rec` and stream its I/O until it ends; its exit code. direct=True (`run`): the
        monitor-less run of direct.py where it is eligible (a capability the runtime declares,
        the same bookkeeping: write_bundle, fail_start, discard), else under conmon."""
        if direct:
            from isle.engine import direct as d

            if d.eligible(self, opts, stdin_fd):
                try:
                    rr = d.run_direct(self, rec, opts, stdin_fd, stdout_fd, stderr_fd)
                except BaseException:
                    self.remove_after_failure(rec, opts)
                    raise
                if rr is not None:
                    return rr
        return self._monitored_foreground(rec, opts, stdin_fd, stdout_fd, stderr_fd)

    def _monitored_foreground(self, rec: ContainerRecord, opts: RunOptions, stdin_fd: int | None,
                              stdout_fd: int, stderr_fd: int) -> RunReport:
        from isle.engine.attach import pump, raw_terminal, wait_pid_exit

        p = self.ctx.paths(rec.id)
        try:
            with self.ctx.locked(rec.id):
                sock = self.start(rec, attach=True, foreground=True)
        except BaseException:
            self.remove_after_failure(rec, opts)
            raise
        rec = self.ctx.db.get_container(rec.id)
        assert sock is not None
        old: dict[int, Any] = {}
        if opts.sig_proxy:  # Docker's sig-proxy, with a tty too (a terminal's ^C is a byte)
            def _fwd(sig: int, _f: Any) -> None:
                with suppress(Exception):
                    self.signal(rec, sig)  # through the runtime where it must (a VM's guest)
            for sg in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                       signal.SIGUSR1, signal.SIGUSR2):
                old[sg] = signal.signal(sg, _fwd)
        resize = None
        if opts.tty and stdin_fd is not None and os.isatty(stdin_fd):
            resize = _resizer(p.bundle, stdin_fd)
        try:
            raw = opts.tty and opts.interactive and stdin_fd is not None
            with raw_terminal(stdin_fd) if raw and stdin_fd is not None else nullcontext():
                pump(sock, stdin_fd=stdin_fd if opts.interactive else None,
                     stdout_fd=stdout_fd, stderr_fd=stderr_fd, on_resize=resize)
        finally:
            sock.close()
            for sg, h in old.items():
                signal.signal(sg, h)
        if alive(rec.monitor_pid, rec.monitor_start):
            wait_pid_exit(rec.monitor_pid, 30)
        code = read_int(p.exit_file)
        if code is None:
            for _ in range(200):
                time.sleep(0.005)
                code = read_int(p.exit_file)
                if code is not None:
                    break
        if opts.restart.name != "no":  # the exit command owns the record from here
            return RunReport(id=rec.id, name=rec.name, exit_code=code if code is not None else 255)
        with self.ctx.locked(rec.id):
            rec = self.refresh(self.ctx.db.get_container(rec.id))
            if opts.remove:
                self.discard(rec)
            else:
                self.release(rec, final=False)
        return RunReport(id=rec.id, name=rec.name, exit_code=rec.exit_code, removed=opts.remove)

    # -- truth ----------------------------------------------------------------------------------
    def refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """Re-derive a live container's state from conmon's exit file and pid liveness."""
        if rec.state not in ("running", "paused"):
            return rec
        p = self.ctx.paths(rec.id)
        code = read_int(p.exit_file)
        if code is None:
            if alive(rec.pid, rec.pid_start):
                if rec.monitor_pid and not rec.error \
                        and not alive(rec.monitor_pid, rec.monitor_start):
                    from isle.engine.monitor import note_monitor_lost

                    rec.error = note_monitor_lost(p.log)  # the loss visible: inspect, logs
                    self.ctx.db.update_container(rec.id, error=rec.error)
                return rec
            if alive(rec.monitor_pid, rec.monitor_start):
                if not rec.pid:  # a monitor-less foreground run (direct.py): adopt the pid file
                    cpid = read_int(p.pidfile) or 0
                    if proc_start_time(cpid):
                        rec.pid, rec.pid_start = cpid, proc_start_time(cpid)
                        self.ctx.db.update_container(rec.id, pid=cpid, pid_start=rec.pid_start)
                return rec
            if not rec.pid:  # a start in progress or cut short
                if self.ctx.lock_busy(rec.id):
                    if _starter_alive(p.starter):
                        return rec  # its starter is at it right now
                    return self._settled_by_holder(rec)
                cpid = read_int(p.pidfile) or 0
                if proc_start_time(cpid):
                    st = self.ctx.oci(rec).state(rec.id) or {}
                    if st.get("status") in ("running", "paused"):
                        self.ctx.db.update_container(rec.id, pid=cpid,
                                                     pid_start=proc_start_time(cpid))
                        rec.pid, rec.pid_start = cpid, proc_start_time(cpid)
                        return rec
                    # created but never started: the starter died; undo it, say so
                    self.fail_start(rec, INTERRUPTED)
                    return self.ctx.db.get_container(rec.id)
            code = read_int(p.exit_file)  # written between our two looks
        if code is None and _reaped_soon(rec.monitor_pid):
            return rec  # its parent (a foreground `isle run` waiting for it) records the end
        err = ""
        orphaned = code is None  # no monitor recorded the end, nor will it run the exit command
        if code is None:
            from isle.engine.monitor import lost_exit

            code, err = lost_exit(self.ctx.oci(rec), rec.id, rec.error)
            finished = time.time()
        else:
            try:
                finished = os.stat(p.exit_file).st_mtime
            except OSError:
                finished = time.time()
            if code and self.ctx.oci(rec).caps.has_guest:  # a QEMU crash: the runtime's reason
                from isle.engine.monitor import runtime_error

                err = runtime_error(self.ctx.oci(rec), rec.id)
        oom = os.path.exists(p.oom_file)
        if not self.ctx.db.update_container(rec.id, state="exited", exit_code=code, pid=0,
                                            finished_at=finished, oom_killed=oom, error=err,
                                            event="oom" if oom else "die",
                                            attrs={"exitCode": str(code)},
                                            when_state=("running", "paused")):
            return self.ctx.db.get_container(rec.id)  # another process recorded the end first
        rec.state, rec.exit_code, rec.pid, rec.finished_at, rec.oom_killed, rec.error = (
            "exited", code, 0, finished, oom, err)
        if orphaned:  # its monitor died first: run the exit command it would have (--rm, release)
            from isle.sys import proc

            with suppress(Exception):
                proc.spawn(self.exit_command(rec.id), stdin=proc.DEVNULL, stdout=proc.DEVNULL,
                           stderr=proc.DEVNULL, start_new_session=True)
        return rec

    def _settled_by_holder(self, rec: ContainerRecord) -> ContainerRecord:
        """rec says a start is in progress (running, no pid), but its starter died (SIGKILLed
        between `runtime create` and `runtime start`) and another process holds the lock: the
        exit command conmon ran, an rm, a stop or a new start, each of which settles the record
        first (this refresh under the lock). Their answer, not a "running" without a pid that
        the next look contradicts: wait for it (the record changes or the lock is let go); if
        it takes longer than SETTLE_WAIT, the same answer, unrecorded."""
        p = self.ctx.paths(rec.id)
        end = time.monotonic() + SETTLE_WAIT
        while time.monotonic() < end:
            time.sleep(0.01)
            cur = self.ctx.db.get_container(rec.id)  # NotFound: removed by the holder
            if (cur.pid or cur.state not in ("running", "paused") or _starter_alive(p.starter)
                    or not self.ctx.lock_busy(rec.id)):
                return self.refresh(cur)
        rec.state, rec.exit_code, rec.pid, rec.finished_at = "exited", 128, 0, time.time()
        rec.error = rec.error or INTERRUPTED
        return rec

    def signal(self, rec: ContainerRecord, sig: int) -> None:
        """Signal the container's init (what `runtime kill ID SIG` does, minus a process start);
        SIGKILL of a pid namespace's init takes every process in it along."""
        if not alive(rec.pid, rec.pid_start):
            return
        rt = self.ctx.oci(rec)
        if not rt.caps.signals_host_pid:
            # e.g. isle-vm-runtime: the pid is the VM's host side; the runtime signals the guest
            if rt.kill(rec.id, int(sig), all_procs=sig == signal.SIGKILL):
                return
        try:
            os.kill(rec.pid, sig)
        except OSError:
            rt.kill(rec.id, int(sig), all_procs=sig == signal.SIGKILL)

    def kill_for_removal(self, rec: ContainerRecord) -> None:
        """rm -f: the monitor first (so no exit command runs for a record about to vanish),
        then the container; wait until its init is gone."""
        if alive(rec.monitor_pid, rec.monitor_start):
            with suppress(OSError):
                os.kill(rec.monitor_pid, signal.SIGKILL)
        self.signal(rec, signal.SIGKILL)
        self.wait_dead(rec, 10)

    def wait_dead(self, rec: ContainerRecord, timeout: float) -> bool:
        from isle.engine.attach import wait_pid_exit

        if not alive(rec.pid, rec.pid_start):
            return True
        wait_pid_exit(rec.pid, timeout)
        return not alive(rec.pid, rec.pid_start)

    def reap(self, rec: ContainerRecord) -> None:
        """After the container died: let conmon write its exit file, then record and release."""
        from isle.engine.attach import wait_pid_exit

        if alive(rec.monitor_pid, rec.monitor_start):
            wait_pid_exit(rec.monitor_pid, 10)
        with self.ctx.locked(rec.id):
            try:
                cur = self.refresh(self.ctx.db.get_container(rec.id))
            except NotFound:  # a `run --rm` that owned it has removed it already
                return
            if cur.state == "exited":
                self.release(cur, final=False)

    def release(self, rec: ContainerRecord, *, final: bool) -> None:
        """Give back what a (dead) container held: runtime state, cgroups, rootfs mount."""
        p = self.ctx.paths(rec.id)
        if alive(rec.pid, rec.pid_start) and rec.state not in ("running", "paused"):
            with suppress(OSError):
                os.kill(rec.pid, signal.SIGKILL)
        # the runtime's own state, through the runtime (its CLI, or its module where it declares
        # an in-process path): never by removing its state dir here
        self.ctx.oci(rec).release(rec.id, running=alive(rec.pid, rec.pid_start)
                                  or rec.state in ("running", "paused"))
        from isle.cgroups import remove_everywhere  # the runtime's fallback: it lost its state

        remove_everywhere(f"isle-{rec.id}")
        from isle.engine import netplug  # always: an `isle` killed mid-setup recorded no netns

        with suppress(Exception):
            netplug.teardown(self.ctx.s, rec.id, RunOptions.from_dict(rec.opts))
        from isle.engine import fastimage

        with suppress(Exception):
            fastimage.unmount(self.ctx, p.bundle)
        if not os.path.isdir(p.run) and not final:
            return
        for f in (os.path.join(p.exit_dir, rec.id), os.path.join(p.socket_dir, rec.id[:12])):
            with suppress(OSError):
                os.unlink(f)
        if final:
            rmtree(p.run)
            _rmtree_bundle(p.bundle)
            with suppress(OSError):
                os.unlink(p.lock)

    def discard(self, rec: ContainerRecord) -> None:
        """The end of an --rm container (or a failed start of one): release everything, drop
        the record, remove its anonymous volumes. The caller holds the lock."""
        self.release(rec, final=True)
        self.ctx.db.delete_container(rec.id)
        self.remove_anon_volumes(rec)

    def remove_after_failure(self, rec: ContainerRecord, opts: RunOptions) -> None:
        if opts.remove:
            with suppress(Exception):
                self.remove(rec.id, force=True, volumes=True)
        else:
            with suppress(Exception):  # never started: Docker's "Created" with the exit code
                self.ctx.db.update_container(rec.id,
                                             state="exited" if rec.started_at else "created",
                                             exit_code=128, finished_at=time.time())

    def remove(self, ref: str, *, force: bool = False,
               volumes: bool = False) -> ContainerRecord:
        """rm: a live container is killed first (force) and everything it held released."""
        from isle.engine.state import State
        from isle.errors import InvalidState

        rec = self.get(ref)
        if not State.of(rec.state).can_remove(force):
            raise InvalidState(f"cannot remove container {rec.name}: container is {rec.state}: "
                               "stop the container before removing or force remove")
        with self.ctx.locked(rec.id):
            try:
                rec = self.refresh(self.ctx.db.get_container(rec.id))
            except NotFound:  # another rm won the race: name the container as the caller did
                raise NotFound(f"no such container: {ref}") from None
            if rec.state in ("running", "paused"):
                self.ctx.db.update_container(rec.id, stopped_by_user=True)
                if rec.state == "paused":
                    with suppress(Exception):
                        self.ctx.oci(rec).resume(rec.id)
                self.kill_for_removal(rec)
                rec.state = "exited"
            self.release(rec, final=True)
            self.ctx.db.delete_container(rec.id)
        if volumes:
            self.remove_anon_volumes(rec)
        return rec

    def remove_anon_volumes(self, rec: ContainerRecord) -> None:
        from isle.engine.volumes import Volumes

        vols = Volumes(self.ctx.s, self.ctx.db)
        for m in RunOptions.from_dict(rec.opts).mounts:
            if m.type == "volume" and m.anonymous and m.source:
                with suppress(NotFound):
                    vols.remove(m.source, self.ctx.volume_users(m.source))


def _rmtree_bundle(bundle: str) -> None:
    rootfs = os.path.join(bundle, "rootfs")
    from isle.sys import procfs

    with suppress(OSError):
        if rootfs in procfs.mountpoints():
            return  # never recurse into a live mount
    rmtree(bundle)
    if os.path.lexists(bundle) and os.geteuid() != 0:
        from isle.engine import buildns  # files of the user's subordinate ids (chown inside)

        buildns.rmtree(bundle)


def _resizer(bundle: str, fd: int) -> Any:
    import fcntl
    import struct
    import termios

    def resize() -> None:
        with suppress(OSError):
            rows, cols = struct.unpack("hhhh", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
            ctl = os.path.join(bundle, "ctl")
            wfd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(wfd, f"1 {rows} {cols}\n".encode())
            finally:
                os.close(wfd)
    return resize


def _starter_alive(path: str) -> bool:
    """The process write_bundle named as the container's starter is still there."""
    try:
        with open(path) as f:
            pid, start = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return False
    return alive(pid, start)


def _reaped_soon(pid: int) -> bool:
    """pid is a zombie whose parent is not the host's init: an isle process about to wait for
    it (a killed conmon's parent is init, which may take its time to reap)."""
    from isle.sys.procfs import ppid, state

    return pid > 0 and state(pid) == "Z" and (ppid(pid) or 1) != 1
