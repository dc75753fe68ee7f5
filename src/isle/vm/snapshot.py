"""Fast start from templates: boot once per (kernel, initramfs, disk, size), pause at 'ready', save.

A template's guest RAM lives in a /dev/shm file (memory-backend-file, share=on) and the rest of the
VM state in a migration file written with the x-ignore-shared capability (RAM is not copied).
A clone maps the same RAM file copy-on-write (share=off), so clones share every page they do not
write, and loads the small state file with ``-incoming defer`` + migrate-incoming.

A pod's VM (Boot.pod) clones too, though its share (virtio-fs: a vhost-user device, which QEMU
7.2 can neither save nor load) cannot be in the template: its template has an empty PCIe slot,
and the clone gets the device hot-plugged there after the state is loaded (device_add; the
guest's pciehp probes it: ~0.2 s under TCG); vhost-user needs guest RAM virtiofsd can map too,
so such a clone's RAM is its own shared copy of the template's file (its non-zero pages: ~70
MiB of a 256 MiB guest) rather than a private mapping of it, unlinked once QEMU has it.

The writable layer is the guest's overlay upper: with Boot.upper a disk (the template's own fresh
ext4 file, mounted before the save, so each clone starts on a sparse copy of that file: its own,
on the host), else a tmpfs in copy-on-write RAM; nothing is attached after restore. Identity
(hostname, env, args) comes with the job, which only arrives after restore.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass

from isle.sys.fs import flock
from isle.vm.config import HOTPLUG_PORT, FsShare, MemoryBackend
from isle.vm.microvm import Boot, MicroVM, machine_config, short_dir
from isle.vm.qmp import Monitor, preload

__all__ = ["Template", "key", "ensure", "restore", "remove", "evict", "sweep_orphans", "SHM",
           "AUTO_KEEP", "OWNER_XATTR"]

SHM = "/dev/shm"


def _env_count(name: str, default: int) -> int:
    """A count from the environment: default when unset, empty, not a number or negative (a
    typo in the environment must not make every VM command fail at import)."""
    try:
        n = int(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default
    return n if n >= 0 else default


#: templates the runtime made on first use (label "auto") kept per cache, least recently used
#: ones removed beyond that; those `isle vm template create` made are never evicted
AUTO_KEEP = _env_count("ISLE_VM_TEMPLATES_MAX", 8)


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    dir: str
    ram: str

    @property
    def state(self) -> str:
        return os.path.join(self.dir, "vmstate")

    @property
    def upper(self) -> str:
        """The writable layer's file as the template's guest left it (Boot.upper)."""
        return os.path.join(self.dir, "upper.ext4")


def key(boot: Boot) -> str:
    """Templates are per kernel, initramfs, disk, filesystem, size, accelerator and QEMU binary."""
    from isle.sys import proc

    qemu = proc.which("qemu-system-x86_64") or ""
    parts = [f"{k}={v}" for k, v in sorted(asdict(boot).items())]
    for p in (boot.kernel, boot.initrd, boot.rootdisk, qemu):
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(p)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


class _keylock:  # noqa: N801 - used as a function, like isle.sys.fs.flock
    """isle.sys.fs.flock on a template's <key>.lock, which _remove_key unlinks while holding it:
    a waiter that then gets the lock holds a file no longer at path (another may have made and
    locked a new one there), so it checks, once locked, that its fd is still the file at path
    (same device and inode) and else takes the lock again on the new one."""

    __slots__ = ("path", "lock")

    def __init__(self, path: str) -> None:
        self.path, self.lock = path, flock(path)

    def __enter__(self) -> int:
        while True:
            fd = self.lock.__enter__()
            try:
                st, now = os.fstat(fd), os.stat(self.path)
                if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                self.lock.__exit__()
                raise
            self.lock.__exit__()

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__()


def _template(boot: Boot, cache: str) -> Template:
    k = key(boot)
    return Template(
        key=k, dir=os.path.join(cache, "templates", k), ram=os.path.join(SHM, f"isle-tpl-{k}.ram")
    )


def ensure(boot: Boot, cache: str, *, timeout: float = 120.0,
           label: dict[str, object] | None = None) -> Template:
    """The template for boot, made now if missing (one cold boot + save, under a lock).

    A template made here without a label from the engine (`isle vm template create` writes
    <key>.json first) gets one marked "auto" from label (what the caller knows: image id...):
    `isle vm template ls/rm` and `system prune -a` see it, and evict() may drop it later.
    Its use is recorded under the lock (the directory's mtime: evict() drops the least recently
    used auto-made ones, and re-reads it under the same lock)."""
    t = _template(boot, cache)
    os.makedirs(os.path.dirname(t.dir), exist_ok=True)
    with _keylock(t.dir + ".lock"):
        if os.path.exists(t.state) and os.path.exists(t.ram):
            try:
                os.utime(t.dir)
            except OSError:
                pass
            return t
        shutil.rmtree(t.dir, ignore_errors=True)
        os.makedirs(t.dir)
        _ram_file(t.ram, owner=t.dir)
        if boot.upper:
            from isle.vm.disk import upper_image

            upper_image(t.upper)
        rundir = short_dir("isle-vm-tpl-")
        cfg = machine_config(
            boot,
            rundir,
            stdout="",
            stderr="",
            name=f"isle-tpl-{t.key}",
            memory_backend=MemoryBackend(path=t.ram, share=True),
            upper=t.upper if boot.upper else "",
        )
        vm = MicroVM(cfg, rundir, groups=_groups())
        tmp = t.state + ".tmp"
        try:
            vm.spawn()
            vm.connect()
            vm.expect("ready", timeout)
            mon = Monitor(cfg.qmp_socket, alive=vm.alive)
            try:
                mon.cmd("stop")
                mon.cmd(
                    "migrate-set-capabilities",
                    capabilities=[{"capability": "x-ignore-shared", "state": True}],
                )
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    mon.send_fd(fd, "tplout")
                finally:
                    os.close(fd)
                mon.cmd("migrate", uri="fd:tplout")
                mon.wait_migration(timeout)
                mon.cmd("quit")
            finally:
                mon.close()
            if boot.pod:  # each clone copies the file: its zero pages are holes (~200 -> ~70 MiB)
                _punch_zeros(t.ram)
            os.rename(tmp, t.state)
            _label(t, boot, label or {})
        except BaseException:
            for p in (tmp, t.ram):
                if os.path.exists(p):
                    os.unlink(p)
            shutil.rmtree(t.dir, ignore_errors=True)
            raise
        finally:
            vm.close(grace=5)
    evict(cache, spare=t.key)  # (after the lock: evict takes the others' locks)
    return t


def restore(
    boot: Boot,
    cache: str,
    *,
    stdout: str,
    stderr: str,
    pass_fds: tuple[int, ...] = (),
    die_with_parent: bool = True,
    timeout: float = 60.0,
    fdsets: tuple[int, ...] = (),
    stdin_fd: int | None = None,
    tap: str = "",
    mac: str = "",
    cgroup_files: tuple[str, ...] = (),
    upper: str = "",
    label: dict[str, object] | None = None,
    tty_fd: int = -1,
    shares: tuple[FsShare, ...] = (),
) -> MicroVM:
    """A running clone of the template (made if missing), connected, its guest waiting for a job.

    The guest said 'ready' before the save; that line is replayed so callers treat clones and
    cold boots alike. With boot.upper, upper (which must not exist: the guest's page cache holds
    the template's fresh filesystem) becomes a copy of the template's writable layer. shares
    (one at most, their socket paths ignored: a pod's, boot.pod) are hot-plugged before the
    guest resumes, served by a virtiofsd each as a cold boot's are.
    """
    from isle.errors import VMError

    if shares and (not boot.pod or len(shares) > 1):
        raise VMError("a template's clone takes one share, in a pod VM's hot-plug slot")
    t = ensure(boot, cache, label=label)
    _ram_file(t.ram, create=False)  # a template saved before QEMU was jailed: root's 0600
    if boot.upper:
        from isle.vm.disk import copy_sparse

        if not upper or os.path.exists(upper):
            raise VMError(f"a clone needs a new writable layer file, not {upper or 'none'}")
        copy_sparse(t.upper, upper)
    rundir = short_dir()
    ram = ""
    if shares:
        import dataclasses

        shares = tuple(dataclasses.replace(sh, socket=os.path.join(rundir, f"{sh.tag}.sock"))
                       for sh in shares)
        ram = os.path.join(SHM, f"isle-clone-{os.path.basename(rundir)}.ram")
        try:
            _copy_ram_in(t.ram, ram, cgroup_files)
        except BaseException:
            shutil.rmtree(rundir, ignore_errors=True)
            raise
    cfg = machine_config(
        boot,
        rundir,
        stdout=stdout,
        stderr=stderr,
        incoming="defer",
        stdin_sock=stdin_fd is not None,
        fdsets=fdsets,
        tap=tap,
        mac=mac,
        memory_backend=MemoryBackend(path=ram, share=True) if ram
        else MemoryBackend(path=t.ram, share=False),
        upper=upper if boot.upper else "",
    )
    vm = MicroVM(cfg, rundir, pass_fds=pass_fds, die_with_parent=die_with_parent,
                 cgroup_files=cgroup_files, groups=_groups())
    try:
        vm.spawn()
        if shares:  # (while QEMU starts) its socket QEMU's, as a cold boot's (MicroVM.spawn)
            from isle.vm import virtiofs

            for sh in shares:
                vm._fsd.append(virtiofs.start(sh, os.path.join(rundir, "virtiofsd.log"),
                                              cgroup_files=cgroup_files))
                os.chown(sh.socket, vm.uid, vm.uid)
        preload()  # QEMU needs longer than this import to open its sockets
        # connect host ends BEFORE loading state: a port whose host end is closed at resume tells
        # the guest 'host disconnected', and a guest blocked reading it would see EOF
        vm.connect()
        if stdin_fd is not None:
            vm.feed_stdin(stdin_fd)
        if tty_fd >= 0:  # the process's terminal: the same port a cold boot's has (hvc0)
            vm.attach_tty(tty_fd)
        mon = Monitor(cfg.qmp_socket, alive=vm.alive)
        try:
            mon.cmd(
                "migrate-set-capabilities",
                capabilities=[{"capability": "x-ignore-shared", "state": True}],
            )
            fd = os.open(t.state, os.O_RDONLY | os.O_CLOEXEC)
            try:
                mon.send_fd(fd, "tplin")
            finally:
                os.close(fd)
            mon.cmd("migrate-incoming", uri="fd:tplin")
            mon.wait_migration(timeout)  # the template was saved stopped: resume explicitly
            for i, sh in enumerate(shares):  # (after the load: QEMU 7.2 loads no vhost-user)
                mon.cmd("chardev-add", id=f"fs{i}", backend={"type": "socket", "data": {
                    "addr": {"type": "unix", "data": {"path": sh.socket}}, "server": False}})
                mon.cmd("device_add", driver="vhost-user-fs-pci", id=f"fsdev{i}",
                        chardev=f"fs{i}", tag=sh.tag, bus=HOTPLUG_PORT)
            mon.cmd("cont")
        finally:
            mon.close()
            if ram:  # QEMU (and virtiofsd, by fd) map it: it goes with them, never left here
                os.unlink(ram)
                ram = ""
        vm._buf = b"ready\n"
    except BaseException:
        vm.close(grace=0)
        if ram and os.path.exists(ram):
            os.unlink(ram)
        raise
    return vm


def _copy_ram_in(src: str, dest: str, cgroup_files: tuple[str, ...]) -> None:
    """_copy_ram by a child that first joined the VM's cgroup (cgroup_files: its cgroup.procs):
    tmpfs pages are charged to the cgroup of whoever allocates them, so the copy counts against
    the pod's memory limit, as the pages QEMU touches later do, not against the runtime's."""
    if not cgroup_files:
        return _copy_ram(src, dest)
    from isle.errors import VMError

    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            for f in cgroup_files:
                fd = os.open(f, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            _copy_ram(src, dest)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        if os.path.lexists(dest):
            os.unlink(dest)
        raise VMError("the clone's copy of the template's RAM failed in the container's cgroup "
                      f"(status {os.waitstatus_to_exitcode(status)}: its memory limit?)")


def _copy_ram(src: str, dest: str) -> None:
    """dest (new): a copy of the template's RAM file src keeping its holes (ensure punched its
    zero pages), for the clone to map shared; root:template group 0660 as the template's (QEMU
    opens it read-write)."""
    from isle.vm.jail import TEMPLATE_GID

    fi = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fo = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            if os.geteuid() == 0:
                os.fchown(fo, 0, TEMPLATE_GID)
                os.fchmod(fo, 0o660)
            from isle.vm.disk import copy_fd_sparse

            copy_fd_sparse(fi, fo)
        finally:
            os.close(fo)
    except BaseException:
        if os.path.exists(dest):
            os.unlink(dest)
        raise
    finally:
        os.close(fi)


def _punch_zeros(path: str, chunk: int = 1 << 20, page: int = 4096) -> None:
    """Make path's all-zero pages holes (what a guest zeroed is most of what it wrote: the
    pages still read as zeroes)."""
    from isle.sys.libc import punch_hole
    from isle.vm.disk import data_ranges

    zero = bytes(chunk)
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for off, end in data_ranges(fd, os.fstat(fd).st_size):
            while off < end:
                data = os.pread(fd, min(chunk - off % chunk, end - off), off)
                if not data:
                    break
                if data == zero[:len(data)]:
                    punch_hole(fd, off, len(data))
                else:
                    zp, mv = zero[:page], memoryview(data)
                    i = 0
                    while i < len(data):  # runs of zero pages
                        j = i
                        while j < len(data) and mv[j:j + page] == zp:
                            j += page
                        if j > i:
                            punch_hole(fd, off + i, min(j, len(data)) - i)
                        i = j + page
                off += len(data)
    finally:
        os.close(fd)


def _groups() -> tuple[int, ...]:
    """Template and clone QEMUs are in the template group (the RAM file's), when jailed."""
    from isle.vm.jail import TEMPLATE_GID

    return (TEMPLATE_GID,) if os.geteuid() == 0 else ()


#: on a template's RAM file: the template directory it belongs to (sweep_orphans)
OWNER_XATTR = "trusted.isle.template"


def _ram_file(path: str, create: bool = True, owner: str = "") -> None:
    """The template's RAM file, made before QEMU (whose jail only binds existing files):
    root:TEMPLATE_GID 0660. QEMU 7.2 opens a memory-backend-file read-write even to map it
    copy-on-write (share=off), so clones need write permission; each clone's jail holds only its
    own template's file, so a clone can reach no other template. (QEMU >= 8.2 can open it
    read-only: readonly=on,rom=off.) A new one names its template directory (owner) in
    OWNER_XATTR, so that a cache deleted without `vm template rm` leaves no RAM behind for long."""
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC if create else os.O_RDONLY
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.geteuid() == 0:
            from isle.vm.jail import TEMPLATE_GID

            os.fchown(fd, 0, TEMPLATE_GID)
            os.fchmod(fd, 0o660)
        if create and owner:
            try:
                os.setxattr(fd, OWNER_XATTR, os.path.abspath(owner).encode())
            except OSError:
                pass  # (rootless: no trusted.* xattrs; its RAM goes with its own cache's rm)
    finally:
        os.close(fd)


def sweep_orphans(shm: str = "") -> list[str]:
    """Remove the template RAM files in /dev/shm whose template directory is gone (its cache
    deleted without `vm template rm` / `system prune -a`: a test's or a benchmark's scratch
    cache): tmpfs is the host's RAM. A file that names no directory (made before OWNER_XATTR) is
    left. Each under its template's lock while the cache is there (one being made is waited
    for). The paths removed."""
    shm = shm or SHM
    gone = []
    for n in _listdir(shm):
        if not (n.startswith("isle-tpl-") and n.endswith(".ram")):
            continue
        path = os.path.join(shm, n)
        try:
            owner = os.getxattr(path, OWNER_XATTR, follow_symlinks=False).decode()
        except OSError:
            continue
        if os.path.isdir(owner):
            continue
        try:
            if os.path.isdir(os.path.dirname(owner)):
                with _keylock(owner + ".lock"):
                    if os.path.isdir(owner):
                        continue  # made again meanwhile
                    os.unlink(path)
                    os.unlink(owner + ".lock")  # (held: as _remove_key does, last)
            else:
                os.unlink(path)
            gone.append(path)
        except OSError:
            continue
    return gone


def _label(t: Template, boot: Boot, label: dict[str, object]) -> None:
    """<key>.json beside the template unless the engine wrote one: an "auto" one (evict())."""
    import json
    import time

    path = t.dir + ".json"
    if os.path.exists(path):
        return
    from isle.sys.fs import atomic_write

    doc = {"memory_mib": boot.memory_mib, "vcpus": boot.vcpus, "net": boot.net,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **label, "auto": True}
    atomic_write(path, json.dumps(doc).encode())


def evict(cache: str, keep: int = AUTO_KEEP, spare: str = "") -> list[str]:
    """Remove the least recently used auto-made templates of cache beyond keep (never spare,
    never one the engine labelled: `isle vm template create`); the keys removed. Running clones
    keep their mapping of a removed template's RAM file (unlinked, freed with the last one).
    Each is removed under its lock, and only if still unused for a minute then (ensure() records
    a use under that lock; a restore reads the template's files within that minute)."""
    import json
    import time

    base = os.path.join(cache, "templates")
    auto = []
    for n in _listdir(base):
        if not n.endswith(".json") or n[:-5] == spare:
            continue
        try:
            with open(os.path.join(base, n)) as f:
                if not json.load(f).get("auto"):
                    continue
            used = os.stat(os.path.join(base, n[:-5])).st_mtime
            if used < time.time() - 60:  # (one in use this minute may be being restored)
                auto.append((used, n[:-5]))
        except (OSError, ValueError, AttributeError):
            continue
    gone = []
    for _, k in sorted(auto, reverse=True)[max(keep - (1 if spare else 0), 0):]:
        with _keylock(os.path.join(base, f"{k}.lock")):  # not while one is made or restored
            try:
                if os.stat(os.path.join(base, k)).st_mtime >= time.time() - 60:
                    continue  # used since it was listed
            except FileNotFoundError:
                pass  # (a half-made or already removed one: its files go)
            _remove_key(base, k)
        gone.append(k)
    sweep_orphans()
    return gone


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def remove(cache: str, boot: Boot | None = None, keys: tuple[str, ...] = ()) -> None:
    """Delete one template (boot's, or those of keys; else all under cache) with its /dev/shm
    RAM file and label, each under its lock (one being made or restored is waited for)."""
    base = os.path.join(cache, "templates")
    if boot:
        keys = (key(boot),)
    elif not keys:
        keys = tuple(d for d in _listdir(base) if os.path.isdir(os.path.join(base, d)))
    for k in keys:
        if os.path.isdir(base):
            with _keylock(os.path.join(base, f"{k}.lock")):
                _remove_key(base, k)
    sweep_orphans()


def _remove_key(base: str, k: str) -> None:
    """Remove template k; the caller holds its lock (_keylock), whose file goes last."""
    shutil.rmtree(os.path.join(base, k), ignore_errors=True)
    for p in (os.path.join(SHM, f"isle-tpl-{k}.ram"), os.path.join(base, f"{k}.json"),
              os.path.join(base, f"{k}.lock")):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
