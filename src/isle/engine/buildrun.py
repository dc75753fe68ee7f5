"""The sandbox of ``isle build`` RUN steps: exactly what ``isle run`` gives a container.

A RUN step's config.json is made by the same code as a container's (``engine.spec.build_spec``
from ``RunOptions``), so Docker's default capability set, the default seccomp profile, masked and
read-only /proc paths, the device cgroup allow-list, the standard /dev, no_new_privs as isle run
sets it and the namespaces cannot drift apart between the two. The network is the one
``isle run --network`` would give (``engine.netplug``):

    default  a private network namespace on isle's default bridge network (outbound through its
             NAT, like a container on it); rootless: none (slirp4netns needs the step's pid
             before it runs, which a foreground ``runtime run`` does not give)
    none     a private network namespace with loopback only
    host     the host's network (the step sees the host's loopback services too)

A step's ``RUN --network=none`` narrows the build's network; ``RUN --network=host`` needs
``isle build --network host`` (a Containerfile cannot give itself the host's network).

The builder (``image/build``) calls ``prepare`` for each step, runs the runtime, and ``release``
afterwards (also when the step fails or the build is interrupted: SIGTERM/SIGHUP become an
exception during a build). Each live step has a small record under ``<runroot>/build-steps``;
a build that was killed outright (SIGKILL) leaves its step's container, network, cgroups and
overlay behind, and the next isle command that opens the engine sweeps every record whose
builder is gone (``engine/buildsteps``: one directory listing when nothing is to be done).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from isle.config import Settings
from isle.engine import buildsteps, netplug
from isle.engine.bundle import host_caps, read_in_root
from isle.engine.options import RunOptions
from isle.engine.spec import SpecInputs, build_spec, load_default_seccomp
from isle.errors import ConfigError

__all__ = ["RunSandbox", "NETWORKS"]

NETWORKS = ("default", "none", "host")
_MODE = {"default": "", "none": "none", "host": "host"}
HOSTNAME = "isle-build"


class RunSandbox:
    """One build's RUN steps: ``prepare(cid, ...)`` -> config.json, ``release(cid)`` undoes it."""

    def __init__(self, settings: Settings, network: str = "default", *, runtime: str = "",
                 state_dir: str = "", unmount: Callable[[str], None] | None = None) -> None:
        self.s = settings
        self.network = _network("--network", network)
        self.runtime, self.state_dir, self.unmount = runtime, state_dir, unmount
        self.steps_dir = os.path.join(settings.runroot, buildsteps.STEPS_DIR)
        self._live: dict[str, RunOptions] = {}
        self._seccomp: dict[str, Any] | None = None
        self._caps: list[str] | None = None
        self._old: dict[int, Any] = {}

    # -- the builder's interface -------------------------------------------------------------
    def prepare(self, cid: str, rootfs: str, bundle: str, argv: list[str], env: list[str],
                cwd: str, user: str, *, network: str | None = None) -> dict[str, Any]:
        """The step's config.json (as isle run would make it) and its network, set up now."""
        net = self.network if network is None else _network("RUN --network", network)
        if net == "host" and self.network != "host":
            raise ConfigError("RUN --network=host", "needs `isle build --network host` (a "
                                                    "Containerfile cannot take the host's network)")
        mode = _MODE[net]
        if mode == "" and self.s.rootless:
            mode = "none"
        opts = RunOptions(image="", command=list(argv), entrypoint=[], env=list(env),
                          workdir=cwd or "/", user=user or "", network=mode)
        passwd, group = read_in_root(rootfs, "/etc/passwd"), read_in_root(rootfs, "/etc/group")
        self._live[cid] = opts
        try:
            self._record(cid, bundle, mode)
            netns, files, _facts = netplug.connect(self.s, cid, cid, HOSTNAME, opts, {})
            etc = self._etc_files(bundle, mode, files)
            uid_map: list[dict[str, int]] = []
            gid_map: list[dict[str, int]] = []
            if self.s.rootless:
                from isle.engine import buildns

                if buildns.inside():  # already root over the user's ids: map them 1:1
                    uid_map, gid_map = buildns.step_maps()
                else:
                    from isle.engine.rootless import id_maps

                    uid_map, gid_map = id_maps()
            inp = SpecInputs(container_id=cid, rootfs=rootfs, image_config={}, hostname=HOSTNAME,
                             passwd=passwd, group=group, etc_files=etc, netns_path=netns,
                             cgroups_path="" if self.s.rootless else f"/{cid}",
                             seccomp_profile=self._default_seccomp(),
                             rootless=self.s.rootless, uid_map=uid_map, gid_map=gid_map,
                             host_caps=self._host_caps())
            spec = build_spec(opts, inp)
        except BaseException:
            self.release(cid)
            raise
        spec["annotations"]["org.isle.build"] = "run"
        return spec

    def release(self, cid: str, *, done: bool = True) -> None:
        """Undo the step's network (idempotent; the runtime removed its cgroups); done: its
        bundle is gone too, so its record goes."""
        opts = self._live.pop(cid, None)
        if opts is not None:
            netplug.teardown(self.s, cid, opts)
        if done:
            try:
                os.unlink(os.path.join(self.steps_dir, cid))
            except FileNotFoundError:
                pass

    # -- one build: signals become exceptions, so an interrupted step is cleaned up ---------
    def __enter__(self) -> RunSandbox:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._old[sig] = signal.signal(sig, _interrupted)
        try:
            self.sweep()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for cid in list(self._live):
                self.release(cid)
        finally:
            for sig, h in self._old.items():
                signal.signal(sig, h)
            self._old.clear()

    # -- steps of builds that were killed outright --------------------------------------------
    def _record(self, cid: str, bundle: str, mode: str) -> None:
        from isle.oci.fastjson import dumps

        os.makedirs(self.steps_dir, mode=0o700, exist_ok=True)
        rec = {"owner": os.getpid(), "owner_start": buildsteps.start_time(os.getpid()),
               "bundle": bundle,
               "network": mode, "runtime": self.runtime, "state": self.state_dir}
        fd = os.open(os.path.join(self.steps_dir, cid),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(dumps(rec))

    def sweep(self) -> list[str]:
        """Clean up the steps of builds whose process is gone; -> their ids."""
        from isle.sys.fs import flock

        try:
            names = sorted(os.listdir(self.steps_dir))
        except FileNotFoundError:
            return []
        swept = []
        with flock(os.path.join(self.steps_dir, ".lock")):
            for cid in names:
                if not cid.startswith(buildsteps.PREFIX):
                    continue
                rec = buildsteps.read_step(self.steps_dir, cid)
                if rec is None or buildsteps.owner_alive(rec):
                    continue  # gone meanwhile, or its build is still running
                self._sweep_one(cid, rec)
                swept.append(cid)
        return swept

    def _sweep_one(self, cid: str, rec: dict[str, Any]) -> None:
        import shutil
        import time

        from isle.engine.quiet import suppress
        from isle.sys import proc

        bundle = str(rec.get("bundle") or "")
        with suppress(Exception):
            with open(os.path.join(bundle, "step.pid")) as f:
                pid = int(f.read().strip() or 0)
            if pid > 0 and _in_cgroup(pid, cid):
                os.kill(pid, signal.SIGKILL)  # its pid namespace ends with it
        if rec.get("runtime") and rec.get("state"):
            from isle.image.build.runspec import resolve_runtime

            with suppress(Exception):
                proc.run([resolve_runtime(rec["runtime"]), "--root", rec["state"], "delete",
                          "--force", cid], check=False, timeout=30)
        if not self.s.rootless:
            for _ in range(50):  # empty once the init is reaped (an orphaned runtime may too)
                if not _rm_cgroups(cid):
                    break
                time.sleep(0.1)
        with suppress(Exception):
            netplug.teardown(self.s, cid, RunOptions(image="", network=rec.get("network", "")))
        if bundle and os.path.basename(bundle).startswith("build-run-"):
            if self.unmount is not None:
                with suppress(Exception):
                    self.unmount(bundle)
            with open("/proc/self/mountinfo") as f:
                if (" " + bundle + "/") not in f.read():
                    shutil.rmtree(bundle, ignore_errors=True)
        with suppress(FileNotFoundError):
            os.unlink(os.path.join(self.steps_dir, cid))

    # -- helpers ---------------------------------------------------------------------------
    def _etc_files(self, bundle: str, mode: str, files: dict[str, str]) -> dict[str, str]:
        """/etc/hosts and /etc/resolv.conf for the step, written in its bundle (never the image's
        /etc/hostname: a step may change or remove it, as with docker build)."""
        if not files:
            hosts = _read_host("/etc/hosts") if mode == "host" else (
                f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"127.0.0.1\t{HOSTNAME}\n")
            files = {"/etc/hosts": hosts, "/etc/resolv.conf": _read_host("/etc/resolv.conf")}
        out = {}
        for dest in ("/etc/hosts", "/etc/resolv.conf"):
            if dest in files:
                host = os.path.join(bundle, "etc-" + os.path.basename(dest))
                fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "w") as f:
                    f.write(files[dest])
                out[dest] = host
        return out

    def _default_seccomp(self) -> dict[str, Any]:
        if self._seccomp is None:
            prof = load_default_seccomp()
            if prof is None:
                raise ConfigError("seccomp", "isle's default seccomp profile is missing: "
                                             "RUN steps do not run without it")
            self._seccomp = prof
        return self._seccomp

    def _host_caps(self) -> list[str]:
        if self._caps is None:
            self._caps = host_caps()
        return self._caps


def _network(flag: str, value: str) -> str:
    net = value or "default"
    if net == "bridge":
        net = "default"
    if net not in NETWORKS:
        raise ConfigError(flag, f"unknown build network {value!r} (use one of: "
                                f"{', '.join(NETWORKS)})")
    return net


def _in_cgroup(pid: int, cid: str) -> bool:
    """pid is in the step's cgroup (cgroupsPath "/<cid>") in some hierarchy: the step's init,
    not whatever process reused its pid; False once it is gone."""
    from isle.sys.procfs import cgroup_lines

    return any(path.endswith("/" + cid) for _, _, path in cgroup_lines(pid))


def _rm_cgroups(cid: str) -> bool:
    """rmdir the step's cgroup (cgroupsPath "/<cid>") in every hierarchy; -> any left."""
    left = False
    try:
        hierarchies = os.listdir("/sys/fs/cgroup")
    except OSError:
        return False
    for h in hierarchies + ["."]:
        d = os.path.join("/sys/fs/cgroup", h, cid)
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            left = True
    return left


def _interrupted(sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {sig}")


def _read_host(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def sweep_dead_builds(settings: Settings, unmount: Callable[[str], None] | None) -> list[str]:
    """What killed builds left (their RUN step's overlay, runtime state, cgroups, network):
    every command that opens the engine asks (buildsteps.sweep_if_dead), as do `system prune`,
    `system check --repair` and the next build."""
    try:
        if not os.listdir(os.path.join(settings.runroot, "build-steps")):
            return []
    except OSError:
        return []
    return RunSandbox(settings, "none", unmount=unmount).sweep()
