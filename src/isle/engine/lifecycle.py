"""The container lifecycle under the monitor: start (conmon + runtime), refresh the truth, release.

Mixed into Engine; kept apart so engine.py stays a readable list of verbs.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # `signal` adds enums (~3 ms)
import os
import sys
import time

from isle.engine.db import ContainerRecord
from isle.engine.layout import ContainerPaths, alive, proc_start_time, read_int, rmtree, write_file
from isle.engine.options import RunOptions
from isle.engine.quiet import nullcontext, suppress
from isle.engine.reports import CannotInvoke, CommandNotFound, RunReport
from isle.errors import CommandError, ConfigError, IsleError, NotFound
from isle.oci.fastjson import dumps

TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

if TYPE_CHECKING:
    import socket

    from isle.config import Settings
    from isle.engine.db import Db
    from isle.engine.runtimes import OciCli

__all__ = ["Lifecycle", "classify_runtime_error"]


def classify_runtime_error(msg: str) -> IsleError:
    """Runtime create/start stderr -> Docker's 127 (not found) / 126 (cannot invoke) / 125."""
    low = msg.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return CommandNotFound(msg.strip())
    if "permission denied" in low or "is a directory" in low or "exec format error" in low:
        return CannotInvoke(msg.strip())
    return IsleError(msg.strip() or "the runtime failed to start the container")


#: container facts netplug owns (rewritten at every start)
_NET_KEYS = ("ports", "ports_display", "netns", "ip", "networks", "tap", "slirp", "joined")


class Lifecycle:
    s: Settings

    @property
    def db(self) -> Db:  # Engine's (it opens the database on first use)
        raise NotImplementedError
    store: Any
    runtime_for: Any

    paths: Callable[[str], ContainerPaths]  # provided by Engine
    get: Callable[..., Any]  # provided by Engine

    def _oci(self, rec: ContainerRecord) -> OciCli:
        """The record's runtime behind the seam (engine/runtimes.py)."""
        from isle.engine.runtimes import for_record

        return (self.runtime_for or for_record)(self.s, rec.opts)

    def _exit_command(self, cid: str, owner: bool = False) -> list[str]:
        """owner: this process (a foreground `run`) records and removes the container itself;
        the exit command waits for it and does that only if it died first (exitcmd.py)."""
        args = [self.s.root, self.s.runroot, cid]
        if owner:
            args += [str(os.getpid()), str(proc_start_time(os.getpid()))]
        if self.s.rootless:
            from isle.engine.rootless import python_argv

            return python_argv("isle.engine.exitcmd") + args
        return [sys.executable, "-m", "isle.engine.exitcmd", *args]

    # -- start --------------------------------------------------------------------------------
    def _start(self, rec: ContainerRecord, *, attach: bool,
               foreground: bool) -> socket.socket | None:
        """conmon -> `runtime create`; then `runtime start`. Caller holds the container lock."""
        import subprocess

        from isle.engine.monitor import (
            LOG_SIZE_MAX,
            MonitorArgs,
            conmon_argv,
            conmon_path,
            connect_attach,
            read_sync,
        )
        from isle.sys import proc

        p = self.paths(rec.id)
        opts = RunOptions.from_dict(rec.opts)
        oci = self._oci(rec)
        self._release(rec, final=False)
        for d in (p.run, p.exit_dir, p.socket_dir, p.bundle):
            os.makedirs(d, exist_ok=True)
        for f in (p.exit_file, p.oom_file, p.pidfile, p.monitor_pidfile,
                  os.path.join(p.exit_dir, rec.id)):
            with suppress(FileNotFoundError):
                os.unlink(f)
        from isle.engine import fastimage

        img = fastimage.resolve(self, rec.image_id)
        rootfs = fastimage.mount(self, img, p.bundle, copy=self.s.rootless)
        sock = None
        try:
            spec = self._spec(rec, opts, img, rootfs)
            write_file(p.config, dumps(spec).encode())
            # "running" before the monitor exists: if we die from here on, _refresh finds the
            # monitor and container through their pid files and never reports a live one as created
            self.db.update_container(rec.id, state="running", pid=0, pid_start=0, monitor_pid=0,
                                     monitor_start=0, started_at=time.time(), finished_at=0.0,
                                     exit_code=0, oom_killed=False, error="")
            # always: a foreground CLI may be killed, and then the exit command records the
            # exit and honours --rm (it waits while the CLI, the owner, lives)
            owner = foreground and opts.restart.name == "no"
            margs = MonitorArgs(
                container_id=rec.id, name=rec.name, runtime_path=oci.path,
                runtime_root=oci.root, runtime_args=oci.args, bundle=p.bundle, persist_dir=p.run,
                exit_dir=p.exit_dir, socket_dir=p.socket_dir, log_path=p.log,
                stdin=opts.interactive, tty=opts.tty,  # -i: open for a later attach too
                leave_stdin_open=opts.interactive and not opts.stdin_once,
                exit_command=self._exit_command(rec.id, owner=owner),
                conmon=conmon_path(), log_size_max=opts.log_max_size or LOG_SIZE_MAX)
            argv = conmon_argv(margs)
            r, w = os.pipe()
            env = dict(os.environ)
            env["_OCI_SYNCPIPE"] = str(w)
            try:
                with open(os.path.join(p.run, "conmon.err"), "wb") as errf:
                    child = proc.spawn(argv, pass_fds=(w,), env=env, stdin=subprocess.DEVNULL,
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
            if opts.network not in ("none", "host") and self.s.rootless:
                from isle.engine import netplug

                try:
                    more = netplug.after_start(self.s, rec.id, rec.name, pid, opts,
                                               img.config.get("config") or {})
                except BaseException:
                    with suppress(OSError):  # the record has no pid yet: _fail_start cannot
                        os.kill(pid, signal.SIGKILL)  # and the init would wait on exec.fifo
                    raise
                if more:
                    rec.extra = {**rec.extra, **more}
                    self.db.update_container(rec.id, extra=rec.extra)
            self.db.update_container(rec.id, state="running", pid=pid,
                                     pid_start=proc_start_time(pid), monitor_pid=mon,
                                     monitor_start=proc_start_time(mon), started_at=time.time(),
                                     finished_at=0.0, exit_code=0, oom_killed=False, error="",
                                     event="start")
            from isle.engine.health import healthcheck_of, spawn_loop

            if healthcheck_of(opts, img.config.get("config") or {}) is not None:
                extra = dict(rec.extra)
                extra["health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
                self.db.update_container(rec.id, extra=extra)
                spawn_loop(self.s, rec.id)
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
            self._fail_start(rec, str(exc))
            raise

    def _fail_start(self, rec: ContainerRecord, err: str) -> None:
        with suppress(Exception):
            self._signal(rec, signal.SIGKILL)
        with suppress(Exception):
            self._release(rec, final=False)
        with suppress(Exception):
            code = 127 if "not found" in err else 126 if "permission denied" in err else 128
            # a container that never ran stays "created" (Docker's: its ExitCode and Error set)
            self.db.update_container(rec.id, state="exited" if rec.started_at else "created",
                                     exit_code=code, pid=0, finished_at=time.time(),
                                     error=err[:2000], event="die")

    def _spec(self, rec: ContainerRecord, opts: RunOptions, img: Any,
              rootfs: str) -> dict[str, Any]:
        from isle.engine import netplug
        from isle.engine.spec import SpecInputs, build_spec, load_default_seccomp
        from isle.engine.volumes import Volumes, safe_join

        p = self.paths(rec.id)
        rt = self._oci(rec)
        hostname = opts.hostname or rec.id[:12]
        mounts = Volumes(self.s, self.db).resolve(opts.mounts, rootfs)
        netns, net_files, net_extra = netplug.connect(self.s, rec.id, rec.name, hostname, opts,
                                                      img.config.get("config") or {},
                                                      lookup=self.get)
        annotations = net_extra.pop("annotations", {})
        if net_extra or any(k in rec.extra for k in _NET_KEYS):
            extra = {k: v for k, v in rec.extra.items() if k not in _NET_KEYS}
            extra.update(net_extra)
            self.db.update_container(rec.id, extra=extra)
            rec.extra = extra
        etc = self._etc_files(p, hostname, opts, net_files)

        def _read(rel: str) -> str:
            try:
                with open(safe_join(rootfs, rel), errors="replace") as f:
                    return f.read()
            except OSError:
                return ""

        seccomp = None
        if not opts.privileged and opts.seccomp != "unconfined":
            if opts.seccomp:
                try:
                    import json

                    with open(opts.seccomp) as f:
                        seccomp = json.load(f)
                except (OSError, ValueError) as exc:
                    raise ConfigError("--security-opt",
                                      f"seccomp profile {opts.seccomp}: {exc}") from None
            else:
                seccomp = load_default_seccomp()
        init = ""
        if opts.init:
            import shutil

            init = shutil.which("tini-static") or shutil.which("docker-init") or ""
            if not init:
                raise ConfigError("--init", "no static init (tini-static) on this host")
        uid_map: list[dict[str, int]] = []
        gid_map: list[dict[str, int]] = []
        delegated = False
        if self.s.rootless:
            from isle.engine.rootless import cgroup_delegated, id_maps

            uid_map, gid_map = id_maps()
            delegated = cgroup_delegated()
        inp = SpecInputs(container_id=rec.id, rootfs=rootfs,
                         image_config=img.config.get("config") or {}, hostname=hostname,
                         passwd=_read("/etc/passwd"), group=_read("/etc/group"), mounts=mounts,
                         etc_files=etc, netns_path=netns,
                         cgroups_path="" if self.s.rootless else f"/isle-{rec.id}",
                         init_path=init, seccomp_profile=seccomp, rootless=self.s.rootless,
                         uid_map=uid_map, gid_map=gid_map, host_caps=_host_caps(),
                         rootless_cgroup=delegated, guest_kernel=rt.caps.has_guest)
        spec = build_spec(opts, inp)
        spec["annotations"].update(annotations)
        if self.s.rootless:
            from isle.engine import netplug

            hook = netplug.slirp_hook(self.s, rec.id, rec.name, opts,
                                      img.config.get("config") or {})
            if hook is not None:
                spec.setdefault("hooks", {}).setdefault("createRuntime", []).append(hook)
        _make_cwd(rootfs, spec["process"].get("cwd") or "/")  # before the VM's disk is chosen
        rt.prepare_spec(self.s, spec, p.bundle, rec.image_id)
        proc = spec["process"]
        if init:  # check the user's command, not the init bind-mounted in front of it
            proc = {**proc, "args": proc["args"][2:]}
        _precheck_command(rootfs, proc)
        return spec

    def _etc_files(self, p: ContainerPaths, hostname: str, opts: RunOptions,
                   net_files: dict[str, str]) -> dict[str, str]:
        files = {}
        if net_files:
            for dest, text in net_files.items():
                host = os.path.join(p.bundle, os.path.basename(dest))
                write_file(host, text.encode(), 0o644)
                files[dest] = host
            return files
        hn = os.path.join(p.bundle, "hostname")
        write_file(hn, (hostname + "\n").encode(), 0o644)
        files["/etc/hostname"] = hn
        hosts = os.path.join(p.bundle, "hosts")
        if opts.network == "host":
            with open("/etc/hosts", "rb") as f:
                write_file(hosts, f.read(), 0o644)
        else:
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                     f"127.0.0.1\t{hostname}"] + [h.replace(":", "\t", 1) for h in opts.extra_hosts]
            write_file(hosts, ("\n".join(lines) + "\n").encode(), 0o644)
        files["/etc/hosts"] = hosts
        rc = os.path.join(p.bundle, "resolv.conf")
        if opts.dns or opts.dns_search or opts.dns_options:
            from isle.net import etc as netetc

            try:
                with open("/etc/resolv.conf") as f:
                    host = f.read()
            except OSError:
                host = ""
            write_file(rc, netetc.render_resolv(
                host_resolv=host, dns=opts.dns, dns_search=opts.dns_search,
                dns_options=opts.dns_options, host_network=opts.network == "host").encode(), 0o644)
        else:
            try:
                with open("/etc/resolv.conf", "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            write_file(rc, data, 0o644)
        files["/etc/resolv.conf"] = rc
        return files

    # -- foreground run -------------------------------------------------------------------------
    def _run_foreground(self, rec: ContainerRecord, opts: RunOptions, stdin_fd: int | None,
                        stdout_fd: int, stderr_fd: int) -> RunReport:
        from isle.engine.attach import pump, raw_terminal, wait_pid_exit

        p = self.paths(rec.id)
        try:
            with self._locked(rec.id):  # type: ignore[attr-defined]
                sock = self._start(rec, attach=True, foreground=True)
        except BaseException:
            self._remove_after_failure(rec, opts)  # type: ignore[attr-defined]
            raise
        rec = self.db.get_container(rec.id)
        assert sock is not None
        old: dict[int, Any] = {}
        if opts.sig_proxy:  # Docker's sig-proxy, with a tty too (a terminal's ^C is a byte)
            def _fwd(sig: int, _f: Any) -> None:
                with suppress(Exception):
                    self._signal(rec, sig)  # through the runtime where it must (a VM's guest)
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
        with self._locked(rec.id):  # type: ignore[attr-defined]
            rec = self._refresh(self.db.get_container(rec.id))
            if opts.remove:
                self._release(rec, final=True)
                self.db.delete_container(rec.id)
                self._remove_anon_volumes(rec)  # type: ignore[attr-defined]
            else:
                self._release(rec, final=False)
        return RunReport(id=rec.id, name=rec.name, exit_code=rec.exit_code, removed=opts.remove)

    # -- truth ----------------------------------------------------------------------------------
    def _refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """Re-derive a live container's state from conmon's exit file and pid liveness."""
        if rec.state not in ("running", "paused"):
            return rec
        p = self.paths(rec.id)
        code = read_int(p.exit_file)
        if code is None:
            if alive(rec.pid, rec.pid_start):
                if rec.monitor_pid and not rec.error \
                        and not alive(rec.monitor_pid, rec.monitor_start):
                    from isle.engine.monitor import note_monitor_lost

                    rec.error = note_monitor_lost(p.log)  # the loss visible: inspect, logs
                    self.db.update_container(rec.id, error=rec.error)
                return rec
            if alive(rec.monitor_pid, rec.monitor_start):
                if not rec.pid:  # a monitor-less foreground run (direct.py): adopt the pid file
                    cpid = read_int(p.pidfile) or 0
                    if proc_start_time(cpid):
                        rec.pid, rec.pid_start = cpid, proc_start_time(cpid)
                        self.db.update_container(rec.id, pid=cpid, pid_start=rec.pid_start)
                return rec
            if not rec.pid:  # a start in progress or cut short
                if self._lock_busy(rec.id):  # type: ignore[attr-defined]
                    return rec  # someone is starting it right now
                cpid = read_int(p.pidfile) or 0
                if proc_start_time(cpid):
                    st = self._oci(rec).state(rec.id) or {}
                    if st.get("status") in ("running", "paused"):
                        self.db.update_container(rec.id, pid=cpid, pid_start=proc_start_time(cpid))
                        rec.pid, rec.pid_start = cpid, proc_start_time(cpid)
                        return rec
                    # created but never started: the starter died; undo it, say so
                    self._fail_start(rec, "the start was interrupted")
                    return self.db.get_container(rec.id)
            code = read_int(p.exit_file)  # written between our two looks
        err = ""
        if code is None:
            from isle.engine.monitor import lost_exit

            code, err = lost_exit(self._oci(rec), rec.id, rec.error)
            finished = time.time()
        else:
            try:
                finished = os.stat(p.exit_file).st_mtime
            except OSError:
                finished = time.time()
            if code and self._oci(rec).caps.has_guest:  # a QEMU crash: the runtime's reason
                from isle.engine.monitor import runtime_error

                err = runtime_error(self._oci(rec), rec.id)
        oom = os.path.exists(p.oom_file)
        if not self.db.update_container(rec.id, state="exited", exit_code=code, pid=0,
                                        finished_at=finished, oom_killed=oom, error=err,
                                        event="oom" if oom else "die",
                                        attrs={"exitCode": str(code)},
                                        when_state=("running", "paused")):
            return self.db.get_container(rec.id)  # another process recorded the end first
        rec.state, rec.exit_code, rec.pid, rec.finished_at, rec.oom_killed, rec.error = (
            "exited", code, 0, finished, oom, err)
        return rec

    def _signal(self, rec: ContainerRecord, sig: int) -> None:
        """Signal the container's init (what `runtime kill ID SIG` does, minus a process start);
        SIGKILL of a pid namespace's init takes every process in it along."""
        if not alive(rec.pid, rec.pid_start):
            return
        rt = self._oci(rec)
        if not rt.caps.signals_host_pid:
            # e.g. isle-vm-runtime: the pid is the VM's host side; the runtime signals the guest
            if rt.kill(rec.id, int(sig), all_procs=sig == signal.SIGKILL):
                return
        try:
            os.kill(rec.pid, sig)
        except OSError:
            rt.kill(rec.id, int(sig), all_procs=sig == signal.SIGKILL)

    def _kill_for_removal(self, rec: ContainerRecord) -> None:
        """rm -f: the monitor first (so no exit command runs for a record about to vanish),
        then the container; wait until its init is gone."""
        if alive(rec.monitor_pid, rec.monitor_start):
            with suppress(OSError):
                os.kill(rec.monitor_pid, signal.SIGKILL)
        self._signal(rec, signal.SIGKILL)
        self._wait_dead(rec, 10)

    def _wait_dead(self, rec: ContainerRecord, timeout: float) -> bool:
        from isle.engine.attach import wait_pid_exit

        if not alive(rec.pid, rec.pid_start):
            return True
        wait_pid_exit(rec.pid, timeout)
        return not alive(rec.pid, rec.pid_start)

    def _reap(self, rec: ContainerRecord) -> None:
        """After the container died: let conmon write its exit file, then record and release."""
        from isle.engine.attach import wait_pid_exit

        if alive(rec.monitor_pid, rec.monitor_start):
            wait_pid_exit(rec.monitor_pid, 10)
        with self._locked(rec.id):  # type: ignore[attr-defined]
            try:
                cur = self._refresh(self.db.get_container(rec.id))
            except NotFound:  # a `run --rm` that owned it has removed it already
                return
            if cur.state == "exited":
                self._release(cur, final=False)

    def _release(self, rec: ContainerRecord, *, final: bool) -> None:
        """Give back what a (dead) container held: runtime state, cgroups, rootfs mount."""
        p = self.paths(rec.id)
        if alive(rec.pid, rec.pid_start) and rec.state not in ("running", "paused"):
            with suppress(OSError):
                os.kill(rec.pid, signal.SIGKILL)
        # the runtime's own state, through the runtime (its CLI, or its module where it declares
        # an in-process path): never by removing its state dir here
        self._oci(rec).release(rec.id, running=alive(rec.pid, rec.pid_start)
                               or rec.state in ("running", "paused"))
        from isle.cgroups import remove_everywhere  # the runtime's fallback: it lost its state

        remove_everywhere(f"isle-{rec.id}")
        from isle.engine import netplug  # always: an `isle` killed mid-setup recorded no netns

        with suppress(Exception):
            netplug.teardown(self.s, rec.id, RunOptions.from_dict(rec.opts))
        from isle.engine import fastimage

        with suppress(Exception):
            fastimage.unmount(self, p.bundle)
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


def _rmtree_bundle(bundle: str) -> None:
    rootfs = os.path.join(bundle, "rootfs")
    with suppress(OSError):
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4] == rootfs for line in f):
                return  # never recurse into a live mount
    rmtree(bundle)
    if os.path.lexists(bundle) and os.geteuid() != 0:
        from isle.engine import buildns  # files of the user's subordinate ids (chown inside)

        buildns.rmtree(bundle)


def _host_caps() -> list[str]:
    from isle.engine.spec import host_bounding_caps

    with open("/proc/self/status") as f:
        return host_bounding_caps(f.read())


def _make_cwd(rootfs: str, cwd: str) -> None:
    """Docker's -w: a missing working directory is made (0755, root's) in the container's
    filesystem before it starts, for every runtime and isolation (the rootfs is the host's)."""
    from isle.engine.volumes import safe_join

    host = safe_join(rootfs, cwd)
    if not os.path.lexists(host):
        os.makedirs(host, 0o755, exist_ok=True)


def _precheck_command(rootfs: str, process: dict[str, Any]) -> None:
    """Docker's 127/126 before anything starts: resolve argv[0] in the rootfs like execvp would."""
    from isle.engine.volumes import safe_join

    argv0 = process["args"][0]
    if "/" in argv0:
        cands = [argv0 if argv0.startswith("/") else os.path.join(process.get("cwd") or "/", argv0)]
    else:
        path = next((e.split("=", 1)[1] for e in process.get("env", []) if e.startswith("PATH=")),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        cands = [os.path.join(d or "/", argv0) for d in path.split(":")]
    for c in cands:
        try:
            host = safe_join(rootfs, c)
        except ConfigError:
            continue
        if os.path.isfile(host):
            if not os.access(host, os.X_OK):
                raise CannotInvoke(f"exec: {argv0!r}: permission denied")
            return
        if os.path.isdir(host) and "/" in argv0:
            raise CannotInvoke(f"exec: {argv0!r}: is a directory")
    if os.path.isdir(os.path.join(rootfs, "bin")) or os.path.isdir(os.path.join(rootfs, "usr")):
        where = "" if "/" in argv0 else " in $PATH"
        raise CommandNotFound(f"exec: {argv0!r}: executable file not found{where}")


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
