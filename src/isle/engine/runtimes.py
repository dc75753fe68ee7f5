"""The seam: every OCI runtime the engine drives, behind one interface with capabilities as data.

podman's ``OCIRuntime`` is the model: the engine calls verbs (create/start/state/kill/delete/
exec/pause/resume/ps) and asks capabilities (``rt.caps.has_guest``...), never a runtime's name.
Which runtime a container uses is settled once, at create, by ``pick`` (the one place
``--isolation`` means something); afterwards ``for_record`` rebuilds the same object from the
record's runtime path.

    rt = for_record(settings, rec.opts)
    rt.start(cid)                       # isle-runtime: a call into its module; others: their CLI
    if rt.caps.signals_host_pid: os.kill(pid, sig)
    else: rt.kill(cid, sig)

Implementations:
    OciCli        any runc-compatible CLI on PATH (conservative capabilities)
    Runc, Crun    runc and crun: `run` waits and forwards signals, the pid is the host's init
    IsleRuntime   isle's container runtime: start/delete/foreground run in-process (declared)
    IsleVmRuntime isle's VM runtime (Kata's model): the container lives in a guest kernel
    Runsc         gVisor: its global flags (platform, network, --root) on every call

Only this module (and the runtimes' own public module API it calls where a capability says
"in process") may import ``isle.runtime``: tests/unit/arch/test_arch_seam.py checks that.
"""

from __future__ import annotations

import os

from isle.errors import CommandError, ConfigError, IsleError, NotFound, Unsupported
from isle.oci.fastjson import loads

TYPE_CHECKING = False  # typing: ~3 ms of `isle run` (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

    from isle.config import Settings

__all__ = ["Caps", "OciCli", "Runc", "Crun", "IsleRuntime", "IsleVmRuntime", "Runsc",
           "for_record", "for_path", "pick", "resolve_runtime", "vm_runtime_path", "ISOLATIONS"]

#: the isolation levels `--isolation` accepts ("default" and "" mean container)
ISOLATIONS = ("container", "sandbox", "vm")


class Caps:
    """What a runtime can do, as data (podman's Supports* methods). Defaults are the safe ones
    for an unknown runc-compatible CLI."""

    __slots__ = ("in_process", "direct_run", "signals_host_pid", "has_guest", "tty_copy",
                 "host_rootfs", "host_procs", "needs_netns", "multi_network", "rootless_network",
                 "guest_files")

    def __init__(self, *, in_process: bool = False, direct_run: bool = False,
                 signals_host_pid: bool = False, has_guest: bool = False,
                 tty_copy: bool = False, host_rootfs: bool = True, host_procs: bool = True,
                 needs_netns: bool = True, multi_network: bool = True,
                 rootless_network: bool = True, guest_files: bool = False) -> None:
        #: start/delete/foreground run may call the runtime's own module in this process (or a
        #: fork of it) instead of starting its CLI: isle's runtimes only
        self.in_process = in_process
        #: `run` does create + start + wait + delete and forwards signals to the container, so a
        #: foreground `run --rm` needs no monitor (engine/direct.py)
        self.direct_run = direct_run
        #: the pid the runtime reports is the container's init on this host: os.kill reaches it
        #: (else signals go through `runtime kill`)
        self.signals_host_pid = signals_host_pid
        #: the container runs under a guest kernel: its pid is a host-side shim, its files and
        #: processes are not the host's view (cp/diff/commit/export/top/stats ask the runtime)
        self.has_guest = has_guest
        #: a foreground `exec -t` copies the terminal itself (runc); else a console socket
        self.tty_copy = tty_copy
        #: the bundle's rootfs on the host is what the container sees (cp/diff/commit/export)
        self.host_rootfs = host_rootfs
        #: without host_rootfs: guest_files reaches what the guest sees (else those verbs are
        #: refused)
        self.guest_files = guest_files
        #: the container's processes are host processes in cgroup isle-<id> (top/stats)
        self.host_procs = host_procs
        #: takes the network namespace named in the spec (every runtime here does; a VM runtime
        #: connects its guest to it itself)
        self.needs_netns = needs_netns
        #: uses every interface of that namespace (a guest takes over one: one network)
        self.multi_network = multi_network
        #: works in a rootless slirp4netns namespace (a rootless guest gets no network: QEMU's
        #: user networking would reach the host's loopback)
        self.rootless_network = rootless_network

    def as_dict(self) -> dict[str, bool]:
        return {k: getattr(self, k) for k in self.__slots__}


class OciCli:
    """A runc-compatible runtime driven through its CLI: argv in, facts out."""

    name = "oci"
    #: the isolation level its containers run at (records, `ps --filter isolation=`, the spec's
    #: org.isle.isolation annotation)
    level = "container"
    caps = Caps()
    #: keeps a directory per container under --root (runc's layout): its absence means there is
    #: nothing to delete (looked at, never written: deleting is the runtime's own `delete`)
    state_in_root = False

    def __init__(self, path: str, root: str, args: list[str] | None = None) -> None:
        self.path = path
        self.root = root
        self.args = list(args or [])  # global flags before the sub-command (runsc's --platform)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, root={self.root!r})"

    def _argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *self.args, *args]

    def run(self, *args: str, timeout: float = 60, check: bool = True) -> Any:
        from isle.sys import proc  # subprocess: not on the paths that never run the runtime CLI

        return proc.run(self._argv(*args), timeout=timeout, check=check)

    # -- verbs ----------------------------------------------------------------------------------
    def start(self, cid: str) -> None:
        self.run("start", cid)

    def state(self, cid: str) -> dict[str, Any] | None:
        cp = self.run("state", cid, check=False)
        if cp.returncode != 0:
            return None
        return loads(cp.stdout)  # type: ignore[no-any-return]

    def kill(self, cid: str, sig: int, *, all_procs: bool = False) -> bool:
        args = ["kill"] + (["--all"] if all_procs else []) + [cid, str(sig)]
        cp = self.run(*args, check=False)
        return bool(cp.returncode == 0)

    def delete(self, cid: str, *, force: bool = False) -> None:
        cp = self.run("delete", *(["--force"] if force else []), cid, check=False)
        if cp.returncode != 0:
            err = (cp.stderr or b"").decode(errors="replace")
            if "does not exist" in err or "not exist" in err or "not found" in err:
                return
            raise CommandError(self._argv("delete", cid), cp.returncode, err)

    def release(self, cid: str, *, running: bool) -> None:
        """Drop the runtime's state of a container the engine is done with (stopped, or being
        removed by force): `delete --force`, quietly if there is nothing to delete."""
        if self.state_in_root and not os.path.isdir(os.path.join(self.root, cid)):
            return  # never created (or its foreground `run` deleted it): no process to start
        try:
            self.delete(cid, force=True)
        except CommandError:
            pass

    def pause(self, cid: str) -> None:
        self.run("pause", cid)

    def resume(self, cid: str) -> None:
        self.run("resume", cid)

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        """New limits for a live container: `update --resources -` (LinuxResources JSON on
        stdin, as containerd's shim and podman send it); CommandError if the runtime refuses."""
        import json

        from isle.sys import proc

        proc.run(self._argv("update", "--resources", "-", cid),
                 input=json.dumps(resources).encode())

    def ps(self, cid: str) -> list[int]:
        cp = self.run("ps", "--format", "json", cid, check=False)
        if cp.returncode != 0:
            raise NotFound(f"container {cid} is not running")
        return list(loads(cp.stdout or b"[]") or [])

    def guest_top(self, cid: str) -> list[list[str]]:
        """caps.has_guest: the container's processes as its guest kernel lists them (a header
        row, then one row each), for `top`."""
        raise self.unsupported("top", "its processes live in a guest kernel, not on this host")

    def guest_stats(self, cid: str) -> dict[str, int]:
        """caps.has_guest: memory_usage/memory_limit (bytes), cpu_ns, pids as the guest sees
        them, and host_pss: what the instance costs the host (bytes)."""
        raise self.unsupported("stats", "its memory, CPU and pids are a guest kernel's")

    def guest_files(self, settings: Settings, cid: str, bundle: str, op: str,
                    args: tuple[str, ...], in_fd: int, out_fd: int) -> str:
        """caps.guest_files: a tar of the container's files as its guest sees them, made by
        the guest (running, or booted for it when stopped): op 'out' PATH, 'in' DEST ISDIR
        CONTENTS NAME (a tar from in_fd), 'upper' (its writable layer), 'export'; tars go to
        out_fd; returns the guest's notes ('upper': 'opaque DIR' lines). NotFound/ConfigError
        in the guest's words (runtime/vm/guestfs.py)."""
        raise self.unsupported("cp", "its files live in a guest this runtime cannot reach")

    def layer_files(self, bundle: str) -> list[str]:
        """Files beside the bundle's upper dir that hold the container's writable layer (a
        guest's disk): `system df` counts their allocated bytes."""
        return []

    def exec_argv(self, cid: str, process_json: str, *, detach: bool, tty: bool,
                  pid_file: str = "") -> list[str]:
        argv = self._argv("exec", "--process", process_json)
        if detach:
            argv.append("--detach")
        if pid_file:
            argv += ["--pid-file", pid_file]
        argv.append(cid)
        return argv

    def run_argv(self, cid: str, bundle: str, pid_file: str) -> list[str]:
        """The foreground `run` (create + start + wait + delete), for caps.direct_run."""
        return self._argv("run", "--bundle", bundle, "--pid-file", pid_file, cid)

    # -- hooks the engine calls at fixed points -------------------------------------------------
    def prepare_spec(self, settings: Settings, spec: dict[str, Any], bundle: str,
                     image_id: str) -> None:
        """Last touches to config.json before create (annotations the runtime understands)."""

    def run_in_process(self, settings: Settings, cid: str, bundle: str, pid_file: str) -> int:
        """caps.in_process and caps.direct_run: the runtime's foreground `run` as a call (the
        caller has forked and set up stdio); its exit code."""
        raise Unsupported(f"{self.name} cannot run in-process")

    def unsupported(self, verb: str, what: str = "") -> Unsupported:
        """The clear refusal for a verb this runtime's containers cannot honour from the host."""
        why = what or "the container runs under a guest kernel, not on this host's filesystem"
        exc = Unsupported(f"{verb} is not supported for a container of {self.name}: {why}")
        exc.exit_code = 125  # isle's own refusal (podman's convention), not a usage error
        return exc


class Runc(OciCli):
    name = "runc"
    state_in_root = True
    caps = Caps(direct_run=True, signals_host_pid=True, tty_copy=True)


class Crun(OciCli):
    name = "crun"
    state_in_root = True
    caps = Caps(direct_run=True, signals_host_pid=True)


class IsleRuntime(OciCli):
    """isle's container runtime. Declared in-process fast paths: `start` (open the exec fifo)
    and `delete` of a stopped container are calls into isle.runtime.container, and a foreground
    `run` goes into a fork of the CLI (engine/direct.py): no second interpreter (~20 ms each)."""

    name = "isle-runtime"
    state_in_root = True
    caps = Caps(in_process=True, direct_run=True, signals_host_pid=True)

    def start(self, cid: str) -> None:
        from isle.runtime.container import start

        try:
            start(self.root, cid)
        except (IsleError, OSError) as exc:
            raise CommandError(self._argv("start", cid), 1, f"isle-runtime: {exc}") from None

    def release(self, cid: str, *, running: bool) -> None:
        if not os.path.isdir(os.path.join(self.root, cid)):
            return  # nothing of ours (a foreground run deletes its own state)
        if running:  # a live container: the CLI (kill, wait, destroy) as any runtime
            super().release(cid, running=True)
            return
        from isle.runtime.container import delete

        try:
            delete(self.root, cid, force=True)
        except (IsleError, OSError):
            super().release(cid, running=False)

    def run_in_process(self, settings: Settings, cid: str, bundle: str, pid_file: str) -> int:
        from isle.runtime.container import Options, run

        return run(self.root, cid, Options(bundle=bundle, pid_file=pid_file), False)


class IsleVmRuntime(OciCli):
    """isle's VM runtime: the same bundle in a microVM. The recorded pid is the VM's host side,
    so signals, ps and state go through the runtime; the rootfs and processes the container
    sees are the guest's."""

    name = "isle-vm-runtime"
    level = "vm"
    state_in_root = True
    caps = Caps(in_process=True, direct_run=True, has_guest=True, host_rootfs=False,
                host_procs=False, multi_network=False, rootless_network=False, guest_files=True)

    def prepare_spec(self, settings: Settings, spec: dict[str, Any], bundle: str,
                     image_id: str) -> None:
        from isle.engine.vmhook import annotate

        # the writable layer as a file in the bundle: it outlives the runtime's state, so the
        # engine's cp/diff/commit/export reach it after the container stopped (first: it is
        # part of the boot identity annotate() matches templates by)
        spec.setdefault("annotations", {}).setdefault("org.isle.vm.upper",
                                                      self.layer_files(bundle)[0])
        annotate(settings, spec, bundle, image_id)

    def layer_files(self, bundle: str) -> list[str]:
        return [os.path.join(os.path.abspath(bundle), "guest-upper.ext4")]

    def guest_files(self, settings: Settings, cid: str, bundle: str, op: str,
                    args: tuple[str, ...], in_fd: int, out_fd: int) -> str:
        from isle.runtime.vm.guestfs import run_op

        return run_op(cid, self.root, settings, bundle, op, args, in_fd, out_fd)

    def run_in_process(self, settings: Settings, cid: str, bundle: str, pid_file: str) -> int:
        from isle.runtime.vm.runner import run as vm_run

        return vm_run(cid, bundle, self.root, settings, pid_file)

    def ps(self, cid: str) -> list[int]:
        raise self.unsupported("top", "its processes are the guest's, not this host's")

    def guest_top(self, cid: str) -> list[list[str]]:
        from isle.runtime.vm.runner import guest_ps

        return guest_ps(cid, self.root)

    def guest_stats(self, cid: str) -> dict[str, int]:
        from isle.runtime.vm.runner import guest_stats

        s = guest_stats(cid, self.root)
        s["host_pss"] = s.pop("qemu_pss", 0)
        return s

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        raise self.unsupported("update of a running container's resources",
                               "its limits are the VM's, set when it boots: stop it, update, "
                               "start it again")


def vm_boot(settings: Settings, spec: dict[str, Any], bundle: str) -> Any:
    """The VM runtime's Boot for this spec (its public module API), whose snapshot key
    engine/vmhook.py matches against the cached templates; IsleError if the spec cannot boot."""
    from isle.runtime.vm.runner import boot_of

    return boot_of(spec, bundle, settings)


class Runsc(OciCli):
    """gVisor: configured by global flags on every call (engine/sandbox.py builds them)."""

    name = "runsc"
    level = "sandbox"
    caps = Caps()


_BY_NAME: dict[str, type[OciCli]] = {
    "runc": Runc, "crun": Crun, "isle-runtime": IsleRuntime, "isle-vm-runtime": IsleVmRuntime,
    "runsc": Runsc,
}


def for_path(path: str, root: str) -> OciCli:
    """The implementation for a runtime executable (by its file name; unknown: OciCli)."""
    return _BY_NAME.get(os.path.basename(path), OciCli)(path, root)


def for_record(settings: Settings, opts: dict[str, Any]) -> OciCli:
    """The runtime a container record was created with (opts["runtime"], an absolute path)."""
    path = opts.get("runtime") or "runc"
    cls = _BY_NAME.get(os.path.basename(path), OciCli)
    if cls is Runsc:  # its flags depend on the container's network mode
        from isle.engine import netplug, sandbox
        from isle.engine.options import RunOptions

        mode = netplug.mode_of(RunOptions.from_dict(opts), settings.rootless)
        exe, root, args = sandbox.oci_args(settings.runroot, path, mode)
        return Runsc(exe, root, args)
    return cls(path, settings.runtime_root)


def pick(settings: Settings, opts: Any) -> OciCli:
    """At create: settle opts.isolation and opts.runtime (an absolute path) from --isolation and
    --runtime; the one place an isolation level names a runtime."""
    iso = opts.isolation or ""
    if iso not in ("", "default", *ISOLATIONS):
        raise ConfigError("--isolation", f"unknown isolation {iso!r} (container, sandbox, vm)")
    if iso == "vm":
        opts.runtime = opts.runtime or vm_runtime_path()
    if iso == "sandbox" or os.path.basename(opts.runtime or "") == "runsc":
        from isle.engine import sandbox  # gVisor: runsc is the runtime, whichever was asked

        sandbox.check(opts, settings.rootless)
    explicit = bool(opts.runtime) or "ISLE_RUNTIME" in os.environ \
        or settings.runtime != "isle-runtime"
    opts.runtime = resolve_runtime(opts.runtime or settings.runtime, explicit=explicit)
    rt = for_path(opts.runtime, settings.runtime_root)
    if iso in ("vm", "sandbox") and iso != rt.level:  # ("container" is the default: not a demand)
        raise ConfigError("--runtime", f"--isolation {iso} cannot run on {opts.runtime} "
                          f"(a runtime of the {rt.level} level)")
    opts.isolation = rt.level  # --runtime isle-vm-runtime is a VM container as --isolation vm is
    return rt


def vm_runtime_path() -> str:
    """isle-vm-runtime beside our interpreter (the VM-isolated OCI runtime), else a clear error."""
    import sys

    p = os.path.join(os.path.dirname(sys.executable), "isle-vm-runtime")
    if os.access(p, os.X_OK):
        return p
    try:
        return resolve_runtime("isle-vm-runtime")
    except ConfigError:
        raise Unsupported("--isolation vm needs isle-vm-runtime, "
                          "which is not installed here") from None


# -- names -> executables ---------------------------------------------------------------------
def _isle_runtime_works() -> str | None:
    """The isle-runtime entry point (beside our interpreter, else on PATH) if its interpreter
    is usable by us; else None (fall back to runc)."""
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "isle-runtime")
    if os.access(beside, os.X_OK) and _interpreter_ok(beside):
        return beside
    cand = _which("isle-runtime")
    if cand and os.access(cand, os.X_OK) and _interpreter_ok(cand):
        return cand
    return None


def _interpreter_ok(path: str) -> bool:
    """A script's #! interpreter must be executable by us (a venv under /root is not, for users)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return True
    interp = head[2:].split(b"\n", 1)[0].split()[0].decode()
    return os.access(os.path.realpath(interp), os.X_OK)


def resolve_runtime(name: str, *, explicit: bool = True) -> str:
    """'isle-runtime' | 'runc' | 'crun' | PATH -> an absolute executable path (ConfigError if none).

    explicit=False means "the configured default": isle-runtime where it works, else runc.
    """
    if not name or name == "isle-runtime":
        p = _isle_runtime_works()
        if p:
            return p
        if explicit and name:
            raise ConfigError("--runtime", "isle-runtime is not installed here")
        name = "runc"
    if os.sep in name:
        if not os.access(name, os.X_OK):
            raise ConfigError("--runtime", f"{name}: not an executable file")
        return os.path.abspath(name)
    p = _which(name)
    if p is None:
        raise ConfigError("--runtime", f"runtime {name!r} not found on PATH")
    return p


def _which(name: str) -> str | None:
    from isle.sys import proc

    return proc.which(name)
