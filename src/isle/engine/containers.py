"""Container verbs: create, start, run, stop, kill, restart, pause, unpause, wait, rm, prune,
rename, cleanup. Each checks the State guard, takes the container's lock and asks the
supervisor (supervisor.py) to start, signal, refresh or release; nothing here touches a
process or a mount itself.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # `signal` adds enums (~3 ms)
import os
import time

from isle.engine.db import ContainerRecord
from isle.engine.layout import alive
from isle.engine.names import check_name, random_name
from isle.engine.options import RunOptions, check_env_size, parse_signal
from isle.engine.quiet import suppress
from isle.engine.reports import CreateReport, PruneReport, RmReport, RunReport
from isle.engine.state import State, restart_delay, should_restart
from isle.errors import ConfigError, InvalidState, NotFound

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

    from isle.engine.context import Context
    from isle.engine.supervisor import Supervisor

__all__ = ["Containers"]


class Containers:
    """The container verbs over a Context (records, locks) and a Supervisor (processes)."""

    def __init__(self, ctx: Context, sup: Supervisor) -> None:
        self.ctx, self.sup = ctx, sup

    # -- create / start / run ------------------------------------------------------------------
    def create(self, opts: RunOptions) -> CreateReport:
        from isle.engine.runtimes import pick

        pick(self.ctx.s, opts)  # --isolation/--runtime -> opts.runtime (a path), opts.isolation
        if opts.remove and opts.restart.name != "no":
            raise ConfigError("--restart", "conflicting options: --restart and --rm")
        check_env_size(opts.env)
        from isle.engine import netplug

        netplug.validate(self.ctx.s, opts, lookup=self.sup.get)
        if opts.stop_signal:
            parse_signal("--stop-signal", opts.stop_signal)
        from isle.engine import fastimage
        from isle.engine.spec import _resources, command_line

        img = fastimage.resolve(self.ctx, opts.image)

        command_line(opts, img.config.get("config") or {})
        warnings: list[str] = []
        if not self.ctx.s.rootless:
            _resources(opts)  # validate limits now, not at start
        elif _resources(opts):
            from isle.engine.rootless import cgroup_delegated

            if not cgroup_delegated():
                warnings.append("resource limits are ignored: a rootless container on this "
                                "host has no delegated cgroup (cgroup v1, or no writable v2 "
                                "subtree)")
        net_warning = netplug.rootless_fallback(self.ctx.s, opts)
        if net_warning:
            warnings.append(net_warning)
        cid = os.urandom(32).hex()
        name = check_name(opts.name) if opts.name else random_name()
        for m in opts.mounts:
            if m.type == "volume" and not m.source:
                m.source = os.urandom(32).hex()
                m.anonymous = True
        rec = ContainerRecord(id=cid, name=name, image=opts.image, image_id=img.id,
                              created=time.time(), state="created", opts=opts.to_dict())
        if not opts.name:
            for _ in range(20):
                try:
                    self.ctx.db.insert_container(rec)
                    break
                except Exception:
                    rec.name = random_name() + "_" + os.urandom(2).hex()
            else:
                self.ctx.db.insert_container(rec)
        else:
            self.ctx.db.insert_container(rec)
        os.makedirs(self.ctx.paths(cid).bundle, exist_ok=True)
        from isle.engine.volumes import Volumes

        for m in opts.mounts:
            if m.type == "volume":
                Volumes(self.ctx.s, self.ctx.db).create(m.source, anonymous=m.anonymous)
        return CreateReport(id=cid, name=rec.name, warnings=warnings)

    def start(self, ref: str, *, attach: bool = False) -> RunReport:
        """Start a created/stopped container; attach=True: stream its output, return its code."""
        rec = self.sup.get(ref)
        if attach and rec.state not in ("running", "paused"):
            opts = RunOptions.from_dict(rec.opts)
            self.ctx.db.update_container(rec.id, stopped_by_user=False)
            return self.sup.run_foreground(rec, opts, 0 if opts.interactive else None, 1, 2)
        with self.ctx.locked(rec.id):
            rec = self.sup.refresh(self.ctx.db.get_container(rec.id))
            st = State.of(rec.state)
            if st == State.RUNNING:
                return RunReport(id=rec.id, name=rec.name, exit_code=None)
            if not st.can_start():
                raise InvalidState(f"cannot start a paused container {rec.name}, "
                                   "try unpause instead")
            self.ctx.db.update_container(rec.id, stopped_by_user=False)
            self.sup.start(rec, attach=False, foreground=False)
        return RunReport(id=rec.id, name=rec.name, exit_code=None)

    def start_attached(self, ref: str) -> Any:
        """Start a created/stopped container with conmon's attach socket connected before its
        process runs (the API's attach-then-start loses no output); that socket, for the caller
        to pump and close."""
        rec = self.sup.get(ref)
        with self.ctx.locked(rec.id):
            rec = self.sup.refresh(self.ctx.db.get_container(rec.id))
            if rec.state in ("running", "paused"):
                raise InvalidState(f"container {rec.name} is already {rec.state}")
            self.ctx.db.update_container(rec.id, stopped_by_user=False)
            return self.sup.start(rec, attach=True, foreground=False)

    def run(self, opts: RunOptions, *, stdin_fd: int | None = 0, stdout_fd: int = 1,
            stderr_fd: int = 2) -> RunReport:
        """`isle run`: create + start; in the foreground stream I/O and return the exit code."""
        rep = self.create(opts)
        for w in rep.warnings:
            self.ctx.warn(w)
        rec = self.ctx.db.get_container(rep.id)
        if opts.detach:
            try:
                with self.ctx.locked(rec.id):
                    self.sup.start(rec, attach=False, foreground=False)
            except BaseException:
                self.sup.remove_after_failure(rec, opts)
                raise
            return RunReport(id=rec.id, name=rec.name, exit_code=None)
        return self.sup.run_foreground(rec, opts, stdin_fd, stdout_fd, stderr_fd, direct=True)

    # -- stop / kill / restart / pause ----------------------------------------------------------
    def stop(self, ref: str, timeout: int | None = None) -> RmReport:
        rec = self.sup.get(ref)
        opts = RunOptions.from_dict(rec.opts)
        t = opts.stop_timeout if timeout is None else timeout
        self.ctx.db.update_container(rec.id, stopped_by_user=True)
        if rec.state not in ("running", "paused"):
            with self.ctx.locked(rec.id):  # a restart may be in flight: let it land, then stop it
                rec = self.sup.refresh(self.ctx.db.get_container(rec.id))
        if rec.state in ("running", "paused"):
            if rec.state == "paused":
                with suppress(Exception):
                    self.ctx.oci(rec).resume(rec.id)
            self.sup.signal(rec, parse_signal("--stop-signal", opts.stop_signal or "SIGTERM"))
            if not self.sup.wait_dead(rec, t):
                self.sup.signal(rec, signal.SIGKILL)
                self.sup.wait_dead(rec, 10)
            self.sup.reap(rec)
        return RmReport(id=rec.id, name=rec.name)

    def kill(self, ref: str, sig: str = "KILL") -> RmReport:
        rec = self.sup.get(ref)
        n = parse_signal("--signal", sig)
        if not State.of(rec.state).can_kill():
            raise InvalidState(f"cannot kill container {rec.name}: container is not running")
        self.ctx.db.update_container(rec.id, stopped_by_user=True, event="kill")
        self.sup.signal(rec, n)
        if n == signal.SIGKILL:
            self.sup.wait_dead(rec, 10)
            self.sup.reap(rec)
        return RmReport(id=rec.id, name=rec.name)

    def restart(self, ref: str, timeout: int | None = None) -> RmReport:
        rec = self.sup.get(ref)
        self.stop(rec.id, timeout)
        self.start(rec.id)
        self.ctx.db.add_event("container", "restart", rec.id)
        return RmReport(id=rec.id, name=rec.name)

    def pause(self, ref: str) -> RmReport:
        return self._set_paused(ref, True)

    def unpause(self, ref: str) -> RmReport:
        return self._set_paused(ref, False)

    def _set_paused(self, ref: str, paused: bool) -> RmReport:
        rec = self.sup.get(ref)
        st = State.of(rec.state)
        if not (st.can_pause() if paused else st.can_unpause()):
            raise InvalidState(f"container {rec.name} is not {'running' if paused else 'paused'}")
        rt = self.ctx.oci(rec)
        (rt.pause if paused else rt.resume)(rec.id)
        self.ctx.db.update_container(rec.id, state="paused" if paused else "running",
                                     event="pause" if paused else "unpause")
        return RmReport(id=rec.id, name=rec.name)

    def wait(self, ref: str) -> int:
        rec = self.sup.get(ref)
        while rec.state in ("running", "paused"):
            if alive(rec.monitor_pid, rec.monitor_start):
                from isle.engine.attach import wait_pid_exit

                wait_pid_exit(rec.monitor_pid, 1.0)
            else:
                time.sleep(0.05)
            rec = self.sup.get(rec.id)
        return rec.exit_code

    # -- rm / prune / rename ----------------------------------------------------------------------
    def rm(self, ref: str, *, force: bool = False, volumes: bool = False) -> RmReport:
        rec = self.sup.remove(ref, force=force, volumes=volumes)
        return RmReport(id=rec.id, name=rec.name)

    def container_prune(self) -> PruneReport:
        rep = PruneReport()
        for rec in self.ctx.db.list_containers():
            rec = self.sup.refresh(rec)
            if State.of(rec.state).can_prune():
                with suppress(NotFound):
                    self.rm(rec.id)
                    rep.deleted.append(rec.id)
        return rep

    def rename(self, ref: str, new: str) -> RmReport:
        rec = self.sup.get(ref)
        name = check_name(new)
        import sqlite3

        try:
            self.ctx.db.update_container(rec.id, name=name, event="rename")
        except sqlite3.IntegrityError:
            from isle.errors import AlreadyExists

            raise AlreadyExists(f'the container name "/{name}" is already in use') from None
        return RmReport(id=rec.id, name=name)

    def cleanup(self, cid: str) -> None:
        """conmon's exit command: record the exit, release resources, apply the restart policy."""
        try:
            rec = self.ctx.db.get_container(cid)
        except NotFound:
            return
        with self.ctx.locked(rec.id):
            rec = self.sup.refresh(self.ctx.db.get_container(rec.id))
            if rec.state in ("running", "paused"):
                return
            opts = RunOptions.from_dict(rec.opts)
            if opts.remove:
                self.sup.discard(rec)
                return
            self.sup.release(rec, final=False)
            if self._should_restart(rec, opts):
                time.sleep(restart_delay(rec.restart_count))
                rec = self.ctx.db.get_container(rec.id)
                if rec.stopped_by_user or rec.state != "exited":
                    return
                self.ctx.db.update_container(rec.id, restart_count=rec.restart_count + 1)
                self.sup.start(self.ctx.db.get_container(rec.id), attach=False, foreground=False)

    @staticmethod
    def _should_restart(rec: ContainerRecord, opts: RunOptions) -> bool:
        return should_restart(opts.restart.name, opts.restart.max_retries,
                              exit_code=rec.exit_code, restart_count=rec.restart_count,
                              stopped_by_user=rec.stopped_by_user)
