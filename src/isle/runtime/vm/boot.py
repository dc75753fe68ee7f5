"""The VM runtime's boot: a bundle prepared for a guest (config.json validated; kernel,
initramfs and image disk cached: a template's identity), QEMU launched cold or from a template on
the caller's stdio, the host cgroup and the caller's network namespace taken over, and the
container's terminal."""

from __future__ import annotations

import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any

from isle.config import Settings
from isle.errors import ConfigError, IsleError
from isle.oci import runtime_spec
from isle.runtime.vm import spec as vmspec
from isle.runtime.vm import state as st
from isle.vm import accel, disk, initramfs, kernel
from isle.vm import job as vmjob
from isle.vm.microvm import Boot, MicroVM, host_end, machine_config, short_dir

#: org.isle.vm.template: "false" for a cold boot, "true" for a template's clone (the default)
TEMPLATE_ANNOTATION = "org.isle.vm.template"


@dataclass(slots=True)
class Prepared:
    cfg: dict[str, Any]
    boot: Boot
    script: str
    template: bool
    stdin: bool = False
    #: the caller's network namespace the guest takes over (runtime.vm.network.Plan)
    net: Any = None
    #: process.terminal: the process runs on a guest tty relayed to tty_fd (a pty slave, raw)
    terminal: bool = False
    tty_fd: int = -1
    #: the writable layer's file (org.isle.vm.upper; "": a tmpfs in guest RAM): made fresh at a
    #: cold boot, a copy of the template's at a clone, kept as it is for a restart
    upper: str = ""


def stdin_wanted(fd: int = 0) -> bool:
    """Forward stdin when it is a pipe, file or socket (never a tty or /dev/null)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return (
        stat.S_ISFIFO(mode)
        or stat.S_ISSOCK(mode)
        or (stat.S_ISREG(mode) and os.fstat(fd).st_size > 0)
    )


def prepare(bundle: str, settings: Settings, *, stdin: bool = False,
            cfg: dict[str, Any] | None = None) -> Prepared:
    """Validate config.json and make sure kernel, initramfs and image disk are cached. cfg: the
    bundle's config as the caller loaded and completed it (a pod sandbox's: pod.sandbox_config),
    everything rendered from it."""
    bundle = os.path.abspath(bundle)
    if cfg is None:
        cfg = runtime_spec.load(os.path.join(bundle, "config.json"))
    terminal = bool((cfg.get("process") or {}).get("terminal"))
    stdin = stdin and not terminal  # a terminal is the process's stdin
    job = vmspec.to_job(cfg, stdin=stdin)  # (the spec checked before any disk is built)
    boot = boot_of(cfg, bundle, settings)
    plan = _net_plan(cfg) if not vmspec.net_of(cfg)[0] else None
    template = template_wanted(cfg)
    upper = _upper(cfg)
    if upper and os.path.exists(upper):
        template = False  # a restart: the guest mounts the layer it left, not a template's
    return Prepared(cfg=cfg, boot=boot, script=render_script(cfg, stdin, terminal, plan, job),
                    template=template, stdin=stdin, net=plan, terminal=terminal, upper=upper)


def render_script(cfg: dict[str, Any], stdin: bool, terminal: bool, net: Any,
                  job: Any = None) -> str:
    """The guest's job script for cfg (again after a change to it: runtime.vm.pod)."""
    from dataclasses import replace

    if job is None:
        job = vmspec.to_job(cfg, stdin=stdin)
    if terminal:
        job = replace(job, terminal=True)
    if net is not None:
        job = replace(job, net=net.guest)
    return vmjob.render(job)


def _upper(cfg: dict[str, Any]) -> str:
    from isle.runtime.vm.guestfs import upper_path

    return upper_path(cfg)


def template_wanted(cfg: dict[str, Any]) -> bool:
    """Whether the VM starts as a clone of the template of its boot identity (vm.snapshot: made
    on the first such start, restored after): the default, the cheap path (~0.4 s to first
    output instead of a boot; clones share the template's untouched RAM pages).

    Asked for or refused by the annotation org.isle.vm.template (true/false), else by
    ISLE_VM_TEMPLATE (1/0). Never for virtio-fs shares (volumes): vhost-user needs guest RAM
    QEMU shares with virtiofsd (a memfd), while a clone maps its template's RAM privately
    (copy-on-write), and the share devices are the container's own, not in a template's layout;
    a pod's VM is the exception (its one share hot-plugged into the clone, which gets a shared
    copy of the template's RAM: vm.snapshot; runtime.vm.pod.sandbox_config adds it).
    Terminals, stdin, the network (engine tap or the caller's namespace taken over) and a
    writable-layer disk are in every layout, so they clone."""
    ann = cfg.get("annotations") or {}
    want = ann.get(TEMPLATE_ANNOTATION, os.environ.get("ISLE_VM_TEMPLATE", "")).lower()
    if want in ("0", "false"):
        return False
    shares = vmspec.shares_of(cfg)
    if ann.get("io.kubernetes.cri.container-type") == "sandbox":  # runtime.vm.pod.CONTAINER_TYPE
        shares = tuple(s for s in shares if s[2] != vmspec.POD_SHARE)  # the pod's, hot-plugged
    return not shares


def boot_of(cfg: dict[str, Any], bundle: str, settings: Settings) -> Boot:
    """What the VM for cfg boots (kernel, initramfs, image disk, size): a template's identity."""
    vcpus, mem = vmspec.vm_size(cfg)
    ann = cfg.get("annotations") or {}
    fstype = ann.get("org.isle.vm.rootfs", "erofs")
    k = kernel.find(settings.cache)
    return Boot(
        kernel=k.boot_image,
        initrd=initramfs.build(k, settings.cache),
        rootdisk=disk.rootfs_image(vmspec.rootfs_path(cfg, bundle), settings.cache, fstype,
                                   ann.get("org.isle.vm.rootfs-key", "")),
        fstype=fstype,
        vcpus=vcpus,
        memory_mib=mem,
        accel=accel.detect()[0],
        # an engine-made tap (annotations), else a NIC when the network namespace config.json
        # names has an interface to take over (the caller's veth, as Kata): a template's key
        net=vmspec.net_of(cfg)[0] or ("tap" if _net_plan(cfg) is not None else ""),
        upper=bool(_upper(cfg)),
    )


_plans: dict[str, Any] = {}


def _net_plan(cfg: dict[str, Any]) -> Any:
    """runtime.vm.network.Plan of the network namespace config.json names (None: no namespace
    path, or nothing in it to give a guest); read once per process (boot_of and prepare)."""
    from isle.runtime.vm import network

    path = network.netns_of(cfg)
    if not path:
        return None
    if path not in _plans:
        _plans[path] = network.discover(path)
    return _plans[path]


def _reopenable(fd: int) -> int:
    """A write-only fd QEMU can take as an fd set (microvm.writable); a socket (QEMU cannot open
    one) gets a pipe and a relay."""
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        from isle.vm.microvm import writable

        return writable(fd)
    import threading

    r, w = os.pipe()
    dst = os.dup(fd)

    def relay() -> None:
        try:
            while data := os.read(r, 65536):
                while data:
                    data = data[os.write(dst, data) :]
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(dst)

    t = threading.Thread(target=relay, name=f"isle-vm-relay-{fd}", daemon=True)
    t.start()
    _relays.append(t)
    return w


_relays: list[Any] = []


def drain_relays(timeout: float = 5.0) -> None:
    """Wait for socket relays to pass on the last output (they end when QEMU's pipe end closes)."""
    for t in _relays:
        t.join(timeout)
    _relays.clear()


def launch(
    p: Prepared,
    settings: Settings,
    out_fd: int,
    err_fd: int,
    *,
    in_fd: int = 0,
    die_with_parent: bool = True,
    cgroup_files: tuple[str, ...] = (),
) -> MicroVM:
    """Start QEMU (cold, or a template's clone) on our stdout/stderr; connected, not yet ready."""
    out, err = _reopenable(out_fd), _reopenable(err_fd)
    tapfd = -1
    try:
        (opath, ofds), (epath, efds) = host_end(out), host_end(err)
        _, tap, mac, _ = vmspec.net_of(p.cfg)
        if p.net is not None:
            from isle.runtime.vm import network
            from isle.vm import jail

            tap, mac = network.TAP, p.net.guest.mac
            tapfd = network.connect(p.net)
            jail.PREOPENED[tap] = tapfd  # QEMU gets it by fd: the tap is in another namespace
        if p.template and (not p.boot.pod or hotplug_ready(settings.cache)):
            from isle.vm import snapshot

            return snapshot.restore(
                p.boot,
                settings.cache,
                stdout=opath,
                stderr=epath,
                pass_fds=(out, err),
                die_with_parent=die_with_parent,
                stdin_fd=in_fd if p.stdin else None,
                fdsets=ofds + efds,
                tap=tap,
                mac=mac,
                cgroup_files=cgroup_files,
                # what `isle vm template ls` names a template the runtime made by (its image)
                label={"image_id": (p.cfg.get("annotations") or {}).get(
                    "org.isle.vm.rootfs-key", "")},
                tty_fd=p.tty_fd if p.terminal else -1,
                upper=p.upper,
                # a pod's share (runtime.vm.pod.as_sandbox), hot-plugged into the clone
                shares=_shares(p, ""),
            )
        if p.upper:
            ann = p.cfg.get("annotations") or {}
            try:
                size = int(ann.get("org.isle.vm.upper-size", disk.UPPER_MIB))
            except ValueError:
                raise ConfigError("annotations.org.isle.vm.upper-size",
                                  "the writable layer's size in MiB, a number") from None
            disk.upper_image(p.upper, size)
        rundir = short_dir()
        shares = _shares(p, rundir)
        cfg = machine_config(
            p.boot,
            rundir,
            stdout=opath,
            stderr=epath,
            stdin_sock=p.stdin,
            fdsets=ofds + efds,
            tap=tap,
            mac=mac,
            shares=shares,
            tty_sock=p.terminal,
            upper=p.upper,
            # a cold boot gives the RAM its guest frees back (free-page reporting); a
            # template's layout has no balloon (vm.config.MachineConfig.balloon: why)
            balloon=True,
        )
        vm = MicroVM(cfg, rundir, pass_fds=(out, err), die_with_parent=die_with_parent,
                     cgroup_files=cgroup_files)
        try:
            vm.spawn()
            vm.connect()
            if p.stdin:
                vm.feed_stdin(in_fd)
            if p.terminal:
                vm.attach_tty(p.tty_fd)
        except BaseException:
            vm.close(grace=0)
            raise
        return vm
    finally:
        os.close(out)
        os.close(err)
        if tapfd >= 0:
            from isle.vm import jail

            jail.PREOPENED.pop(network.TAP, None)
            os.close(tapfd)  # QEMU holds the tap now; it goes when QEMU does


def hotplug_ready(cache: str) -> bool:
    """Whether a pod's VM can clone its template: the guest kernel cache has virtio_pci (an
    optional module: a cache fetched before it was one lacks it, and the hot-plugged share would
    never be probed), else the pod's VM boots cold."""
    return os.path.exists(kernel.find(cache).module("virtio_pci"))


def _shares(p: Prepared, rundir: str) -> tuple[Any, ...]:
    """The VM's virtio-fs shares (vm.config.FsShare), their sockets in rundir."""
    from isle.vm.config import FsShare

    return tuple(
        FsShare(tag=tag, socket=os.path.join(rundir, f"{tag}.sock"), source=src, readonly=ro,
                expose=vmspec.share_name(src, dest))
        for tag, src, dest, ro in vmspec.shares_of(p.cfg)
    )


def make_cgroup(cid: str, p: Prepared) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """The container's host cgroup (linux.cgroupsPath, default /isle/<id>), made and limited
    (spec.host_resources) as isle-runtime makes a container's: (its state, the cgroup.procs files
    QEMU writes itself into before exec). Not as a non-root caller (QEMU is not jailed then)."""
    if os.geteuid() != 0:
        return None, ()
    from isle.runtime.cgroup import manager, resources_with_defaults

    lx = p.cfg.get("linux") or {}
    res = resources_with_defaults(
        vmspec.host_resources(p.cfg, p.boot.vcpus, p.boot.memory_mib,
                              shares=len(vmspec.shares_of(p.cfg)), kvm=p.boot.accel == "kvm"),
        lx.get("devices"))
    cg = manager(lx.get("cgroupsPath"), cid)
    cg.drop_unused_unified(res)
    cg.create()
    try:
        cg.set(res)
    except BaseException:
        cg.destroy()
        raise
    return cg.to_state(), procs_files(cg)


def procs_files(cg: Any) -> tuple[str, ...]:
    """The cgroup.procs files a process writes "0" to, to join cg (every v1 hierarchy, and the
    unified one where it is joined)."""
    if hasattr(cg, "dirs"):  # v1 or hybrid
        files = [d + "/cgroup.procs" for d in cg.dirs()]
        if cg.unified is not None:
            files.append(cg.unified.dir + "/cgroup.procs")
    else:
        files = [cg.dir + "/cgroup.procs"]
    return tuple(dict.fromkeys(files))


def drop_cgroup(state: dict[str, Any] | None) -> None:
    """Remove the container's host cgroup (QEMU and virtiofsd gone first)."""
    if not state:
        return
    import time

    from isle.runtime.cgroup import from_state

    cg = from_state(state)
    deadline = time.monotonic() + 15  # a QEMU (or virtiofsd) that just quit may still be leaving
    while True:
        try:
            cg.destroy()  # every hierarchy each time; a busy one is retried
            return
        except (IsleError, OSError) as exc:
            if time.monotonic() > deadline:  # said, never silently left behind
                print(f"isle-vm-runtime: {exc}", file=sys.stderr)
                return
            time.sleep(0.05)


def net_state(s: st.State, p: Prepared) -> None:
    if p.net is not None:
        s.netns, s.veth = p.net.netns, p.net.veth


def unplug(s: st.State) -> None:
    """Undo what the runtime added to the caller's network namespace (QEMU gone: its tap too)."""
    if s.netns:
        from isle.runtime.vm import network

        network.disconnect(s.netns, s.veth)


def console(path: str) -> int:
    """A pty whose master goes to the --console-socket at path (as runc sends it: SCM_RIGHTS,
    the slave's name as data); its slave, raw (the guest's tty does the line discipline)."""
    import tty

    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        tty.setraw(slave)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            socket.send_fds(sock, [name.encode()], [master])
        finally:
            sock.close()
    except OSError as exc:
        os.close(slave)
        raise ConfigError("--console-socket", f"{path}: {exc.strerror or exc}") from exc
    finally:
        os.close(master)
    return slave


def winsize(fd: int) -> tuple[int, int]:
    import fcntl
    import struct
    import termios

    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    except OSError:
        return 0, 0
    return rows, cols


