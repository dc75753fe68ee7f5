"""The jail every QEMU runs in, as Firecracker's jailer and libvirt's namespace mode build theirs.

Made in the forked child before exec (no extra process, no Python start-up), while still root:

- cgroup: the child joins the container's cgroup (made by the runtime from linux.cgroupsPath and
  linux.resources) first, so -m/--cpus/--pids-limit bound QEMU and all its threads;
- mount namespace of its own (plus ipc, and network unless QEMU's user networking needs the
  caller's: a tap comes as an open fd, sockets are paths; so no host loopback or abstract
  socket is reachable from it): a tmpfs mounted on <rundir>/jail in that namespace only,
  holding exactly what QEMU opens by path, bind-mounted at the same absolute paths (so the argv,
  a pure function of MachineConfig, is unchanged): /usr read-only (QEMU, its libraries, firmware
  and modules; /lib, /lib64, /bin are merged-/usr links), /etc/ld.so.cache, /dev with null, zero,
  random and urandom (kvm only with KVM), the kernel and initramfs read-only, a template's RAM
  file, and the VM's run directory (its sockets, console log), then pivot_root into it and the
  old root detached. Disks are not there at all: isle opens them and hands QEMU the fds
  (-add-fd, /dev/fdset/N); a tap is opened by isle too (-netdev tap,fd=N), so no /dev/net/tun.
  None of isle's state directories need to be traversable by QEMU's uid;
- a fresh session keyring (root's keys are not QEMU's to possess);
- an unprivileged uid/gid of its own, per VM, from a reserved range (see lease()): one QEMU
  cannot signal, ptrace or open the sockets and files of another VM's QEMU, which a shared
  ``isle-qemu`` user would allow (every VM's run directory would belong to that one user).
  No system user is needed. Supplementary groups: none (kvm's only with KVM, and the template
  group for a template clone, see snapshot.py);
- every capability set empty, the bounding set too, ambient cleared, PR_SET_NO_NEW_PRIVS;
- QEMU's own seccomp sandbox (-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
  resourcecontrol=deny; qemu.argv adds it).
"""

from __future__ import annotations

import os

from isle.errors import VMError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from isle.vm.config import MachineConfig

__all__ = ["Jail", "lease", "plan", "enter", "UID_BASE", "UID_COUNT", "TEMPLATE_GID",
           "LEASES", "drives_by_fd", "open_tap", "child", "ENV", "PREOPENED"]

#: per-VM uids and gids (uid == gid) come from [UID_BASE, UID_BASE + UID_COUNT): above systemd's
#: container range (0x80000-0x6fffffff) and below its foreign range (0x7ffe0000), owned by nobody
UID_BASE = int(os.environ.get("ISLE_QEMU_UID_BASE", str(0x70000000)))
UID_COUNT = 65536
#: the group that may open template RAM files (clones map them copy-on-write; see snapshot.py)
TEMPLATE_GID = UID_BASE + UID_COUNT
#: one lock file per uid; the lease is the flock, held by QEMU's inherited fd (ends with QEMU)
LEASES = "/run/isle-qemu"
#: what the jail always holds from the host, read-only: (path, is a directory)
_SYSTEM = (("/usr", True), ("/etc/ld.so.cache", False))
_LINKS = (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin"), ("sbin", "usr/sbin"))
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")

RO, DIR = 1, 2
#: QEMU's whole environment: none of the caller's variables (tokens, proxies, paths) reach it
ENV = {"PATH": "/usr/bin:/bin"}


class Jail:
    """What enter() does in the child; everything computed beforehand, in the parent."""

    __slots__ = ("root", "uid", "gid", "groups", "binds", "links", "cgroup_files",
                 "lease_fd", "pdeathsig", "cap_last", "sc", "flags", "netns")

    def __init__(self, root: str, uid: int, lease_fd: int, *, groups: tuple[int, ...] = (),
                 binds: list[tuple[str, str, int]] | None = None,
                 cgroup_files: tuple[str, ...] = (), pdeathsig: bool = True,
                 netns: bool = True) -> None:
        from isle.sys import libc

        self.root = root
        self.uid = self.gid = uid
        self.groups = groups
        self.binds = binds or []
        self.links = [(os.path.join(root, a), b) for a, b in _LINKS
                      if os.path.islink("/" + a)]
        self.cgroup_files = cgroup_files
        self.lease_fd = lease_fd
        self.pdeathsig = pdeathsig
        self.netns = netns
        with open("/proc/sys/kernel/cap_last_cap") as f:
            self.cap_last = int(f.read())
        self.sc = libc.LinuxSyscalls()
        lib = libc.libc()  # loaded now, its functions looked up: the child only calls them
        for fn in ("unshare", "mount", "umount2", "syscall", "prctl"):
            getattr(lib, fn)
        libc.syscall_nr("pivot_root")
        self.flags = libc

    def release(self) -> None:
        """The parent's copy of the lease (QEMU holds its own); the jail dir goes with rundir."""
        if self.lease_fd >= 0:
            os.close(self.lease_fd)
            self.lease_fd = -1


def lease(hint: int = 0) -> tuple[int, int]:
    """(uid, fd): a uid no running QEMU has, locked by flock on LEASES/<uid> through fd.

    The fd must reach QEMU (pass_fds): the lock then lasts exactly as long as QEMU, even when
    isle dies. The search starts at hint (spread, so that probing stays short).
    """
    import fcntl

    os.makedirs(LEASES, mode=0o700, exist_ok=True)
    start = hint % UID_COUNT
    for i in range(UID_COUNT):
        uid = UID_BASE + (start + i) % UID_COUNT
        fd = os.open(os.path.join(LEASES, str(uid)), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise VMError(f"all {UID_COUNT} QEMU uids from {UID_BASE} are in use")


def _inside(path: str, d: str) -> bool:
    return path == d or path.startswith(d.rstrip("/") + "/")


def plan(cfg: MachineConfig, rundir: str, *, cgroup_files: tuple[str, ...] = (),
         groups: tuple[int, ...] = (), extra: tuple[tuple[str, int], ...] = (),
         pdeathsig: bool = True) -> Jail:
    """The jail for cfg: leases a uid, gives it rundir, lists what to bind. Undo: release() and
    removing rundir."""
    uid, fd = lease()  # lowest free uid first: few lease files, quick probing
    try:
        root = os.path.join(rundir, "jail")
        os.mkdir(root, 0o700)
        os.chown(rundir, uid, uid)
        os.chmod(rundir, 0o700)
        binds: list[tuple[str, str, int]] = []
        for p, isdir in _SYSTEM:
            if os.path.exists(p):
                binds.append((p, p, RO | (DIR if isdir else 0)))
        for dev in _DEVICES:
            binds.append((dev, dev, 0))
        if cfg.accel == "kvm":
            binds.append(("/dev/kvm", "/dev/kvm", 0))
            groups = groups + (os.stat("/dev/kvm").st_gid,)
        binds.append((rundir, rundir, DIR))
        wanted: list[tuple[str, int]] = [(p, RO) for p in (cfg.kernel, cfg.initrd, cfg.firmware)
                                         if p]
        wanted += [(p, RO) for p in cfg.pflash]
        wanted += [(d.path, RO if d.readonly else 0) for d in cfg.drives]
        if cfg.memory_backend is not None and cfg.memory_backend.path:
            wanted.append((cfg.memory_backend.path, 0))
        if any(n.kind == "user" for n in cfg.nics) and os.path.exists("/etc/resolv.conf"):
            wanted.append(("/etc/resolv.conf", RO))  # slirp's DNS forwarder reads it
        wanted += list(extra)
        for p, fl in wanted:
            if p.startswith("/dev/fdset/") or _inside(p, rundir) or _inside(p, "/usr"):
                continue
            if not os.path.isabs(p) or not os.path.exists(p):
                raise VMError(f"QEMU needs {p}, which does not exist")
            binds.append((p, p, fl | (DIR if os.path.isdir(p) else 0)))
        return Jail(root, uid, fd, groups=groups, binds=binds, cgroup_files=cgroup_files,
                    pdeathsig=pdeathsig, netns=not any(n.kind == "user" for n in cfg.nics))
    except BaseException:
        os.close(fd)
        raise


def drives_by_fd(cfg: MachineConfig) -> tuple[MachineConfig, list[int]]:
    """cfg with every disk (and UEFI vars) opened here and given to QEMU as an fd set: the disks'
    modes and their directories' do not matter to QEMU's uid, and nothing else is reachable.
    A writable image's set holds a read-write and a read-only fd (QEMU opens both)."""
    from isle.vm.config import Drive, replace

    fds: list[int] = []
    sets: list[tuple[int, int]] = []

    def fdset(path: str, readonly: bool) -> str:
        ro = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        fds.append(ro)
        sets.append((ro, ro))
        if not readonly:
            rw = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            fds.append(rw)
            sets.append((rw, ro))
        return f"/dev/fdset/{ro}"

    try:
        drives = []
        for d in cfg.drives:
            if d.path.startswith("/dev/fdset/"):
                drives.append(d)
                continue
            backing = fdset(d.backing, True) if d.backing else ""
            drives.append(Drive(id=d.id, path=fdset(d.path, d.readonly), format=d.format,
                                readonly=d.readonly, snapshot=d.snapshot, backing=backing,
                                backing_format=d.backing_format))
        pflash = tuple(p if i == 0 else fdset(p, False) for i, p in enumerate(cfg.pflash))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise VMError(f"cannot open a disk of VM {cfg.name}: {exc}") from exc
    extra = tuple(s for s in sets)
    return replace(cfg, drives=tuple(drives), pflash=pflash,
                   fdsets=tuple(cfg.fdsets) + extra), fds


#: taps already open (name -> fd), e.g. made by the VM runtime inside a container's network
#: namespace, where a lookup by name from the host's namespace would find another or none
PREOPENED: dict[str, int] = {}


def open_tap(ifname: str) -> int:
    """An fd on tap ifname (or a new throwaway tapN when ifname is ""), opened as QEMU would
    (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), for -netdev tap,fd=N: QEMU itself may not."""
    import fcntl
    import struct

    if ifname and ifname in PREOPENED:
        return os.dup(PREOPENED[ifname])
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        req = struct.pack("16sH22x", ifname.encode(), 0x0002 | 0x1000 | 0x4000)
        fcntl.ioctl(fd, 0x400454CA, req)  # TUNSETIFF
    except OSError as exc:
        os.close(fd)
        raise VMError(f"cannot open tap {ifname or '(new)'} for QEMU: {exc}") from exc
    return fd


def enter(j: Jail) -> None:
    """In the forked child, before exec: cgroup, namespaces, jail root, then drop to j.uid.

    Raises OSError on any failure (subprocess reports it to the parent; nothing is left on the
    host: the mounts live only in this process's namespace)."""
    L = j.flags
    sc = j.sc
    if j.pdeathsig:
        sc.prctl(L.PR_SET_PDEATHSIG, 9)
    for f in j.cgroup_files:
        fd = os.open(f, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    sc.unshare(L.CLONE_NEWNS | L.CLONE_NEWIPC | (L.CLONE_NEWNET if j.netns else 0))
    sc.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
    root = j.root
    sc.mount("isle-jail", root, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
             "mode=0755,size=64k,nr_inodes=256")
    for src, dst, fl in j.binds:
        target = root + dst
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        if fl & DIR:
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        sc.mount(src, target, None, L.MS_BIND)
        if fl & RO:
            sc.mount(None, target, None,
                     L.MS_REMOUNT | L.MS_BIND | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV)
    for link, to in j.links:
        os.symlink(to, link)
    sc.mount(None, root, None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV
             | L.MS_NOEXEC, "mode=0755,size=64k,nr_inodes=256")
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", L.MNT_DETACH)
    os.chdir("/")
    try:
        sc.join_session_keyring("_ses.isle-qemu")
    except OSError:  # keyrings compiled out or denied by an outer seccomp: nothing to possess
        pass
    os.setgroups(list(j.groups))
    os.setresgid(j.gid, j.gid, j.gid)
    for cap in range(j.cap_last + 1):
        sc.prctl(L.PR_CAPBSET_DROP, cap)
    sc.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setresuid(j.uid, j.uid, j.uid)
    sc.capset(0, 0, 0)
    sc.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    os.umask(0o077)


def child(j: Jail) -> Any:
    """preexec_fn for subprocess: enter(j); what failed goes to the child's stderr (QEMU's log:
    subprocess itself only says 'Exception occurred in preexec_fn')."""

    def run() -> None:
        try:
            enter(j)
        except BaseException as exc:
            try:
                os.write(2, f"isle: QEMU's jail could not be set up: {exc!r}\n".encode())
            except OSError:
                pass
            raise

    return run
