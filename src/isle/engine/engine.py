"""The Engine facade: containers and volumes as user-facing objects; every verb is one method.

    eng = Engine(Settings(root=..., runroot=...))
    rep = eng.run(RunOptions(image="busybox", command=["echo", "hi"], remove=True))
    rep.exit_code  # 0

Containers run under conmon (monitor.py) so they outlive `isle`; records live in SQLite (db.py);
the truth about a running container is re-derived cheaply from conmon's exit file and
pid + start-time checks (`_refresh`), so a killed CLI, monitor, or a wiped runroot never lies.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # `signal` adds enums (~3 ms)
import builtins
import os
import sys
import time

from isle.config import Settings, default_settings
from isle.engine import lifecycle
from isle.engine.db import ContainerRecord, Db
from isle.engine.layout import ContainerPaths, alive
from isle.engine.names import check_name, random_name
from isle.engine.options import RunOptions, check_env_size, parse_signal
from isle.engine.queries import Queries
from isle.engine.quiet import suppress
from isle.engine.reports import CreateReport, PruneReport, RmReport, RunReport
from isle.engine.state import State, restart_delay, should_restart
from isle.engine.transfer import Transfer
from isle.errors import ConfigError, InvalidState, NotFound, Unsupported
from isle.sys.fs import flock

TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Engine"]


class Engine(lifecycle.Lifecycle, Queries, Transfer):
    #: the caller is a CLI process of its own (stdio = the container's, nothing else running in
    #: it): a foreground `run --rm` may call isle's runtime in this process (direct.py)
    own_process = False
    #: (settings, record opts) -> the record's runtime; None: engine/runtimes.for_record
    runtime_for: Any = None

    def __init__(self, settings: Settings | None = None, *, runtime_for: Any = None) -> None:
        """runtime_for(settings, record_opts) -> the record's OCI runtime (engine/runtimes.py
        for_record by default; the unit tests pass a recording fake)."""
        self.s = settings or default_settings()
        if runtime_for is not None:
            self.runtime_for = runtime_for
        self._db: Db | None = None
        self._store: Any = None
        self._held: set[str] = set()
        #: where `run` reports warnings before the container's output (the API may replace it)
        self.warn: Any = lambda msg: sys.stderr.write(f"WARNING: {msg}\n")

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def db(self) -> Db:
        if self._db is None:
            self._db = Db(self.s.db_path, private=(self.s.runroot,))
        return self._db

    @property
    def store(self) -> Any:
        if self._store is None:
            try:
                from isle.image.store import ImageStore
            except ImportError as exc:
                raise Unsupported("the image store (isle.image.store) is not available") from exc
            self._store = ImageStore.from_settings(self.s)
            self._store.set_users_callback(self._image_users)
        return self._store

    def _image_users(self, image_id: str) -> list[str]:
        return [r.id for r in self.db.list_containers() if r.image_id == image_id]

    def paths(self, cid: str) -> ContainerPaths:
        return ContainerPaths.of(self.s, cid)

    def _locked(self, cid: str) -> _Locked:
        """with self._locked(cid): the container's flock (start/stop/cleanup/rm serialise)."""
        return _Locked(self, cid)

    def _lock_busy(self, cid: str) -> bool:
        """Another process holds this container's lock (e.g. it is starting it right now)."""
        import fcntl

        if cid in self._held:
            return False
        try:
            fd = os.open(self.paths(cid).lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def get(self, ref: str) -> ContainerRecord:
        """A container record by id, name or id prefix, its state brought up to date."""
        return self._refresh(self.db.get_container(ref))

    # -- create / start / run ------------------------------------------------------------------
    def create(self, opts: RunOptions) -> CreateReport:
        from isle.engine.runtimes import pick

        pick(self.s, opts)  # --isolation/--runtime -> opts.runtime (a path), opts.isolation
        if opts.remove and opts.restart.name != "no":
            raise ConfigError("--restart", "conflicting options: --restart and --rm")
        check_env_size(opts.env)
        from isle.engine import netplug

        netplug.validate(self.s, opts, lookup=self.get)
        if opts.stop_signal:
            parse_signal("--stop-signal", opts.stop_signal)
        from isle.engine import fastimage
        from isle.engine.spec import _resources, command_line

        img = fastimage.resolve(self, opts.image)

        command_line(opts, img.config.get("config") or {})
        warnings: list[str] = []
        if not self.s.rootless:
            _resources(opts)  # validate limits now, not at start
        elif _resources(opts):
            from isle.engine.rootless import cgroup_delegated

            if not cgroup_delegated():
                warnings.append("resource limits are ignored: a rootless container on this "
                                "host has no delegated cgroup (cgroup v1, or no writable v2 "
                                "subtree)")
        net_warning = netplug.rootless_fallback(self.s, opts)
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
                    self.db.insert_container(rec)
                    break
                except Exception:
                    rec.name = random_name() + "_" + os.urandom(2).hex()
            else:
                self.db.insert_container(rec)
        else:
            self.db.insert_container(rec)
        os.makedirs(self.paths(cid).bundle, exist_ok=True)
        for m in opts.mounts:
            if m.type == "volume":
                self.volumes.create(m.source, anonymous=m.anonymous)
        return CreateReport(id=cid, name=rec.name, warnings=warnings)

    def start(self, ref: str, *, attach: bool = False) -> RunReport:
        """Start a created/stopped container; attach=True: stream its output, return its code."""
        rec = self.get(ref)
        if attach and rec.state not in ("running", "paused"):
            opts = RunOptions.from_dict(rec.opts)
            self.db.update_container(rec.id, stopped_by_user=False)
            return self._run_foreground(rec, opts, 0 if opts.interactive else None, 1, 2)
        with self._locked(rec.id):
            rec = self._refresh(self.db.get_container(rec.id))
            st = State.of(rec.state)
            if st == State.RUNNING:
                return RunReport(id=rec.id, name=rec.name, exit_code=None)
            if not st.can_start():
                raise InvalidState(f"cannot start a paused container {rec.name}, "
                                   "try unpause instead")
            self.db.update_container(rec.id, stopped_by_user=False)
            self._start(rec, attach=False, foreground=False)
        return RunReport(id=rec.id, name=rec.name, exit_code=None)

    def start_attached(self, ref: str) -> Any:
        """Start a created/stopped container with conmon's attach socket connected before its
        process runs (the API's attach-then-start loses no output); that socket, for the caller
        to pump and close."""
        rec = self.get(ref)
        with self._locked(rec.id):
            rec = self._refresh(self.db.get_container(rec.id))
            if rec.state in ("running", "paused"):
                raise InvalidState(f"container {rec.name} is already {rec.state}")
            self.db.update_container(rec.id, stopped_by_user=False)
            return self._start(rec, attach=True, foreground=False)

    def run(self, opts: RunOptions, *, stdin_fd: int | None = 0, stdout_fd: int = 1,
            stderr_fd: int = 2) -> RunReport:
        """`isle run`: create + start; in the foreground stream I/O and return the exit code."""
        rep = self.create(opts)
        for w in rep.warnings:
            self.warn(w)
        rec = self.db.get_container(rep.id)
        if opts.detach:
            try:
                with self._locked(rec.id):
                    self._start(rec, attach=False, foreground=False)
            except BaseException:
                self._remove_after_failure(rec, opts)
                raise
            return RunReport(id=rec.id, name=rec.name, exit_code=None)
        from isle.engine import direct

        if direct.eligible(self, opts, stdin_fd):
            try:
                rr = direct.run_direct(self, rec, opts, stdin_fd, stdout_fd, stderr_fd)
            except BaseException:
                self._remove_after_failure(rec, opts)
                raise
            if rr is not None:
                return rr
        return self._run_foreground(rec, opts, stdin_fd, stdout_fd, stderr_fd)

    def _remove_after_failure(self, rec: ContainerRecord, opts: RunOptions) -> None:
        if opts.remove:
            with suppress(Exception):
                self.rm(rec.id, force=True, volumes=True)
        else:
            with suppress(Exception):  # never started: Docker's "Created" with the exit code
                self.db.update_container(rec.id,
                                         state="exited" if rec.started_at else "created",
                                         exit_code=128, finished_at=time.time())

    # -- stop / kill / restart / pause ----------------------------------------------------------
    def stop(self, ref: str, timeout: int | None = None) -> RmReport:
        rec = self.get(ref)
        opts = RunOptions.from_dict(rec.opts)
        t = opts.stop_timeout if timeout is None else timeout
        self.db.update_container(rec.id, stopped_by_user=True)
        if rec.state not in ("running", "paused"):
            with self._locked(rec.id):  # a restart may be in flight: let it land, then stop it
                rec = self._refresh(self.db.get_container(rec.id))
        if rec.state in ("running", "paused"):
            if rec.state == "paused":
                with suppress(Exception):
                    self._oci(rec).resume(rec.id)
            self._signal(rec, parse_signal("--stop-signal", opts.stop_signal or "SIGTERM"))
            if not self._wait_dead(rec, t):
                self._signal(rec, signal.SIGKILL)
                self._wait_dead(rec, 10)
            self._reap(rec)
        return RmReport(id=rec.id, name=rec.name)

    def kill(self, ref: str, sig: str = "KILL") -> RmReport:
        rec = self.get(ref)
        n = parse_signal("--signal", sig)
        if not State.of(rec.state).can_kill():
            raise InvalidState(f"cannot kill container {rec.name}: container is not running")
        self.db.update_container(rec.id, stopped_by_user=True, event="kill")
        self._signal(rec, n)
        if n == signal.SIGKILL:
            self._wait_dead(rec, 10)
            self._reap(rec)
        return RmReport(id=rec.id, name=rec.name)

    def restart(self, ref: str, timeout: int | None = None) -> RmReport:
        rec = self.get(ref)
        self.stop(rec.id, timeout)
        self.start(rec.id)
        self.db.add_event("container", "restart", rec.id)
        return RmReport(id=rec.id, name=rec.name)

    def pause(self, ref: str) -> RmReport:
        rec = self.get(ref)
        if not State.of(rec.state).can_pause():
            raise InvalidState(f"container {rec.name} is not running")
        self._oci(rec).pause(rec.id)
        self.db.update_container(rec.id, state="paused", event="pause")
        return RmReport(id=rec.id, name=rec.name)

    def unpause(self, ref: str) -> RmReport:
        rec = self.get(ref)
        if not State.of(rec.state).can_unpause():
            raise InvalidState(f"container {rec.name} is not paused")
        self._oci(rec).resume(rec.id)
        self.db.update_container(rec.id, state="running", event="unpause")
        return RmReport(id=rec.id, name=rec.name)

    def wait(self, ref: str) -> int:
        rec = self.get(ref)
        while rec.state in ("running", "paused"):
            if alive(rec.monitor_pid, rec.monitor_start):
                from isle.engine.attach import wait_pid_exit

                wait_pid_exit(rec.monitor_pid, 1.0)
            else:
                time.sleep(0.05)
            rec = self.get(rec.id)
        return rec.exit_code

    # -- rm / prune / rename ----------------------------------------------------------------------
    def rm(self, ref: str, *, force: bool = False, volumes: bool = False) -> RmReport:
        rec = self.get(ref)
        if not State.of(rec.state).can_remove(force):
            raise InvalidState(f"cannot remove container {rec.name}: container is {rec.state}: "
                               "stop the container before removing or force remove")
        with self._locked(rec.id):
            try:
                rec = self._refresh(self.db.get_container(rec.id))
            except NotFound:  # another rm won the race: name the container as the caller did
                raise NotFound(f"no such container: {ref}") from None
            if rec.state in ("running", "paused"):
                self.db.update_container(rec.id, stopped_by_user=True)
                if rec.state == "paused":
                    with suppress(Exception):
                        self._oci(rec).resume(rec.id)
                self._kill_for_removal(rec)
                rec.state = "exited"
            self._release(rec, final=True)
            self.db.delete_container(rec.id)
        if volumes:
            self._remove_anon_volumes(rec)
        return RmReport(id=rec.id, name=rec.name)

    def _remove_anon_volumes(self, rec: ContainerRecord) -> None:
        from isle.engine.volumes import Volumes

        vols = Volumes(self.s, self.db)
        for m in RunOptions.from_dict(rec.opts).mounts:
            if m.type == "volume" and m.anonymous and m.source:
                with suppress(NotFound):
                    vols.remove(m.source, self._volume_users(m.source))

    def container_prune(self) -> PruneReport:
        rep = PruneReport()
        for rec in self.db.list_containers():
            rec = self._refresh(rec)
            if State.of(rec.state).can_prune():
                with suppress(NotFound):
                    self.rm(rec.id)
                    rep.deleted.append(rec.id)
        return rep

    def rename(self, ref: str, new: str) -> RmReport:
        rec = self.get(ref)
        name = check_name(new)
        import sqlite3

        try:
            self.db.update_container(rec.id, name=name, event="rename")
        except sqlite3.IntegrityError:
            from isle.errors import AlreadyExists

            raise AlreadyExists(f'the container name "/{name}" is already in use') from None
        return RmReport(id=rec.id, name=name)

    def update(self, ref: str, changes: dict[str, Any], restart: Any = None) -> Any:
        """New resource limits (RunOptions field -> value) and/or restart policy, live through
        the runtime's `update` and in the record: engine/update.py. (record, warnings)."""
        from isle.engine.update import apply

        return apply(self, ref, changes, restart)

    def cleanup(self, cid: str) -> None:
        """conmon's exit command: record the exit, release resources, apply the restart policy."""
        try:
            rec = self.db.get_container(cid)
        except NotFound:
            return
        with self._locked(rec.id):
            rec = self._refresh(self.db.get_container(rec.id))
            if rec.state in ("running", "paused"):
                return
            opts = RunOptions.from_dict(rec.opts)
            self._release(rec, final=opts.remove)
            if opts.remove:
                self.db.delete_container(rec.id)
                self._remove_anon_volumes(rec)
                return
            if self._should_restart(rec, opts):
                time.sleep(restart_delay(rec.restart_count))
                rec = self.db.get_container(rec.id)
                if rec.stopped_by_user or rec.state != "exited":
                    return
                self.db.update_container(rec.id, restart_count=rec.restart_count + 1)
                self._start(self.db.get_container(rec.id), attach=False, foreground=False)

    @staticmethod
    def _should_restart(rec: ContainerRecord, opts: RunOptions) -> bool:
        return should_restart(opts.restart.name, opts.restart.max_retries,
                              exit_code=rec.exit_code, restart_count=rec.restart_count,
                              stopped_by_user=rec.stopped_by_user)

    # -- queries ---------------------------------------------------------------------------------
    def list(self, *, all: bool = False) -> list[ContainerRecord]:
        out = []
        for rec in self.db.list_containers():
            try:
                rec = self._refresh(rec)
            except NotFound:  # removed meanwhile (its --rm, an rm -f elsewhere): not listed
                continue
            if all or rec.state in ("running", "paused"):
                out.append(rec)
        return out

    def _volume_users(self, name: str) -> builtins.list[str]:
        users = []
        for rec in self.db.list_containers():
            for m in rec.opts.get("mounts", []):
                if m.get("type") == "volume" and m.get("source") == name:
                    users.append(rec.id[:12])
        return users

    def info(self) -> dict[str, Any]:
        recs = self.list(all=True)
        from isle.engine.runtimes import resolve_runtime

        try:
            rt = resolve_runtime(self.s.runtime, explicit="ISLE_RUNTIME" in os.environ)
        except ConfigError as exc:
            rt = f"unavailable ({exc})"
        vm = _vm_info(self.s)
        lv = _levels(self.s, vm)
        return {
            "Containers": len(recs),
            "ContainersRunning": sum(r.state == "running" for r in recs),
            "ContainersPaused": sum(r.state == "paused" for r in recs),
            "ContainersStopped": sum(r.state not in ("running", "paused") for r in recs),
            "Images": len(self.store.list()),
            "Volumes": len(self.db.list_volumes()),
            "Root": self.s.root, "RunRoot": self.s.runroot,
            "DefaultRuntime": self.s.runtime, "RuntimePath": rt, "Rootless": self.s.rootless,
            "CgroupDriver": "cgroupfs", "CgroupVersion": _cgroup_version(),
            "Isolation": [k for k, v in lv.items() if not v],
            "IsolationUnavailable": {k: v for k, v in lv.items() if v},
            "IsolationNotes": _level_notes(vm), "Monitor": "conmon", "VM": vm,
            "VMAccelerator": f"{vm['accel'].upper()} ({vm['accel_reason']})",
            "KernelVersion": os.uname().release, "OperatingSystem": _os_name(),
            "NCPU": os.cpu_count(), "MemTotal": _mem_total(),
        }


def _vm_info(s: Any) -> dict[str, Any]:
    """Accelerator (KVM/TCG and why), QEMU, guest kernel, templates: what --isolation vm uses."""
    import isle.vm

    d = isle.vm.info(s.cache)
    from isle.engine.vms import VMs

    d["templates"] = len(VMs(s).templates())
    return d


def _levels(s: Any, vm: dict[str, Any]) -> dict[str, str]:
    """{container|sandbox|vm: "" where it works here, else why not}."""
    from isle.engine import sandbox
    from isle.engine.runtimes import vm_runtime_path

    try:
        vm_runtime_path()
        has_vm = True
    except Unsupported:
        has_vm = False
    return sandbox.levels(s.rootless, vm, has_vm)


def _level_notes(vm: dict[str, Any]) -> dict[str, str]:
    from isle.engine import sandbox

    return sandbox.level_notes(vm)


def _cgroup_version() -> str:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "2"
    return "1" if os.path.isdir("/sys/fs/cgroup/memory") else "unknown"


def _os_name() -> str:
    with suppress(OSError):
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def _mem_total() -> int:
    with suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) * 1024
    return 0



class _Locked:
    """Engine._locked's context manager: isle.sys.fs.flock plus the engine's set of held locks
    (a class: contextlib costs ~2 ms of import on every CLI start)."""

    __slots__ = ("eng", "cid", "cm")

    def __init__(self, eng: Engine, cid: str) -> None:
        self.eng, self.cid = eng, cid
        self.cm: flock | None = None

    def __enter__(self) -> None:
        lock = self.eng.paths(self.cid).lock
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        cm = flock(lock)
        cm.__enter__()
        self.cm = cm
        self.eng._held.add(self.cid)

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self.eng._held.discard(self.cid)
        cm, self.cm = self.cm, None
        if cm is not None:
            cm.__exit__(et, ev, tb)
