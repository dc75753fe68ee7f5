"""cgroup v2 device rules as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE): build it, attach it.

The program sees (type, access, major, minor) of each device open/mknod. Rules are checked from
the last to the first; the first that matches decides, and nothing matching means deny — the
same "deny-all, then rules in order" meaning the v1 devices.allow/deny writes have (runc does
the same). The program is built here as plain bytes (pure, unit-tested); loading and attaching
go through isle.sys.libc.
"""

from __future__ import annotations

import errno
import os
import struct

from isle.errors import Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at start-up; only type checkers need it
    from typing import Any

__all__ = ["program", "attach"]

PROG_TYPE_CGROUP_DEVICE = 15
ATTACH_CGROUP_DEVICE = 6
F_ALLOW_OVERRIDE = 1  # a nested cgroup (a container's own) may attach its own program
DEV_BLOCK, DEV_CHAR = 1, 2
ACC = {"m": 1, "r": 2, "w": 4}

# opcodes (linux/bpf.h): class | op | source
_LDXW = 0x61     # BPF_LDX | BPF_MEM | BPF_W
_AND_K = 0x57    # BPF_ALU64 | BPF_AND | BPF_K
_RSH_K = 0x77    # BPF_ALU64 | BPF_RSH | BPF_K
_MOV_X = 0xBF    # BPF_ALU64 | BPF_MOV | BPF_X
_MOV_K = 0xB7    # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K = 0x55    # BPF_JMP | BPF_JNE | BPF_K
_EXIT = 0x95     # BPF_JMP | BPF_EXIT


def _ins(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


# r2 = device type, r3 = requested access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx)
_PROLOGUE = [
    _ins(_LDXW, 2, 1, 0), _ins(_AND_K, 2, imm=0xFFFF),
    _ins(_LDXW, 3, 1, 0), _ins(_RSH_K, 3, imm=16),
    _ins(_LDXW, 4, 1, 4), _ins(_LDXW, 5, 1, 8),
]


def _block(rule: dict[str, Any]) -> list[bytes]:
    """One rule: a run of 'skip to the next rule unless it matches', then return allow/deny."""
    checks: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm); JNE jumps get offsets
    if rule["type"] != "a":
        checks.append((_JNE_K, 2, 0, DEV_BLOCK if rule["type"] == "b" else DEV_CHAR))
    acc = sum(ACC[c] for c in rule["access"])
    if acc != 7:
        checks += [(_MOV_X, 1, 3, 0), (_AND_K, 1, 0, ~acc & 7), (_JNE_K, 1, 0, 0)]
    if rule["major"] is not None:
        checks.append((_JNE_K, 4, 0, rule["major"]))
    if rule["minor"] is not None:
        checks.append((_JNE_K, 5, 0, rule["minor"]))
    n = len(checks) + 2
    out = [_ins(code, dst, src, n - i - 1 if code == _JNE_K else 0, imm)
           for i, (code, dst, src, imm) in enumerate(checks)]
    return out + [_ins(_MOV_K, 0, imm=1 if rule["allow"] else 0), _ins(_EXIT)]


def program(rules: list[dict[str, Any]]) -> bytes:
    """The program for normalised rules (resources.device_rules), as raw instructions."""
    insns = list(_PROLOGUE)
    for rule in reversed(rules):
        block = _block(rule)
        insns += block
        if len(block) == 2:  # matches every device: earlier rules are unreachable
            return b"".join(insns)
    insns += [_ins(_MOV_K, 0, imm=0), _ins(_EXIT)]
    return b"".join(insns)


def attach(directory: str, rules: list[dict[str, Any]]) -> None:
    """Load the program and attach it to the cgroup, replacing isle's previous one there."""
    from isle.sys import libc

    field = "linux.resources.devices"
    try:
        fd = libc.bpf_prog_load(PROG_TYPE_CGROUP_DEVICE, program(rules), "Apache-2.0",
                                expected_attach_type=ATTACH_CGROUP_DEVICE)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOSYS, errno.EACCES, errno.EINVAL):
            raise Unsupported(f"{field}: the kernel would not load the device eBPF program "
                              f"({e.strerror})") from e
        raise
    try:
        cg = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.bpf_prog_attach(cg, fd, ATTACH_CGROUP_DEVICE, F_ALLOW_OVERRIDE)
        except OSError as e:
            raise Unsupported(f"{field}: cannot attach the device eBPF program to "
                              f"{directory} ({e.strerror})") from e
        finally:
            os.close(cg)
    finally:
        os.close(fd)  # the attachment keeps the program alive
