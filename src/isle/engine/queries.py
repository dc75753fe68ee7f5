"""Read-side verbs: inspect, ps rows, logs, exec, top, info, volumes."""

from __future__ import annotations

import os
import time

from isle.engine.db import ContainerRecord
from isle.engine.layout import alive
from isle.engine.options import RunOptions
from isle.engine.quiet import suppress
from isle.engine.reports import ContainerSummary, PruneReport
from isle.errors import ConfigError, InvalidState, NotFound, Unsupported
from isle.oci.fastjson import dumps

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from isle.engine.context import Context
    from isle.engine.supervisor import Supervisor

__all__ = ["Queries"]


class Queries:
    """inspect, ps, logs, exec, top, info and the volume verbs over a Context and a Supervisor
    (whose refresh makes every record read here tell the truth)."""

    def __init__(self, ctx: Context, sup: Supervisor) -> None:
        self.ctx, self.sup = ctx, sup

    def image_config(self, rec: ContainerRecord) -> dict[str, Any]:
        from isle.engine import fastimage

        try:
            img = fastimage.resolve(self.ctx, rec.image_id)
        except Exception:  # image gone (forced rmi): show what the record knows
            return {}
        return img.config.get("config") or {}

    def inspect(self, ref: str) -> dict[str, Any]:
        from isle.engine.views import inspect_json

        rec = self.sup.get(ref)
        p = self.ctx.paths(rec.id)
        return inspect_json(rec, self.image_config(rec), bundle=p.bundle, log_path=p.log,
                            rootfs=p.rootfs, upper=p.upper)

    def ps(self, *, all: bool = False, filters: list[str] | None = None,
           last: int = -1) -> list[ContainerSummary]:
        from isle.engine.views import summary

        by_state = any(f.startswith(("status=", "exited=")) for f in filters or [])
        recs = self.sup.records(all=all or last >= 0 or by_state)
        cfgs: dict[str, dict[str, Any]] = {}
        now = time.time()
        rows = []
        for rec in recs:
            if rec.image_id not in cfgs:
                cfgs[rec.image_id] = self.image_config(rec)
            rows.append(summary(rec, cfgs[rec.image_id], now))
        for f in filters or []:
            _check_filter(f)  # a bad filter is an error with no containers too, as Docker's
            rows = [r for r in rows if _match(r, f)]
        if last >= 0:
            rows = rows[:last]
        return rows

    # -- logs ------------------------------------------------------------------------------------
    def logs(self, ref: str, *, follow: bool = False, tail: int = -1, since: str = "",
             until: str = "", timestamps: bool = False,
             wanted: Callable[[], bool] | None = None) -> Iterator[tuple[str, bytes]]:
        """(stream, bytes) chunks of the container's output, Docker's `logs` semantics; a follow
        ends too once wanted() is false (the API's client went away)."""
        from isle.engine import logs as L

        rec = self.sup.get(ref)
        path = self.ctx.paths(rec.id).log
        t0 = L.parse_since(since)
        t1 = L.parse_since(until) if until else 0.0
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        entries = [e for e in L.read_entries(path) if e.time >= t0 and (not t1 or e.time <= t1)]
        if tail >= 0:
            entries = entries[-tail:] if tail else []
        for e in entries:
            yield e.stream, (e.ts.encode() + b" " if timestamps else b"") + e.data
        if follow and not t1:
            def running() -> bool:
                if wanted is not None and not wanted():
                    return False
                cur = self.sup.get(rec.id)
                return cur.state in ("running", "paused")

            # re-read from where read_entries stopped (size may have grown since)
            start = size if entries or size else 0
            for e in L.follow(path, start, running):
                if e.time >= t0:
                    yield e.stream, (e.ts.encode() + b" " if timestamps else b"") + e.data

    # -- exec ------------------------------------------------------------------------------------
    def exec(self, ref: str, cmd: list[str], *, interactive: bool = False, tty: bool = False,
             env: list[str] | None = None, user: str = "", workdir: str = "",
             detach: bool = False, privileged: bool = False,
             stdio: tuple[int | None, int, int] | None = None, console_socket: str = "") -> int:
        """Run cmd in a running container with our stdio (or `stdio`: stdin or None, stdout,
        stderr fds, as the API passes); its exit code (126/127 like Docker)."""
        from isle.engine.bundle import host_caps, precheck_command, read_in_root
        from isle.engine.layout import write_file
        from isle.engine.spec import SpecInputs, process_spec
        from isle.sys import proc

        rec = self.sup.get(ref)
        if rec.state == "paused":
            raise InvalidState(f"container {rec.name} is paused, unpause the container before exec")
        if rec.state != "running":
            raise InvalidState(f"container {rec.id[:12]} is not running")
        if not cmd:
            raise ConfigError("exec", "no command given")
        p = self.ctx.paths(rec.id)
        opts = RunOptions.from_dict(rec.opts)
        if privileged:
            opts.privileged = True

        # the container is running and may swap /etc for a symlink to the host's: its files
        # resolve inside its root
        inp = SpecInputs(container_id=rec.id, rootfs=p.rootfs, image_config=self.image_config(rec),
                         hostname=opts.hostname or rec.id[:12],
                         passwd=read_in_root(p.rootfs, "/etc/passwd"),
                         group=read_in_root(p.rootfs, "/etc/group"), host_caps=host_caps())
        if detach:
            tty = False  # nobody would read a detached terminal
        ps = process_spec(opts, inp, args=list(cmd), env=env or [], user=user or None,
                          workdir=workdir or None, tty=tty)
        if os.path.ismount(p.rootfs) or os.listdir(p.rootfs):
            precheck_command(p.rootfs, ps)
        spec_path = os.path.join(p.run, f"exec-{os.urandom(6).hex()}.json")
        write_file(spec_path, dumps(ps).encode())
        oci = self.ctx.oci(rec)
        argv = oci.exec_argv(rec.id, spec_path, detach=detach, tty=tty)
        if tty and not detach and stdio is not None and console_socket:
            # the caller (the API) takes the pty master from console_socket and copies it itself
            argv = argv[:-1] + ["--console-socket", console_socket, argv[-1]]
        if tty and not detach and stdio is None and not oci.caps.tty_copy:
            # runc copies a foreground tty itself; other runtimes hand the pty to a console socket
            import shutil
            import tempfile

            from isle.engine.attach import run_with_console

            d = tempfile.mkdtemp(prefix="isle-console-")  # short: sun_path holds 108 bytes
            sock = os.path.join(d, "sock")
            try:
                return run_with_console(argv[:-1] + ["--console-socket", sock, argv[-1]], sock,
                                        stdin_fd=0 if interactive else None)
            finally:
                shutil.rmtree(d, ignore_errors=True)
                with suppress(OSError):
                    os.unlink(spec_path)
        try:
            kw: dict[str, Any] = {}
            if detach:
                kw = {"stdin": proc.DEVNULL, "stdout": proc.DEVNULL, "stderr": proc.PIPE}
            elif stdio is not None:
                kw = {"stdin": proc.DEVNULL if stdio[0] is None else stdio[0],
                      "stdout": stdio[1], "stderr": stdio[2]}
            elif not interactive:
                kw = {"stdin": proc.DEVNULL}
            child = proc.spawn(argv, **kw)
            _, err = child.communicate() if detach else (None, None)
            rc = child.wait()
            if detach and rc != 0:
                from isle.engine.supervisor import classify_runtime_error

                raise classify_runtime_error((err or b"").decode(errors="replace"))
            if rc == 255 and not alive(rec.pid, rec.pid_start):
                raise InvalidState(f"container {rec.id[:12]} is not running")
            return rc
        finally:
            with suppress(OSError):
                os.unlink(spec_path)

    def exec_capture(self, ref: str, cmd: list[str], *, timeout: float = 30) -> tuple[int, str]:
        """Run cmd in the container, capturing combined output (health checks); the output is
        collected in a file, so a process it leaves behind holding stdout cannot stall it."""
        from isle.engine.attach import wait_pid_exit
        from isle.engine.layout import write_file
        from isle.engine.spec import SpecInputs, process_spec
        from isle.sys import proc

        rec = self.sup.get(ref)
        if rec.state != "running":
            raise InvalidState(f"container {rec.id[:12]} is not running")
        p = self.ctx.paths(rec.id)
        opts = RunOptions.from_dict(rec.opts)
        inp = SpecInputs(container_id=rec.id, rootfs=p.rootfs, image_config=self.image_config(rec),
                         hostname=opts.hostname or rec.id[:12])
        ps = process_spec(opts, inp, args=cmd, user="0", tty=False)
        spec_path = os.path.join(p.run, f"exec-{os.urandom(6).hex()}.json")
        write_file(spec_path, dumps(ps).encode())
        out_path = spec_path[:-len(".json")] + ".out"
        fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            argv = self.ctx.oci(rec).exec_argv(rec.id, spec_path, detach=False, tty=False)
            child = proc.spawn(argv, stdin=proc.DEVNULL, stdout=fd, stderr=proc.STDOUT)
            if not wait_pid_exit(child.pid, timeout):  # a pidfd: no polling
                child.kill()
                child.wait()
                return -1, f"Health check exceeded timeout ({timeout}s)"
            rc = child.wait()
            with os.fdopen(os.dup(fd), "rb") as f:
                f.seek(0)
                return rc, f.read().decode(errors="replace")
        finally:
            os.close(fd)
            for f_ in (spec_path, out_path):
                with suppress(OSError):
                    os.unlink(f_)

    def top(self, ref: str, ps_args: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
        from isle.sys import proc

        rec = self.sup.get(ref)
        if rec.state not in ("running", "paused"):
            raise InvalidState(f"container {rec.id[:12]} is not running")
        rt = self.ctx.oci(rec)
        if not rt.caps.host_procs:  # a guest's processes: its kernel lists them (the agent)
            if ps_args:
                raise rt.unsupported("top with ps options", "the guest lists its processes in "
                                     "one fixed format")
            rows = rt.guest_top(rec.id)
            return (rows[0], rows[1:]) if rows else ([], [])
        pids = self._pids(rec, rt)
        fmt = ps_args or ["-o", "uid,pid,ppid,c,stime,tty,time,cmd"]
        out = proc.run(["ps", *fmt, "-p", ",".join(map(str, pids))], check=False,
                       timeout=10).stdout.decode()
        lines = out.splitlines()
        if not lines:
            return [], []
        header = lines[0].split()
        rows = [ln.split(None, len(header) - 1) for ln in lines[1:]]
        return header, rows

    @staticmethod
    def _pids(rec: ContainerRecord, rt: Any) -> list[int]:
        """The container's host pids, as its runtime lists them (`ps --format json`)."""
        with suppress(NotFound):
            pids = [int(x) for x in rt.ps(rec.id) if isinstance(x, int)]
            if pids:
                return sorted(pids)
        return [rec.pid]

    def info(self) -> dict[str, Any]:
        recs = self.sup.records(all=True)
        from isle.engine.runtimes import resolve_runtime

        try:
            rt = resolve_runtime(self.ctx.s.runtime, explicit="ISLE_RUNTIME" in os.environ)
        except ConfigError as exc:
            rt = f"unavailable ({exc})"
        vm = _vm_info(self.ctx.s)
        lv = _levels(self.ctx.s, vm)
        s = self.ctx.s
        return {
            "Containers": len(recs),
            "ContainersRunning": sum(r.state == "running" for r in recs),
            "ContainersPaused": sum(r.state == "paused" for r in recs),
            "ContainersStopped": sum(r.state not in ("running", "paused") for r in recs),
            "Images": len(self.ctx.store.list()),
            "Volumes": len(self.ctx.db.list_volumes()),
            "Root": s.root, "RunRoot": s.runroot,
            "DefaultRuntime": s.runtime, "RuntimePath": rt, "Rootless": s.rootless,
            "CgroupDriver": "cgroupfs", "CgroupVersion": _cgroup_version(),
            "Isolation": [k for k, v in lv.items() if not v],
            "IsolationUnavailable": {k: v for k, v in lv.items() if v},
            "IsolationNotes": _level_notes(vm), "Monitor": "conmon", "VM": vm,
            "VMAccelerator": f"{vm['accel'].upper()} ({vm['accel_reason']})",
            "KernelVersion": os.uname().release, "OperatingSystem": _os_name(),
            "NCPU": os.cpu_count(), "MemTotal": mem_total(),
        }

    # -- volumes ---------------------------------------------------------------------------------
    @property
    def volumes(self) -> Any:
        from isle.engine.volumes import Volumes

        return Volumes(self.ctx.s, self.ctx.db)

    def volume_rm(self, name: str, *, force: bool = False) -> None:
        self.volumes.remove(name, self.ctx.volume_users(name), force=force)

    def volume_prune(self, *, all: bool = False) -> PruneReport:
        rep = PruneReport()
        for v in self.volumes.list():
            if not all and not v.anonymous:
                continue
            if self.ctx.volume_users(v.name):
                continue
            self.volumes.remove(v.name, [])
            rep.deleted.append(v.name)
        return rep


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


def mem_total() -> int:
    """The host's memory in bytes (0 where /proc/meminfo cannot be read)."""
    from isle.sys import procfs

    with suppress(OSError):
        return procfs.meminfo().get("MemTotal", 0)
    return 0


_FILTER_KEYS = ("id", "name", "status", "label", "exited", "ancestor", "isolation", "network",
                "volume")


def _check_filter(f: str) -> None:
    """KEY=VALUE with a key ps knows and, for status and isolation, a value they can have."""
    k, sep, v = f.partition("=")
    if not sep:
        raise ConfigError("--filter", f"bad format of filter {f!r} (expected name=value)")
    if k not in _FILTER_KEYS:
        raise ConfigError("--filter", f"invalid filter {k!r}")
    if k == "status" and v not in ("created", "restarting", "running", "removing", "paused",
                                   "exited", "dead"):
        raise ConfigError("--filter", f"invalid filter 'status={v}'")
    if k == "isolation" and v not in ("container", "sandbox", "vm", "vm-os"):
        raise ConfigError("--filter", f"invalid filter 'isolation={v}' (container, sandbox, "
                                      "vm; vm-os: whole-OS VMs)")


def _match(row: ContainerSummary, f: str) -> bool:
    """Whether row passes filter f (checked by _check_filter)."""
    k, _, v = f.partition("=")
    if k == "id":
        return row.full_id.startswith(v)
    if k == "name":
        import re

        return re.search(v, row.Names) is not None
    if k == "status":
        return row.State == v
    if k == "label":
        lk, lsep, lv = v.partition("=")
        return lk in row.labels and (not lsep or row.labels[lk] == lv)
    if k == "exited":
        return row.State == "exited" and str(row.exit_code) == v
    if k == "ancestor":
        return v in (row.Image, row.ImageID) or row.ImageID.startswith("sha256:" + v)
    if k == "network":
        return v in row.Networks.split(",")
    if k == "volume":
        return v in row.Mounts.split(",")
    return row.Isolation == v  # isolation (vm-os: none of these, `isle vm` rows are added after)

