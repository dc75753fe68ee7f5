"""A container's bundle: its config.json assembled from the record, the image and the network
(spec.py builds the OCI document from SpecInputs), its /etc files, and Docker's 126/127 checks
of the command before anything starts. Used by the supervisor's start and by the monitor-less
foreground run alike (direct.py), and by exec (host_caps, precheck_command, read_in_root)."""

from __future__ import annotations

import os

from isle.engine.layout import ContainerPaths, write_file
from isle.engine.reports import CannotInvoke, CommandNotFound
from isle.errors import ConfigError

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from isle.engine.context import Context
    from isle.engine.db import ContainerRecord
    from isle.engine.options import RunOptions
    from isle.sys.inroot import Root

__all__ = ["assemble", "etc_files", "host_caps", "make_cwd", "precheck_command", "read_in_root"]

#: container facts netplug owns (rewritten at every start)
_NET_KEYS = ("ports", "ports_display", "netns", "ip", "networks", "tap", "slirp", "joined")


def assemble(ctx: Context, rec: ContainerRecord, opts: RunOptions, img: Any, rootfs: str,
             lookup: Callable[[str], ContainerRecord]) -> dict[str, Any]:
    """The container's config.json from its record, its image and its network (connected
    here), /etc files written into the bundle; Docker's 126/127 checked before anything runs.
    lookup(ref): another container's record (--network container:NAME)."""
    from isle.engine import netplug
    from isle.engine.spec import SpecInputs, build_spec, load_default_seccomp
    from isle.engine.volumes import Volumes

    p = ctx.paths(rec.id)
    rt = ctx.oci(rec)
    hostname = opts.hostname or rec.id[:12]
    mounts = Volumes(ctx.s, ctx.db).resolve(opts.mounts, rootfs)
    netns, net_files, net_extra = netplug.connect(ctx.s, rec.id, rec.name, hostname, opts,
                                                  img.config.get("config") or {},
                                                  lookup=lookup)
    annotations = net_extra.pop("annotations", {})
    if net_extra or any(k in rec.extra for k in _NET_KEYS):
        extra = {k: v for k, v in rec.extra.items() if k not in _NET_KEYS}
        extra.update(net_extra)
        ctx.db.update_container(rec.id, extra=extra)
        rec.extra = extra
    etc = etc_files(p, hostname, opts, net_files)
    # the image's user db, resolved inside its root: a FIFO there must not hang the start, nor
    # a symlink lead to the host's (read_in_root: regular files only, opened non-blocking)
    passwd, group = read_in_root(rootfs, "/etc/passwd"), read_in_root(rootfs, "/etc/group")
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
    if ctx.s.rootless:
        from isle.engine.rootless import cgroup_delegated, id_maps

        uid_map, gid_map = id_maps()
        delegated = cgroup_delegated()
    inp = SpecInputs(container_id=rec.id, rootfs=rootfs,
                     image_config=img.config.get("config") or {}, hostname=hostname,
                     passwd=passwd, group=group, mounts=mounts,
                     etc_files=etc, netns_path=netns,
                     cgroups_path="" if ctx.s.rootless else f"/isle-{rec.id}",
                     init_path=init, seccomp_profile=seccomp, rootless=ctx.s.rootless,
                     uid_map=uid_map, gid_map=gid_map, host_caps=host_caps(),
                     rootless_cgroup=delegated, guest_kernel=rt.caps.has_guest)
    spec = build_spec(opts, inp)
    spec["annotations"].update(annotations)
    if ctx.s.rootless:
        from isle.engine import netplug

        hook = netplug.slirp_hook(ctx.s, rec.id, rec.name, opts,
                                  img.config.get("config") or {})
        if hook is not None:
            spec.setdefault("hooks", {}).setdefault("createRuntime", []).append(hook)
    make_cwd(rootfs, spec["process"].get("cwd") or "/")  # before the VM's disk is chosen
    rt.prepare_spec(ctx.s, spec, p.bundle, rec.image_id)
    proc = spec["process"]
    if init:  # check the user's command, not the init bind-mounted in front of it
        proc = {**proc, "args": proc["args"][2:]}
    precheck_command(rootfs, proc)
    return spec

def etc_files(p: ContainerPaths, hostname: str, opts: RunOptions,
              net_files: dict[str, str]) -> dict[str, str]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf in the bundle (the network's own when it
    wrote them): {container path: host file}."""
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


def host_caps() -> list[str]:
    from isle.engine.spec import host_bounding_caps
    from isle.sys import procfs

    bnd = procfs.status().get("CapBnd")
    return host_bounding_caps(f"CapBnd: {bnd}" if bnd else "")


def make_cwd(rootfs: str, cwd: str) -> None:
    """Docker's -w: a missing working directory is made (0755, root's) in the container's
    filesystem before it starts, for every runtime and isolation (the rootfs is the host's)."""
    from isle.engine.volumes import safe_join

    host = safe_join(rootfs, cwd)
    if not os.path.lexists(host):
        os.makedirs(host, 0o755, exist_ok=True)


def precheck_command(rootfs: str, process: dict[str, Any]) -> None:
    """Docker's 127/126 before anything starts: resolve argv[0] in the rootfs like execvp would.

    Each candidate is looked up once, inside the root (inroot.Root: the image's symlinks are
    followed within it, never to the host's files), and judged by what that one lookup found."""
    import stat

    from isle.sys.inroot import Root

    argv0 = process["args"][0]
    if "/" in argv0:
        cands = [argv0 if argv0.startswith("/") else os.path.join(process.get("cwd") or "/", argv0)]
    else:
        path = next((e.split("=", 1)[1] for e in process.get("env", []) if e.startswith("PATH=")),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        cands = [os.path.join(d or "/", argv0) for d in path.split(":")]
    try:
        r = Root(rootfs)
    except OSError:
        return  # no root to look in (the runtime reports that)
    with r:
        for c in cands:
            try:
                fd = r.open(c, os.O_PATH)
            except OSError:
                continue
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISREG(mode):
                    # access(2) on this very file (the magic link of the fd just resolved)
                    if not os.access(f"/proc/self/fd/{fd}", os.X_OK):
                        raise CannotInvoke(f"exec: {argv0!r}: permission denied")
                    return
                if stat.S_ISDIR(mode) and "/" in argv0:
                    raise CannotInvoke(f"exec: {argv0!r}: is a directory")
            finally:
                os.close(fd)
        if not (_is_dir(r, "bin") or _is_dir(r, "usr")):
            return
    where = "" if "/" in argv0 else " in $PATH"
    raise CommandNotFound(f"exec: {argv0!r}: executable file not found{where}")


def _is_dir(r: Root, path: str) -> bool:
    try:
        os.close(r.open(path, os.O_PATH | os.O_DIRECTORY))
    except OSError:
        return False
    return True


def read_in_root(rootfs: str, path: str) -> str:
    """A regular file of a (possibly running) container's root as the container sees it: the
    path resolves inside the root (openat2 RESOLVE_IN_ROOT), so a /etc swapped for a symlink to
    the host's is never followed out; "" when it is missing or not a regular file."""
    import stat

    from isle.sys.inroot import Root

    try:
        with Root(rootfs) as r:
            fd = r.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # a FIFO must not hang
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            return f.read(1 << 22).decode(errors="replace")
    except OSError:
        return ""
