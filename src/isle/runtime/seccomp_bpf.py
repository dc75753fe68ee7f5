"""A -ENOSYS prologue for seccomp programs, and the few classic-BPF opcodes it needs (pure).

A profile with a denying default (Docker's: ERRNO/EPERM) would answer EPERM to syscalls newer
than the profile, and libc only falls back to an older syscall on ENOSYS (glibc's fchmodat2,
clone3, ...). runc therefore prepends a check "syscall number above the largest one the profile
names for this arch -> ENOSYS"; isle does the same, per audit arch, with x86_64's x32 half
(syscall numbers with bit 30 set) checked against its own maximum.
"""

from __future__ import annotations

import struct

__all__ = ["assemble", "enosys_prologue", "AUDIT_ARCH_X86_64", "X32_BIT", "RET_ERRNO_ENOSYS"]

LD_W_ABS, JA, JEQ, JGT, JSET, RET = 0x20, 0x05, 0x15, 0x25, 0x45, 0x06
SECCOMP_DATA_NR, SECCOMP_DATA_ARCH = 0, 4
RET_ERRNO_ENOSYS = 0x00050000 | 38
AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000

_INSN = struct.Struct("=HBBI")  # struct sock_filter, host byte order

# A symbolic instruction: ("label", name) | ("ld", offset) | ("ret", k) | ("ja", label)
# | (opcode, k, label_if_true, label_if_false) for JEQ/JGT/JSET (None = next instruction).
Item = tuple[object, ...]


def assemble(items: list[Item]) -> bytes:
    """Resolve labels and pack struct sock_filter[]; conditional jumps must stay within 255."""
    labels: dict[object, int] = {}
    n = 0
    for it in items:
        if it[0] == "label":
            labels[it[1]] = n
        else:
            n += 1
    out = []
    i = 0
    for it in items:
        kind = it[0]
        if kind == "label":
            continue
        if kind == "ld":
            out.append(_INSN.pack(LD_W_ABS, 0, 0, int(it[1])))  # type: ignore[call-overload]
        elif kind == "ret":
            out.append(_INSN.pack(RET, 0, 0, int(it[1])))  # type: ignore[call-overload]
        elif kind == "ja":
            out.append(_INSN.pack(JA, 0, 0, labels[it[1]] - i - 1))
        else:
            op, k, t, f = it
            jt = 0 if t is None else labels[t] - i - 1
            jf = 0 if f is None else labels[f] - i - 1
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise ValueError(f"BPF jump out of range at {i}: {it}")
            out.append(_INSN.pack(int(op), jt, jf, int(k)))  # type: ignore[call-overload]
        i += 1
    return b"".join(out)


def enosys_prologue(maxima: dict[int, dict[str, int]]) -> bytes:
    """Instructions to put before a seccomp program: for each audit arch in ``maxima``
    ({arch: {"native": max_nr, "x32": max_nr}}, "x32" only under AUDIT_ARCH_X86_64), a syscall
    number above the max returns ERRNO(ENOSYS); everything else falls through to the program."""
    items: list[Item] = [("ld", SECCOMP_DATA_ARCH)]
    arches = sorted(a for a, m in maxima.items() if m)
    for a in arches:
        items.append((JEQ, a, ("arch", a), None))
    items.append(("ja", "filter"))
    for a in arches:
        m = maxima[a]
        items += [("label", ("arch", a)), ("ld", SECCOMP_DATA_NR)]
        if a == AUDIT_ARCH_X86_64:
            items.append((JSET, X32_BIT, ("x32", a), None))
            items.append((JGT, m["native"], "enosys", "filter") if "native" in m
                         else ("ja", "filter"))
            items.append(("label", ("x32", a)))
            items.append((JGT, m["x32"], "enosys", "filter") if "x32" in m
                         else ("ja", "filter"))
        else:
            items.append((JGT, m["native"], "enosys", "filter"))
    items += [("label", "enosys"), ("ret", RET_ERRNO_ENOSYS), ("label", "filter")]
    return assemble(items)
