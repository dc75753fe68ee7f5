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

The builder (``image/build``) calls ``prepare`` for each step, runs the runtime, and ``release``
afterwards (also when the step fails or the build is interrupted).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from isle.config import Settings
from isle.engine import netplug
from isle.engine.options import RunOptions
from isle.engine.spec import SpecInputs, build_spec, host_bounding_caps, load_default_seccomp
from isle.errors import ConfigError
from isle.sys.inroot import Root

__all__ = ["RunSandbox", "NETWORKS"]

NETWORKS = ("default", "none", "host")
_MODE = {"default": "", "none": "none", "host": "host"}
HOSTNAME = "isle-build"


class RunSandbox:
    """One build's RUN steps: ``prepare(cid, ...)`` -> config.json, ``release(cid)`` undoes it."""

    def __init__(self, settings: Settings, network: str = "default") -> None:
        net = network or "default"
        if net == "bridge":
            net = "default"
        if net not in NETWORKS:
            raise ConfigError("--network", f"unknown build network {network!r} "
                                           f"(use one of: {', '.join(NETWORKS)})")
        self.s = settings
        self.network = net
        self._live: dict[str, RunOptions] = {}
        self._seccomp: dict[str, Any] | None = None
        self._caps: list[str] | None = None
        self._old: dict[int, Any] = {}

    # -- the builder's interface -------------------------------------------------------------
    def prepare(self, cid: str, rootfs: str, bundle: str, argv: list[str], env: list[str],
                cwd: str, user: str) -> dict[str, Any]:
        """The step's config.json (as isle run would make it) and its network, set up now."""
        mode = _MODE[self.network]
        if mode == "" and self.s.rootless:
            mode = "none"
        opts = RunOptions(image="", command=list(argv), entrypoint=[], env=list(env),
                          workdir=cwd or "/", user=user or "", network=mode)
        passwd, group = _read_in(rootfs, "/etc/passwd"), _read_in(rootfs, "/etc/group")
        self._live[cid] = opts
        try:
            netns, files, _facts = netplug.connect(self.s, cid, cid, HOSTNAME, opts, {})
            etc = self._etc_files(bundle, mode, files)
            uid_map: list[dict[str, int]] = []
            gid_map: list[dict[str, int]] = []
            if self.s.rootless:
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

    def release(self, cid: str) -> None:
        """Undo the step's network (idempotent); the runtime already removed its cgroups."""
        opts = self._live.pop(cid, None)
        if opts is not None:
            netplug.teardown(self.s, cid, opts)

    # -- one build: signals become exceptions, so an interrupted step is cleaned up ---------
    def __enter__(self) -> RunSandbox:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._old[sig] = signal.signal(sig, _interrupted)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for cid in list(self._live):
                self.release(cid)
        finally:
            for sig, h in self._old.items():
                signal.signal(sig, h)
            self._old.clear()

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
            with open("/proc/self/status") as f:
                self._caps = host_bounding_caps(f.read())
        return self._caps


def _interrupted(sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {sig}")


def _read_in(rootfs: str, path: str) -> str:
    """A file of the image as the container sees it (symlinks resolved inside the rootfs)."""
    import stat

    try:
        with Root(rootfs) as r:
            fd = r.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang the build
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            return f.read(1 << 22).decode(errors="replace")
    except OSError:
        return ""


def _read_host(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""
