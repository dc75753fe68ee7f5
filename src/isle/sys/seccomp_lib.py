"""ctypes bindings for libseccomp (filter compiler) and the raw seccomp(2) syscall (filter loader).

libseccomp is used only to *compile* a filter to BPF (``Filter.export_bpf``); isle loads the
program itself with ``seccomp_set_mode_filter`` so that a cached program needs no libseccomp.
Errors from libseccomp come back as negative errno values and are raised as ``OSError``.
"""

from __future__ import annotations

import ctypes
import os

from isle.sys.libc import libc, syscall_nr

__all__ = [
    "Libseccomp", "Filter", "ArgCmp", "seccomp_set_mode_filter", "seccomp_get_action_avail",
    "seccomp_flag_supported",
    "NR_SCMP_ERROR", "ATTR_ACT_BADARCH", "ATTR_CTL_NNP", "ATTR_CTL_OPTIMIZE",
    "SECCOMP_SET_MODE_FILTER", "SECCOMP_GET_ACTION_AVAIL",
]

NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name*: name unknown to libseccomp

# enum scmp_filter_attr (seccomp.h, libseccomp 2.5)
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_OPTIMIZE = 8

# seccomp(2) operations
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: one argument comparison of a rule."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _err(rc: int, what: str) -> OSError:
    return OSError(-rc, f"{what}: {os.strerror(-rc)}")


class Libseccomp:
    """libseccomp.so.2 loaded from an explicit path (so the cache key and the code agree)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path, use_errno=True)
        vp, u32, cint = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        lib.seccomp_init.argtypes, lib.seccomp_init.restype = [u32], vp
        lib.seccomp_release.argtypes, lib.seccomp_release.restype = [vp], None
        lib.seccomp_arch_add.argtypes, lib.seccomp_arch_add.restype = [vp, u32], cint
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = u32
        lib.seccomp_arch_native.argtypes, lib.seccomp_arch_native.restype = [], u32
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = cint
        lib.seccomp_syscall_resolve_name_arch.argtypes = [u32, ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name_arch.restype = cint
        lib.seccomp_rule_add_array.argtypes = [vp, u32, cint, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
        lib.seccomp_rule_add_array.restype = cint
        lib.seccomp_attr_set.argtypes, lib.seccomp_attr_set.restype = [vp, cint, u32], cint
        lib.seccomp_export_bpf.argtypes, lib.seccomp_export_bpf.restype = [vp, cint], cint
        lib.seccomp_version.argtypes = []
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        lib.seccomp_api_get.argtypes, lib.seccomp_api_get.restype = [], ctypes.c_uint
        self.lib = lib
        self.path = path

    def version(self) -> tuple[int, int, int]:
        v = self.lib.seccomp_version().contents
        return (v.major, v.minor, v.micro)

    def api_level(self) -> int:
        return int(self.lib.seccomp_api_get())

    def arch_token(self, name: str) -> int:
        """libseccomp's token (AUDIT_ARCH_*) for an arch name like "x86_64"; 0 if unknown."""
        return int(self.lib.seccomp_arch_resolve_name(name.encode()))

    def arch_native(self) -> int:
        return int(self.lib.seccomp_arch_native())

    def resolve(self, name: str, arch_token: int | None = None) -> int:
        """Syscall number of name (native arch unless given); negative pseudo-number if the name
        exists only on other arches; NR_SCMP_ERROR if libseccomp does not know it at all."""
        if arch_token is None:
            return int(self.lib.seccomp_syscall_resolve_name(name.encode()))
        return int(self.lib.seccomp_syscall_resolve_name_arch(arch_token, name.encode()))

    def new_filter(self, default_action: int) -> Filter:
        ctx = self.lib.seccomp_init(default_action)
        if not ctx:
            raise OSError(ctypes.get_errno() or 22,
                          f"seccomp_init({default_action:#x}) failed: action unsupported?")
        return Filter(self, ctx)


class Filter:
    """One scmp_filter_ctx; use as a context manager so it is always released."""

    def __init__(self, owner: Libseccomp, ctx: int) -> None:
        self._lib = owner.lib
        self._ctx: int | None = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def arch_add(self, token: int) -> None:
        """Add an arch; adding one already present (the native one is) is not an error."""
        rc = self._lib.seccomp_arch_add(self._ctx, token)
        if rc < 0 and rc != -17:  # EEXIST
            raise _err(rc, f"seccomp_arch_add({token:#x})")

    def attr_set(self, attr: int, value: int) -> None:
        rc = self._lib.seccomp_attr_set(self._ctx, attr, value)
        if rc < 0:
            raise _err(rc, f"seccomp_attr_set({attr}, {value})")

    def rule_add(self, action: int, syscall: int, args: list[tuple[int, int, int, int]]) -> None:
        """seccomp_rule_add_array: args are (index, op, datum_a, datum_b)."""
        arr = (ArgCmp * max(len(args), 1))(*[ArgCmp(i, op, a, b) for i, op, a, b in args])
        rc = self._lib.seccomp_rule_add_array(self._ctx, action, syscall, len(args), arr)
        if rc < 0:
            raise _err(rc, f"seccomp_rule_add_array(action={action:#x}, syscall={syscall})")

    def export_bpf(self) -> bytes:
        """The compiled program: an array of struct sock_filter (8 bytes each)."""
        fd = os.memfd_create("isle-seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = self._lib.seccomp_export_bpf(self._ctx, fd)
            if rc < 0:
                raise _err(rc, "seccomp_export_bpf")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)


def seccomp_set_mode_filter(prog: bytes, flags: int = 0) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog); returns the syscall's result (a listener fd
    with SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0). Needs no_new_privs or CAP_SYS_ADMIN."""
    if not prog or len(prog) % 8:
        raise ValueError(f"a BPF program is a non-empty multiple of 8 bytes, got {len(prog)}")
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    ret = libc().syscall(ctypes.c_long(syscall_nr("seccomp")),
                         ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                         ctypes.byref(fprog))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}): {os.strerror(err)}")
    return int(ret)


def seccomp_get_action_avail(action: int) -> bool:
    """Whether this kernel supports a filter return action (SECCOMP_RET_*)."""
    val = ctypes.c_uint32(action)
    ret = libc().syscall(ctypes.c_long(syscall_nr("seccomp")),
                         ctypes.c_uint(SECCOMP_GET_ACTION_AVAIL), ctypes.c_uint(0),
                         ctypes.byref(val))
    return bool(ret == 0)


def seccomp_flag_supported(flag: int) -> bool:
    """Whether this kernel accepts a SECCOMP_FILTER_FLAG_* bit: with a NULL program it answers
    EINVAL for unknown flags and EFAULT (after the flag check) for known ones; nothing is loaded."""
    ret = libc().syscall(ctypes.c_long(syscall_nr("seccomp")),
                         ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flag),
                         ctypes.c_void_p(0))
    return bool(ret < 0 and ctypes.get_errno() == 14)  # EFAULT
