"""Every ctypes binding isle uses: the only place that talks to libc or makes raw syscalls.

Failures raise ``OSError(errno, message)``. Components take a ``Syscalls`` object (the real
``LinuxSyscalls`` or the recording ``FakeSyscalls``) so unit tests run without root::

    fake = FakeSyscalls()
    fake.unshare(CLONE_NEWNS | CLONE_NEWUTS)
    assert fake.calls == [("unshare", (CLONE_NEWNS | CLONE_NEWUTS,))]

libc is loaded on first use, so importing this module costs nothing but ctypes itself.
"""

from __future__ import annotations

import os

# imported now, not lazily: scrub_cmdline runs in a container's init after pivot_root, where the
# source tree is gone and a first import fails (every CRI pod sandbox died of it)
from isle.sys import procfs

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing imports re: ~10 ms of isle-runtime's start-up
    import ctypes
    from typing import Any, Protocol
else:
    Protocol = object


class _MiniCtypes:
    """The slice of ctypes this module uses, built straight on _ctypes: ``import ctypes`` (its
    ~100 types, struct, _endian) costs ~2.5 ms of isle-runtime's start-up, which is measured
    against runc. Same machinery underneath, so real ctypes values (seccomp_lib's) mix freely."""

    def __init__(self) -> None:
        import _ctypes as C

        s = C._SimpleCData
        self._C = C
        # Any: built at run time, so a checker knows them only as `type`
        self.c_int: Any = type("c_int", (s,), {"_type_": "i"})
        self.c_uint: Any = type("c_uint", (s,), {"_type_": "I"})
        self.c_uint32 = self.c_uint
        self.c_long: Any = type("c_long", (s,), {"_type_": "l"})
        self.c_ulong: Any = type("c_ulong", (s,), {"_type_": "L"})
        self.c_size_t = self.c_ulong
        self.c_char_p: Any = type("c_char_p", (s,), {"_type_": "z"})
        self.c_char: Any = type("c_char", (s,), {"_type_": "c"})
        self.get_errno = C.get_errno
        self.addressof = C.addressof

    def create_string_buffer(self, init: bytes | int, size: int | None = None) -> Any:
        if isinstance(init, int):
            return (self.c_char * init)()
        buf = (self.c_char * (len(init) + 1 if size is None else size))()
        buf.value = init
        return buf

    def CDLL(self, name: str, use_errno: bool = False) -> Any:  # noqa: N802 -- ctypes' name
        C = self._C
        flags = C.FUNCFLAG_CDECL | (C.FUNCFLAG_USE_ERRNO if use_errno else 0)
        fptr = type("_FuncPtr", (C.CFuncPtr,), {"_flags_": flags, "_restype_": self.c_int})

        class _Lib:
            _handle = C.dlopen(name, C.RTLD_LOCAL)

            def __getattr__(self, fn: str) -> Any:
                f = fptr((fn, self))
                setattr(self, fn, f)
                return f

        return _Lib()


def _load_ctypes() -> Any:
    try:
        return _MiniCtypes()
    except (ImportError, AttributeError, TypeError):  # not CPython's _ctypes: the real thing
        import ctypes as real

        return real


ctypes = _load_ctypes()  # noqa: F811

__all__ = [
    "Syscalls",
    "LinuxSyscalls",
    "FakeSyscalls",
    "libc",
    "syscall_nr",
    "ctypes",
    "CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER", "CLONE_NEWPID",
    "CLONE_NEWNET", "CLONE_NEWCGROUP", "CLONE_NEWTIME", "NAMESPACE_FLAGS",
    "MS_RDONLY", "MS_NOSUID", "MS_NODEV", "MS_NOEXEC", "MS_SYNCHRONOUS", "MS_REMOUNT",
    "MS_MANDLOCK", "MS_DIRSYNC", "MS_NOSYMFOLLOW", "MS_NOATIME", "MS_NODIRATIME", "MS_BIND",
    "MS_MOVE", "MS_REC", "MS_SILENT", "MS_UNBINDABLE", "MS_PRIVATE", "MS_SLAVE", "MS_SHARED",
    "MS_RELATIME", "MS_STRICTATIME", "MS_LAZYTIME", "MNT_DETACH", "MNT_FORCE",
    "PR_SET_PDEATHSIG", "PR_SET_DUMPABLE", "PR_SET_KEEPCAPS", "PR_SET_NAME",
    "PR_CAPBSET_READ", "PR_CAPBSET_DROP", "PR_SET_SECUREBITS", "PR_SET_NO_NEW_PRIVS",
    "PR_SET_CHILD_SUBREAPER", "PR_CAP_AMBIENT", "PR_CAP_AMBIENT_RAISE",
    "PR_CAP_AMBIENT_CLEAR_ALL", "PR_SET_SECCOMP", "punch_hole",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

#: OCI namespace type -> clone flag
NAMESPACE_FLAGS = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_FORCE = 1
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

#: syscalls added since Linux 5.0 have one number on every architecture
_UNIFIED = {
    "pidfd_open": 434, "pidfd_send_signal": 424, "close_range": 436,
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
    "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432,
}
_SYSCALLS = {
    "x86_64": {
        "pivot_root": 155, "capget": 125, "capset": 126, "setns": 308, "unshare": 272,
        "seccomp": 317, "personality": 135, "keyctl": 250, **_UNIFIED,
    },
    "aarch64": {
        "pivot_root": 41, "capget": 90, "capset": 91, "setns": 268, "unshare": 97,
        "seccomp": 277, "personality": 92, "keyctl": 219, **_UNIFIED,
    },
}


_MACHINE: list[dict[str, int]] = []  # this machine's table, found once (uname is a syscall)


def syscall_nr(name: str) -> int:
    if not _MACHINE:
        _MACHINE.append(_SYSCALLS[os.uname().machine])
    return _MACHINE[0][name]


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """The process's libc, loaded once, with errno captured."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return _libc


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the range of fd's file reads as
    zeroes and its blocks are freed (a tmpfs file's pages too)."""
    _check(libc().fallocate(ctypes.c_int(fd), ctypes.c_int(0x02 | 0x01), ctypes.c_long(offset),
                            ctypes.c_long(length)), "fallocate")


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


class Syscalls(Protocol):
    """What components may ask of the kernel; LinuxSyscalls does it, FakeSyscalls records it."""

    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int = 0) -> None: ...
    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None: ...
    def umount2(self, target: str, flags: int = 0) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def setdomainname(self, name: str) -> None: ...
    def prctl(self, option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int: ...
    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def capget(self) -> tuple[int, int, int]: ...


class LinuxSyscalls:
    """The real kernel."""

    def unshare(self, flags: int) -> None:
        _check(libc().unshare(ctypes.c_int(flags)), "unshare")

    def setns(self, fd: int, nstype: int = 0) -> None:
        _check(libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        ret = libc().mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
        _check(ret, f"mount {source or fstype} on {target}", target)

    def umount2(self, target: str, flags: int = 0) -> None:
        _check(libc().umount2(_b(target), ctypes.c_int(flags)), f"umount {target}", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        ret = libc().syscall(ctypes.c_long(syscall_nr("pivot_root")), _b(new_root), _b(put_old))
        _check(ret, "pivot_root", new_root)

    def sethostname(self, name: str) -> None:
        b = name.encode()
        _check(libc().sethostname(b, ctypes.c_size_t(len(b))), "sethostname")

    def setdomainname(self, name: str) -> None:
        b = name.encode()
        _check(libc().setdomainname(b, ctypes.c_size_t(len(b))), "setdomainname")

    def prctl(self, option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
        ul = ctypes.c_ulong
        return _check(libc().prctl(ctypes.c_int(option), ul(a2), ul(a3), ul(a4), ul(a5)),
                      f"prctl({option})")

    # capabilities: _LINUX_CAPABILITY_VERSION_3, two 32-bit words per set
    def capget(self) -> tuple[int, int, int]:
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        _check(libc().syscall(ctypes.c_long(syscall_nr("capget")), hdr, data), "capget")
        eff = data[0] | (data[3] << 32)
        perm = data[1] | (data[4] << 32)
        inh = data[2] | (data[5] << 32)
        return eff, perm, inh

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        m = 0xFFFFFFFF
        data = (ctypes.c_uint32 * 6)(
            effective & m, permitted & m, inheritable & m,
            effective >> 32, permitted >> 32, inheritable >> 32,
        )
        _check(libc().syscall(ctypes.c_long(syscall_nr("capset")), hdr, data), "capset")

    def raw_syscall(self, name: str, *args: Any) -> int:
        return _check(libc().syscall(ctypes.c_long(syscall_nr(name)), *args), name)

    def join_session_keyring(self, name: str) -> int:
        """keyctl(KEYCTL_JOIN_SESSION_KEYRING, name): a fresh session keyring; its serial."""
        return self.raw_syscall("keyctl", ctypes.c_long(1), ctypes.c_char_p(name.encode()))


class FakeSyscalls:
    """Records each call as (name, args); ``fail[name] = errno`` makes that call raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, int] = {}
        self.caps = (0, 0, 0)

    def _rec(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            err = self.fail[name]
            raise OSError(err, f"{name}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self._rec("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._rec("setns", fd, nstype)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        self._rec("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._rec("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._rec("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._rec("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._rec("setdomainname", name)

    def prctl(self, option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
        self._rec("prctl", option, a2, a3, a4, a5)
        return 0

    def capget(self) -> tuple[int, int, int]:
        self._rec("capget")
        return self.caps

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._rec("capset", effective, permitted, inheritable)
        self.caps = (effective, permitted, inheritable)


# ---- bpf(2), for cgroup v2 device programs (isle.cgroups.devbpf) ------------------------------
_BPF_NR = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _BPF_NR[os.uname().machine]
    return _check(libc().syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr,
                                 ctypes.c_uint(len(attr))), "bpf")


def bpf_prog_load(prog_type: int, insns: bytes, license: str, *,
                  expected_attach_type: int = 0) -> int:
    """Load a BPF program; returns its fd. A verifier refusal raises OSError with its log."""
    import struct

    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(0)
    for log_size in (0, 65536):
        if log_size:
            log = ctypes.create_string_buffer(log_size)
        attr = ctypes.create_string_buffer(72)
        struct.pack_into("<IIQQIIQ", attr, 0, prog_type, len(insns) // 8,
                         ctypes.addressof(code), ctypes.addressof(lic), 1 if log_size else 0,
                         log_size, ctypes.addressof(log) if log_size else 0)
        struct.pack_into("<I", attr, 68, expected_attach_type)
        try:
            return _bpf(_BPF_PROG_LOAD, attr)
        except OSError as e:
            if e.errno != 22 or log_size:  # EINVAL: ask again for the verifier's reasons
                msg = log.value.decode(errors="replace").strip().splitlines()[-3:]
                raise OSError(e.errno, f"bpf prog load: {e.strerror}"
                              + (": " + " | ".join(msg) if msg else "")) from None
    raise AssertionError("unreachable")


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attach a loaded program to a target (a cgroup directory fd)."""
    import struct

    attr = ctypes.create_string_buffer(20)
    struct.pack_into("<IIII", attr, 0, target_fd, prog_fd, attach_type, flags)
    _bpf(_BPF_PROG_ATTACH, attr)


# -- the new mount API (fsopen/fsconfig/fsmount/move_mount): mount options without a page limit --
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100


def fs_mount(fstype: str, target: str, options: list[tuple[str, str | None]]) -> None:
    """Mount fstype at target with each (key, value) set by fsconfig (e.g. overlay "lowerdir+");
    a None value sets key as a flag (e.g. overlay "userxattr")."""
    lc = libc()
    sysc = lc.syscall
    fd = _check(sysc(ctypes.c_long(syscall_nr("fsopen")), _b(fstype), ctypes.c_uint(1)),
                f"fsopen {fstype}")
    try:
        for k, v in options:
            _check(sysc(ctypes.c_long(syscall_nr("fsconfig")), ctypes.c_int(fd),
                        ctypes.c_uint(FSCONFIG_SET_STRING if v is not None else 0), _b(k),
                        _b(v) if v is not None else None, ctypes.c_int(0)),
                   f"fsconfig {k}={v}", target)
        _check(sysc(ctypes.c_long(syscall_nr("fsconfig")), ctypes.c_int(fd),
                    ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0)),
               f"fsconfig create {fstype}", target)
        mfd = _check(sysc(ctypes.c_long(syscall_nr("fsmount")), ctypes.c_int(fd), ctypes.c_uint(1),
                          ctypes.c_uint(0)), f"fsmount {fstype}", target)
        try:
            _check(sysc(ctypes.c_long(syscall_nr("move_mount")), ctypes.c_int(mfd), b"",
                        ctypes.c_int(AT_FDCWD), _b(target),
                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {fstype}", target)
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_heap(max_chunk: int = 32 << 20, trim: int = 256 << 20) -> bool:
    """glibc malloc: serve blocks up to max_chunk from the heap and give freed memory back to the
    kernel only past trim bytes. For short-lived workers that churn through MB-sized buffers:
    by default each new buffer is fresh mmap'd or re-grown memory, i.e. page faults and zeroing
    (a layer-unpack worker: 12000 -> 1800 faults, a third of its system time). False if refused."""
    lc = libc()
    return bool(lc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(max_chunk))) and bool(
        lc.mallopt(ctypes.c_int(M_TRIM_THRESHOLD), ctypes.c_int(trim))
    )


# -- mounts by file descriptor (open_tree/move_mount/mount_setattr/fsmount): no path is looked up
#    again between checking a target and mounting on it, and no /proc the container controls
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
PROC_SUPER_MAGIC = 0x9FA0


def open_tree_clone(fd: int, recursive: bool = False) -> int:
    """A detached copy (bind) of the mount tree at fd (any fd, O_PATH included): its fd."""
    fl = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    return _check(libc().syscall(ctypes.c_long(syscall_nr("open_tree")), ctypes.c_int(fd), b"",
                                 ctypes.c_uint(fl)), "open_tree")


def move_mount_fd(mnt_fd: int, target_fd: int) -> None:
    """Attach the detached mount mnt_fd exactly on the file or directory target_fd."""
    _check(libc().syscall(ctypes.c_long(syscall_nr("move_mount")), ctypes.c_int(mnt_fd), b"",
                          ctypes.c_int(target_fd), b"",
                          ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)),
           "move_mount")


def mount_setattr_fd(mnt_fd: int, attr_set: int, recursive: bool = False) -> None:
    """Set MOUNT_ATTR_* bits on the mount mnt_fd (others are kept, locked ones included)."""
    attr = ctypes.create_string_buffer(attr_set.to_bytes(8, "little") + bytes(24), 32)
    _check(libc().syscall(ctypes.c_long(syscall_nr("mount_setattr")), ctypes.c_int(mnt_fd), b"",
                          ctypes.c_uint(AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)),
                          attr, ctypes.c_size_t(32)), "mount_setattr")


def fsmount_new(fstype: str, attr: int = 0, options: tuple[tuple[str, str], ...] = ()) -> int:
    """A new, detached filesystem instance (fsopen/fsconfig/fsmount): its mount fd."""
    sysc = libc().syscall
    fd = _check(sysc(ctypes.c_long(syscall_nr("fsopen")), _b(fstype), ctypes.c_uint(1)),
                f"fsopen {fstype}")
    try:
        for k, v in options:
            _check(sysc(ctypes.c_long(syscall_nr("fsconfig")), ctypes.c_int(fd),
                        ctypes.c_uint(FSCONFIG_SET_STRING), _b(k), _b(v), ctypes.c_int(0)),
                   f"fsconfig {k}={v}")
        _check(sysc(ctypes.c_long(syscall_nr("fsconfig")), ctypes.c_int(fd),
                    ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0)),
               f"fsconfig create {fstype}")
        return _check(sysc(ctypes.c_long(syscall_nr("fsmount")), ctypes.c_int(fd), ctypes.c_uint(1),
                           ctypes.c_uint(attr)), f"fsmount {fstype}")
    finally:
        os.close(fd)


def fstatfs_type(fd: int) -> int:
    """f_type of the filesystem fd is on (fstatfs(2); Python's os has no f_type)."""
    buf = ctypes.create_string_buffer(128)  # struct statfs: 120 bytes on 64-bit, f_type first
    _check(libc().fstatfs(ctypes.c_int(fd), buf), "fstatfs")
    return int.from_bytes(buf.raw[:8], "little")


# -- executables a container may see but never write (CVE-2019-5736; see runtime/reexec.py) -----
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8


def sealed_exe(path: str = "/proc/self/exe") -> int:
    """An O_CLOEXEC fd to run path from with os.execve(fd, ...), through which nobody can write
    the file: a private read-only clone of its mount holding that one file (open_tree +
    mount_setattr: no copy, ~0.05 ms; needs CAP_SYS_ADMIN), else a sealed memfd copy of it
    (memfd_create + F_SEAL_SEAL|SHRINK|GROW|WRITE, as runc; a few ms per MB)."""
    try:
        return _ro_clone(path)
    except OSError:
        return _sealed_copy(path)


def _ro_clone(path: str) -> int:
    sysc = libc().syscall
    fd = _check(sysc(ctypes.c_long(syscall_nr("open_tree")), ctypes.c_int(AT_FDCWD), _b(path),
                     ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)), "open_tree", path)
    try:
        attr = ctypes.create_string_buffer((MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID
                                            | MOUNT_ATTR_NODEV).to_bytes(8, "little"), 32)
        _check(sysc(ctypes.c_long(syscall_nr("mount_setattr")), ctypes.c_int(fd), b"",
                    ctypes.c_uint(AT_EMPTY_PATH), attr, ctypes.c_size_t(32)), "mount_setattr", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sealed_copy(path: str) -> int:
    import fcntl

    try:  # MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC (6.3+: vm.memfd_noexec)
        fd = os.memfd_create("isle-runtime", 1 | 2 | 0x10)
    except OSError:
        fd = os.memfd_create("isle-runtime", 1 | 2)
    try:
        src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(src).st_size
            off = 0
            while off < size:
                n = os.sendfile(fd, src, off, size - off)
                if n <= 0:
                    raise OSError(5, f"copying {path}: short read")
                off += n
        finally:
            os.close(src)
        fcntl.fcntl(fd, 1033, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
        # exec refuses a file open for writing (ETXTBSY): keep a read-only handle only
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


def scrub_cmdline(title: bytes = b"isle-runtime init") -> None:
    """Overwrite this process's argv and environment areas (what /proc/PID/cmdline shows to
    anyone, and /proc/PID/environ to whoever may trace it) with title and NULs: the runtime's
    command line names host paths, its environment is its caller's. Python keeps its own copies
    (sys.argv, os.environ); C's getenv() finds nothing afterwards."""
    fields = procfs.stat_fields()
    if fields is None:
        return
    # arg_start, arg_end, env_start, env_end: fields 48-51 of stat(5), counted from state (3)
    lc = libc()
    for (start, end), text in (((int(fields[45]), int(fields[46])), title),
                               ((int(fields[47]), int(fields[48])), b"")):
        if end <= start:
            continue
        text = text[:end - start - 1]
        lc.memset(ctypes.c_ulong(start), ctypes.c_int(0), ctypes.c_size_t(end - start))
        if text:
            lc.memcpy(ctypes.c_ulong(start), text, ctypes.c_size_t(len(text)))
