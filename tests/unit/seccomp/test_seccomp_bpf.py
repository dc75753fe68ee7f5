"""The -ENOSYS prologue and whole compiled programs, run by a small classic-BPF interpreter."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from isle.runtime import seccomp as S
from isle.runtime.seccomp_bpf import AUDIT_ARCH_X86_64, X32_BIT, assemble, enosys_prologue

AUDIT_ARCH_I386 = 0x40000003
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
ENOSYS, EPERM = 38, 1


def run_bpf(prog: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()
            ) -> int:
    """Evaluate a seccomp program over struct seccomp_data; supports the opcodes libseccomp
    and the prologue emit (ld abs, ja, jeq/jgt/jge/jset k, and k, ret k)."""
    a6 = (list(args) + [0] * 6)[:6]
    data = struct.pack("=IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *a6)
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    for _ in range(10000):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x05:
            pc += k
        elif code == 0x06:
            return k
        elif code in (0x15, 0x25, 0x35, 0x45):
            ok = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if ok else jf
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")
    raise AssertionError("no return")


def test_assemble_resolves_labels_and_refuses_far_jumps() -> None:
    prog = assemble([("ld", 0), (0x15, 7, "yes", None), ("ret", 1), ("label", "yes"), ("ret", 2)])
    assert run_bpf(prog, 7) == 2 and run_bpf(prog, 8) == 1
    far: list[Any] = [(0x15, 1, "end", None)] + [("ret", 0)] * 300 + [("label", "end"), ("ret", 1)]
    with pytest.raises(ValueError, match="out of range"):
        assemble(far)


def test_prologue_answers_enosys_above_each_arch_max_and_falls_through_otherwise() -> None:
    tail = assemble([("ret", ALLOW)])
    prog = enosys_prologue({AUDIT_ARCH_X86_64: {"native": 435, "x32": X32_BIT | 547},
                            AUDIT_ARCH_I386: {"native": 440}}) + tail
    assert run_bpf(prog, 435) == ALLOW and run_bpf(prog, 436) == ERRNO | ENOSYS
    assert run_bpf(prog, X32_BIT | 547) == ALLOW
    assert run_bpf(prog, X32_BIT | 548) == ERRNO | ENOSYS
    assert run_bpf(prog, 440, AUDIT_ARCH_I386) == ALLOW
    assert run_bpf(prog, 441, AUDIT_ARCH_I386) == ERRNO | ENOSYS
    assert run_bpf(prog, 5000, 0xC00000B7) == ALLOW  # another arch: left to the filter
    only_native = enosys_prologue({AUDIT_ARCH_X86_64: {"native": 10}}) + tail
    assert run_bpf(only_native, X32_BIT | 999) == ALLOW  # no x32 max: the filter decides


def test_docker_default_program_semantics() -> None:
    prog = S.compile_filter(S.default_profile(), use_cache=False)
    # x86_64: read(0) allowed; acct(163) and keyctl(250) refused; unknown-new ones ENOSYS
    assert run_bpf(prog, 0) == ALLOW
    assert run_bpf(prog, 163) == ERRNO | EPERM and run_bpf(prog, 250) == ERRNO | EPERM
    assert run_bpf(prog, 435) == ERRNO | ENOSYS           # clone3: Docker's explicit ENOSYS
    assert run_bpf(prog, 999) == ERRNO | ENOSYS           # newer than the profile
    assert run_bpf(prog, 135, args=(0xFFFFFFFF,)) == ALLOW  # personality query
    assert run_bpf(prog, 135, args=(0x0040000,)) == ERRNO | EPERM
    # i386: socketcall(102) is in the profile, its 1000th syscall is not
    assert run_bpf(prog, 102, AUDIT_ARCH_I386) == ALLOW
    assert run_bpf(prog, 1000, AUDIT_ARCH_I386) == ERRNO | ENOSYS
    # an arch the profile does not list: libseccomp's bad-arch action (kill)
    assert run_bpf(prog, 0, 0xC00000B7) & 0xFFFF0000 in (0, 0x80000000)


def test_no_prologue_when_the_default_lets_calls_through() -> None:
    for default in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        p = S.plan({"defaultAction": default,
                    "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_KILL"}]})
        assert not p.enosys
    assert not S.plan({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": ENOSYS}).enosys
    assert S.plan({"defaultAction": "SCMP_ACT_KILL_PROCESS"}).enosys
    allow = {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}
    prog = S.compile_filter(allow, use_cache=False)
    assert run_bpf(prog, 999) == ALLOW and run_bpf(prog, 79) == ERRNO | EPERM
