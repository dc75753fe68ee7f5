"""Execute the rootfs part of the init plan: mounts, devices, pivot_root, masked/readonly paths.

The rootfs belongs to the container: any path in it may be a symlink (absolute, or climbing with
``..``), planted by the image to steer the runtime's mkdir, mknod, symlink, unlink or mount to
the host. So no path here is a host string joined to a container path: every target is looked
up through ``sys.inroot.Root`` (openat2 RESOLVE_IN_ROOT: symlinks are followed, but inside the
rootfs, as runc does), then created and mounted on *by file descriptor*: ``/proc/self/fd/N``
of the host's /proc before pivot_root, and after it (when the container's /proc is the only
one) open_tree/move_mount/mount_setattr on fds, with no path looked up again. Files the runtime
writes in /proc are opened on a checked procfs without crossing mounts (sys.inroot.open_proc).
"""

from __future__ import annotations

import os

from isle.errors import ConfigError
from isle.runtime.plan import (
    DEV_SYMLINKS,
    PROPAGATION_FLAGS,
    Mount,
    device_plan,
    mount_plan,
)
from isle.sys import inroot
from isle.sys import libc as L
from isle.sys.inroot import RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, Root, openat2

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from collections.abc import Callable
    from typing import Any

__all__ = ["prepare_root", "do_mounts", "setup_dev", "pivot", "finalize", "mount_console"]

# statvfs f_flag bits -> mount flags that a bind remount inside a user ns must keep
_ST_LOCKED = ((1, L.MS_RDONLY), (2, L.MS_NOSUID), (4, L.MS_NODEV), (8, L.MS_NOEXEC),
              (1024, L.MS_NOATIME), (2048, L.MS_NODIRATIME), (4096, L.MS_RELATIME))


def _locked_flags(path: str) -> int:
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    return sum(mf for sf, mf in _ST_LOCKED if f & sf and mf != L.MS_RDONLY)


def _remount(sys: L.Syscalls, dest: str, flags: int) -> None:
    fl = L.MS_BIND | L.MS_REMOUNT | flags
    try:
        sys.mount(None, dest, None, fl, None)
    except PermissionError:
        sys.mount(None, dest, None, fl | _locked_flags(dest), None)


def _mountpoint_of(path: str) -> str:
    best = "/"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                    best = mp
    except OSError:
        pass
    return best


def prepare_root(sys: L.Syscalls, rootfs: str, propagation: str | None) -> None:
    """Make / non-shared (or as asked), then bind the rootfs onto itself so it can be pivoted."""
    flag = PROPAGATION_FLAGS.get(propagation or "", L.MS_SLAVE | L.MS_REC)
    if flag & L.MS_UNBINDABLE:  # the rootfs could not be bound from it: pivot() applies it later
        flag = L.MS_SLAVE | L.MS_REC
    sys.mount(None, "/", None, flag, None)
    if flag & L.MS_SHARED:
        # pivot_root refuses a shared parent mount: the mount holding the rootfs, which is the
        # rootfs's own when it is a mount point (containerd's overlay on bundle/rootfs)
        sys.mount(None, _mountpoint_of(rootfs), None, L.MS_PRIVATE, None)
    sys.mount(rootfs, rootfs, None, L.MS_BIND | L.MS_REC, None)


def _fd_path(fd: int) -> str:
    """A path naming exactly the file fd holds: a mount(2) target that no symlink can move.
    Only before pivot_root, while /proc is still the host's."""
    return f"/proc/self/fd/{fd}"


def _is_root(r: Root, fd: int) -> bool:
    a, b = os.fstat(fd), os.fstat(r.fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


#: the only files on the container's procfs a mount may cover (runc's list: lxcfs's files)
_PROC_MOUNTABLE = frozenset((
    "proc/cpuinfo", "proc/diskstats", "proc/meminfo", "proc/stat", "proc/swaps", "proc/uptime",
    "proc/loadavg", "proc/slabinfo", "proc/pressure/cpu", "proc/pressure/io",
    "proc/pressure/memory", "proc/sys/kernel/ns_last_pid"))


def _target(r: Root, dest: str, is_dir: bool, fstype: str | None = None) -> int:
    """An fd of the mount destination dest as the container names it, resolved inside the
    rootfs (its symlinks followed there, never out); made when missing: a directory, or an
    empty file. Refused: the rootfs itself (a /dev -> / link would bury the whole image), and,
    as runc does, anything on the container's procfs but a second procfs on /proc and the
    few files lxcfs covers, named as such (a mount over /proc/sys/... or one an image symlink
    steers there would stand between the runtime's writes, or a mask, and the kernel's files)."""
    try:
        fd = r.open(dest, os.O_PATH)
    except FileNotFoundError:
        fd = r.mkdirs(dest) if is_dir else _make_file(r, dest)
    try:
        if _is_root(r, fd):
            raise _Refused("resolves to the container's root directory (a symlink to /?): "
                           "refusing to mount over it")
        if L.fstatfs_type(fd) == L.PROC_SUPER_MAGIC:
            want, got = inroot.clean(dest), r.name_of(fd)
            if got != "/" + want or not (want in _PROC_MOUNTABLE or
                                         want == "proc" and fstype == "proc"):
                raise _Refused(f"resolves to {got}, on the container's procfs: only "
                               "/proc/{cpuinfo,meminfo,stat,...} (lxcfs) may be mounted there")
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Refused(Exception):
    pass


def _make_file(r: Root, dest: str, hops: int = 0) -> int:
    """Create the empty file dest (and its missing parents) inside the root; a dangling symlink
    on the way or at the end has its target made instead, resolved inside the root too."""
    head, _, name = inroot.clean(dest).rpartition("/")
    if name in ("", ".", ".."):
        raise IsADirectoryError(21, "is a directory", dest)
    d = r.mkdirs(head)
    try:
        try:
            return openat2(d, name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644,
                           RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
        except FileExistsError:
            pass
        try:
            target = os.readlink(name, dir_fd=d)
        except OSError:  # made meanwhile, and not a link: use it
            return openat2(d, name, os.O_PATH | os.O_NOFOLLOW, 0,
                           RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
        if hops >= 40:
            raise OSError(40, "too many levels of symbolic links", dest)
        if not target.startswith("/"):
            target = r.name_of(d).rstrip("/") + "/" + target
        return _make_file(r, target, hops + 1)
    finally:
        os.close(d)


def _mounted(r: Root, dest: str, below: int) -> int:
    """The mount just made on the fd below, reached through the rootfs again (a remount or a
    propagation change needs the mount's own root); it must be at the very same place."""
    fd = r.open(dest, os.O_PATH)
    if os.readlink(_fd_path(fd)) != os.readlink(_fd_path(below)):
        os.close(fd)
        raise OSError(18, "the mount destination moved while mounting", dest)  # EXDEV
    return fd


def do_mounts(sys: L.Syscalls, spec_mounts: list[dict[str, Any]], rootfs: str,
              bundle: str, before_cgroup: Callable[[], Any] | None = None,
              cgroup_mounts: list[tuple[str, str, str, str]] | None = None) -> None:
    """The spec's mounts under rootfs; cgroup_mounts: the host's cgroup mounts as the runtime
    read them (paths.cgroup_mounts), else /proc/self/mountinfo is read here. Each destination
    is resolved inside rootfs and mounted on by fd (see the module's docstring)."""
    plan = mount_plan(spec_mounts, rootfs, bundle)
    if not plan:
        return
    with Root(rootfs) as r:  # after prepare_root: the lookups see the bind and what is on it
        for m in plan:
            field = f"mounts[{m.index}]"
            fds: list[int] = []
            try:
                if m.kind == "bind":
                    if not os.path.exists(m.source):
                        raise ConfigError(f"{field}.source",
                                          f"{m.source}: no such file or directory")
                    t = _target(r, m.dest, os.path.isdir(m.source))
                    fds.append(t)
                    sys.mount(m.source, _fd_path(t), None, m.flags & (L.MS_BIND | L.MS_REC), None)
                    if m.remount or m.prop:
                        fds.append(_mounted(r, m.dest, t))
                    if m.remount:
                        _remount(sys, _fd_path(fds[-1]), m.remount)
                elif m.kind == "cgroup":
                    info = before_cgroup() if before_cgroup is not None else None
                    fds.append(_mount_cgroup(sys, m, r, cgroup_mounts,
                                             skip_v2=bool(info and info.get("join"))))
                else:
                    t = _target(r, m.dest, True, m.fstype)
                    fds.append(t)
                    sys.mount(m.source or m.fstype, _fd_path(t), m.fstype, m.flags, m.data)
                    if m.prop:
                        fds.append(_mounted(r, m.dest, t))
                for p in m.prop:
                    sys.mount(None, _fd_path(fds[-1]), None, p, None)
            except ConfigError:
                raise
            except _Refused as exc:
                raise ConfigError(field, f"{m.dest} {exc}") from None
            except OSError as exc:
                why = os.strerror(exc.errno or 0)
                fn = str(exc.filename or "")
                if fn and not fn.startswith("/proc/self/fd/") and \
                        inroot.clean(fn) != inroot.clean(m.dest):
                    why += f" (/{inroot.clean(fn)})"
                raise ConfigError(field, f"mounting {m.source or m.fstype} on {m.dest}: "
                                  f"{why}") from None
            finally:
                for fd in fds:
                    os.close(fd)


def _cgroup_mounts(known: list[tuple[str, str, str, str]] | None = None
                   ) -> list[tuple[str, str, str]]:
    """[(host mountpoint, mount root, fstype)] of cgroup hierarchies."""
    if known is not None:
        return [(mp, root, fstype) for mp, root, fstype, _ in known]
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype = post.split()[0] if post else ""
            if fstype in ("cgroup", "cgroup2"):
                p = pre.split()
                out.append((p[4], p[3], fstype))
    return out


def _mount_cgroup(sys: L.Syscalls, m: Mount, r: Root,
                  known: list[tuple[str, str, str, str]] | None = None,
                  skip_v2: bool = False) -> int:
    """Give the container its own cgroups at m.dest, bound from the host (v1, v2 or hybrid);
    returns an fd of the mount made there (the caller closes it).
    skip_v2: on a hybrid host, the container has no cgroup of its own in the unified
    hierarchy (none of its limits go there): bind none rather than the runtime's."""
    mine: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            mine[ctrls] = path
    mounts = _cgroup_mounts(known)
    ro = m.flags & L.MS_RDONLY
    base = m.flags & (L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    unified = [mp for mp, _, t in mounts if t == "cgroup2"]
    t = _target(r, m.dest, True)
    try:
        if set(mine) == {""} and unified:  # pure v2
            sys.mount(unified[0] + mine[""], _fd_path(t), None, L.MS_BIND | L.MS_REC, None)
            top = _mounted(r, m.dest, t)
            try:
                _remount(sys, _fd_path(top), base | ro)
            except BaseException:
                os.close(top)
                raise
            return top
        sys.mount("tmpfs", _fd_path(t), "tmpfs", base, "mode=755")
        top = _mounted(r, m.dest, t)
    finally:
        os.close(t)
    try:  # top: the fresh tmpfs, nobody else's yet; a plain name below it is walked into it
        for mp, root, fstype in mounts:
            if not mp.startswith("/sys/fs/cgroup/"):
                continue
            name = mp[len("/sys/fs/cgroup/"):]
            if skip_v2 and fstype == "cgroup2":
                continue
            key = "" if fstype == "cgroup2" else None
            if key is None:
                for ctrls in mine:
                    opts = ctrls.replace("name=", "")
                    if opts and (opts == name or set(opts.split(",")) == set(name.split(","))):
                        key = ctrls
                        break
            if key is None or key not in mine or "/" in name:
                continue
            rel = mine[key]
            if root != "/" and rel.startswith(root):
                rel = rel[len(root):]
            src = mp + rel
            if not os.path.isdir(src):
                continue
            target = f"{_fd_path(top)}/{name}"  # a plain name in the tmpfs only we can see
            try:
                os.mkdir(target, 0o755)
            except FileExistsError:
                pass
            sys.mount(src, target, None, L.MS_BIND | L.MS_REC, None)
            _remount(sys, target, base | ro)
        if ro:
            sys.mount(None, _fd_path(top), None, L.MS_REMOUNT | L.MS_RDONLY | base, "mode=755")
    except BaseException:
        os.close(top)
        raise
    return top


def _no_symlink_at(d: int, name: str) -> os.stat_result | None:
    """lstat name in the directory fd d; a symlink there is removed (the runtime makes what
    it wants in its place rather than following it). None: nothing (now) there."""
    try:
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if _S_ISLNK(st.st_mode):
        os.unlink(name, dir_fd=d)
        return None
    return st


def _S_ISLNK(mode: int) -> bool:  # noqa: N802 -- stat's name; no stat import on the start path
    return mode & 0o170000 == 0o120000


def setup_dev(sys: L.Syscalls, rootfs: str, devices: list[dict[str, Any]], in_userns: bool) -> None:
    """Default devices + linux.devices (mknod, or bind from the host in a user ns) + symlinks,
    each made by name in its directory's fd, the directory resolved inside rootfs."""
    dirs: dict[str, int] = {}
    with Root(rootfs) as r:

        def where(path: str) -> tuple[int, str]:
            head, _, name = inroot.clean(path).rpartition("/")
            if name in ("", ".", ".."):
                raise ConfigError("linux.devices", f"{path}: not a device path")
            d = dirs.get(head)
            if d is None:
                d = dirs[head] = r.mkdirs(head)
            return d, name

        try:
            for step in device_plan(devices, in_userns):
                d, name = where(step[1])
                if step[0] == "bind":
                    if not os.path.exists(step[1]):  # the host's device
                        continue
                    if _no_symlink_at(d, name) is None:
                        try:
                            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY |
                                             os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=d))
                        except FileExistsError:
                            pass
                    t = openat2(d, name, os.O_PATH | os.O_NOFOLLOW, 0,
                                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
                    try:
                        sys.mount(step[1], _fd_path(t), None, L.MS_BIND, None)
                    finally:
                        os.close(t)
                    continue
                _, _, mode, ma, mi, uid, gid = step
                try:
                    os.unlink(name, dir_fd=d)  # unlink never follows a symlink
                except FileNotFoundError:
                    pass
                old = os.umask(0)
                try:
                    os.mknod(name, mode, os.makedev(ma, mi), dir_fd=d)
                finally:
                    os.umask(old)
                os.chown(name, uid, gid, dir_fd=d, follow_symlinks=False)
            d, _ = where("/dev/x")
            links = list(DEV_SYMLINKS)
            if os.path.exists("/proc/kcore"):
                links.append(("/proc/kcore", "/dev/core"))
            for target, link in links:
                name = link.rpartition("/")[2]
                if link == "/dev/ptmx":
                    try:
                        st = os.stat(name, dir_fd=d, follow_symlinks=False)
                    except FileNotFoundError:
                        st = None
                    if st is not None and not _S_ISLNK(st.st_mode):
                        os.unlink(name, dir_fd=d)
                try:
                    os.symlink(target, name, dir_fd=d)
                except FileExistsError:
                    pass
        finally:
            for fd in dirs.values():
                os.close(fd)


def pivot(sys: L.Syscalls, rootfs: str, no_pivot: bool, propagation: str | None = None) -> None:
    os.chdir(rootfs)
    if no_pivot:
        sys.mount(rootfs, "/", None, L.MS_MOVE, None)
        os.chroot(".")
    else:
        old = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sys.pivot_root(".", ".")
            # the old root is stacked on the new one; detach it without telling the host. From
            # the old root's own fd: "." from the cwd names the NEW root, and MS_SLAVE|MS_REC
            # there would make every container mount a slave (a Bidirectional volume's mounts
            # made in the container never reached the host)
            os.fchdir(old)
            sys.mount(None, ".", None, L.MS_SLAVE | L.MS_REC, None)
            sys.umount2(".", L.MNT_DETACH)
        finally:
            os.close(old)
    os.chdir("/")
    if propagation:  # the new root was bound from a private parent: give it what was asked
        sys.mount(None, "/", None, PROPAGATION_FLAGS[propagation], None)


def mount_console(sys: L.Syscalls, slave_path: str, slave_fd: int | None = None) -> None:
    """Bind the pty slave (slave_fd, else slave_path) over /dev/console, after pivot_root.
    By fds (open_tree/move_mount): a /dev/console the image made a symlink (to a /proc file,
    CVE-2025-52565) is replaced by a plain file, never followed."""
    with Root("/") as r:
        d = r.mkdirs("/dev")
        fds = [d]
        try:
            st = _no_symlink_at(d, "console")
            if st is None:
                try:
                    os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY |
                                     os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d))
                except FileExistsError:
                    pass
            elif st.st_mode & 0o170000 not in (0o100000, 0o020000):  # a file or a char device
                raise ConfigError("process.terminal", "/dev/console exists and is neither a "
                                  "file nor a character device")
            t = openat2(d, "console", os.O_PATH | os.O_NOFOLLOW, 0,
                        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
            fds.append(t)
            if slave_fd is None:
                slave_fd = os.open(slave_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                fds.append(slave_fd)
                if os.fstat(slave_fd).st_mode & 0o170000 != 0o020000:
                    raise ConfigError("process.terminal", f"{slave_path}: not a terminal")
            mfd = L.open_tree_clone(slave_fd)
            fds.append(mfd)
            L.move_mount_fd(mfd, t)
        finally:
            for fd in fds:
                os.close(fd)


def _dev_null(r: Root) -> int:
    """An O_PATH fd of the container's /dev/null, checked to be the null device (1:3): a
    symlink or another file there must not become what a masked path shows (CVE-2025-31133)."""
    fd = r.open("/dev/null", os.O_PATH, follow=False)
    st = os.fstat(fd)
    if st.st_mode & 0o170000 != 0o020000 or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise OSError(19, "/dev/null is not the null device (1:3)", "/dev/null")  # ENODEV
    return fd


def _open_path(r: Root, i: int, key: str, p: str) -> int | None:
    """An O_PATH fd of the masked or read-only path p (its parents resolved inside the root, no
    magic links), None when it is missing or itself a symlink: a link is not what it names
    (that is reachable, and masked, by its own path)."""
    try:
        fd = r.open(p, os.O_PATH, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: p itself is a symlink (or a magic link on the way)
            return None
        raise ConfigError(f"linux.{key}[{i}]", f"{p}: {os.strerror(exc.errno or 0)}") from None
    if _S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW opens the link itself
        os.close(fd)
        return None
    return fd


def finalize(sys: L.Syscalls, linux: dict[str, Any], readonly_root: bool) -> None:
    """After pivot_root: sysctls, readonly and masked paths, read-only root. /proc files are
    written on the checked procfs; mounts are made by fd (module docstring)."""
    sysctl = linux.get("sysctl")
    if sysctl:
        try:
            pfd = inroot.procfs()
        except OSError as exc:
            raise ConfigError("linux.sysctl", f"no procfs at /proc to set them in: "
                              f"{exc.strerror}") from None
        try:
            for k, v in sysctl.items():
                try:
                    fd = inroot.open_proc("sys/" + k.replace(".", "/"), os.O_WRONLY, pfd)
                    try:
                        os.write(fd, v.encode())
                    finally:
                        os.close(fd)
                except OSError as exc:
                    why = os.strerror(exc.errno or 0) if exc.errno != 18 else exc.strerror
                    raise ConfigError(f"linux.sysctl.{k}", f"cannot set to {v!r}: {why}") from None
        finally:
            os.close(pfd)
    ro_paths = linux.get("readonlyPaths") or []
    masked = linux.get("maskedPaths") or []
    if ro_paths or masked:
        with Root("/") as r:
            for i, p in enumerate(ro_paths):
                t = _open_path(r, i, "readonlyPaths", p)
                if t is None:
                    continue
                try:
                    mfd = L.open_tree_clone(t, recursive=True)
                    try:
                        L.mount_setattr_fd(mfd, L.MOUNT_ATTR_RDONLY, recursive=True)
                        L.move_mount_fd(mfd, t)
                    finally:
                        os.close(mfd)
                except OSError as exc:
                    raise ConfigError(f"linux.readonlyPaths[{i}]",
                                      f"{p}: {os.strerror(exc.errno or 0)}") from None
                finally:
                    os.close(t)
            null = -1
            try:
                for i, p in enumerate(masked):
                    t = _open_path(r, i, "maskedPaths", p)
                    if t is None:
                        continue
                    try:
                        if os.fstat(t).st_mode & 0o170000 == 0o040000:
                            mfd = L.fsmount_new("tmpfs", L.MOUNT_ATTR_RDONLY)
                        else:
                            if null < 0:
                                null = _dev_null(r)
                            mfd = L.open_tree_clone(null)
                        try:
                            L.move_mount_fd(mfd, t)
                        finally:
                            os.close(mfd)
                    except OSError as exc:
                        raise ConfigError(f"linux.maskedPaths[{i}]",
                                          f"{p}: {exc.strerror or os.strerror(exc.errno or 0)}"
                                          ) from None
                    finally:
                        os.close(t)
            finally:
                if null >= 0:
                    os.close(null)
    if readonly_root:
        _remount(sys, "/", L.MS_RDONLY | _locked_flags("/"))
