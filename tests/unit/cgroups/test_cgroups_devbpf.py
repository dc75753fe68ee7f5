"""The v2 device eBPF program, built as bytes (pure): golden instructions per rule shape."""

from __future__ import annotations

import struct

from isle.cgroups.devbpf import program
from isle.cgroups.resources import device_rules


def jumps_land_on_block_ends(code: bytes) -> bool:
    ins = disasm(code)
    exits = {i + 1 for i, x in enumerate(ins) if x[0] == 0x95}
    return all(i + 1 + x[3] in exits for i, x in enumerate(ins) if x[0] == 0x55)


def disasm(code: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", code, i)
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


PROLOGUE = [(0x61, 2, 1, 0, 0), (0x57, 2, 0, 0, 0xFFFF), (0x61, 3, 1, 0, 0),
            (0x77, 3, 0, 0, 16), (0x61, 4, 1, 4, 0), (0x61, 5, 1, 8, 0)]
DENY_REST = [(0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]


def rules(*r: dict) -> list[dict]:
    got = device_rules({"devices": list(r)})
    assert got is not None
    return got


def test_docker_shape_last_rule_first_and_deny_all_ends_it() -> None:
    code = program(rules({"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}))
    assert disasm(code) == PROLOGUE + [
        # c 1:5 r -- type, access subset, major, minor; each miss jumps past this rule
        (0x55, 2, 0, 7, 2), (0xBF, 1, 3, 0, 0), (0x57, 1, 0, 0, 5), (0x55, 1, 0, 4, 0),
        (0x55, 4, 0, 3, 1), (0x55, 5, 0, 2, 5), (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),
        # c 1:3 rwm
        (0x55, 2, 0, 4, 2), (0x55, 4, 0, 3, 1), (0x55, 5, 0, 2, 3),
        (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),
    ] + DENY_REST  # the leading "deny all" matches everything: nothing after it is emitted


def test_no_rules_denies_everything_and_wildcards_skip_checks() -> None:
    assert disasm(program([])) == PROLOGUE + DENY_REST
    code = program(rules({"allow": True, "type": "b", "access": "m"},
                         {"allow": False, "type": "c", "major": 136, "access": "rwm"}))
    assert disasm(code) == PROLOGUE + [
        (0x55, 2, 0, 3, 2), (0x55, 4, 0, 2, 136), (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0),
        (0x55, 2, 0, 5, 1), (0xBF, 1, 3, 0, 0), (0x57, 1, 0, 0, 6), (0x55, 1, 0, 2, 0),
        (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),
    ] + DENY_REST


def test_every_jump_lands_just_after_a_rule() -> None:
    code = program(rules(*[{"allow": i % 2 == 0, "type": "cb"[i % 2], "major": i,
                            "minor": i if i % 3 else None, "access": "rwm"[: 1 + i % 3]}
                           for i in range(12)]))
    assert jumps_land_on_block_ends(code)
