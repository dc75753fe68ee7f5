"""OCI linux.seccomp -> libseccomp rules (pure translation) and the errors for bad input."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from isle.errors import ConfigError
from isle.runtime import seccomp as S
from isle.runtime.seccomp import Rule, filter_flags, plan

ALLOW, ERRNO, TRACE = 0x7FFF0000, 0x00050000, 0x7FF00000
EQ, GE, LE, MASKED_EQ = 4, 5, 3, 7


def test_actions_map_to_libseccomp_values_like_runc() -> None:
    got = {}
    for name in S.ACTIONS:
        sc: dict[str, Any] = {"names": ["getcwd"], "action": name}
        if name == "SCMP_ACT_NOTIFY":
            p = plan({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x", "syscalls": [sc]})
        else:
            p = plan({"defaultAction": "SCMP_ACT_LOG", "syscalls": [sc]})
        got[name] = p.rules[0].action if p.rules else None
    assert got == {
        "SCMP_ACT_KILL": 0, "SCMP_ACT_KILL_THREAD": 0, "SCMP_ACT_KILL_PROCESS": 0x80000000,
        "SCMP_ACT_TRAP": 0x30000, "SCMP_ACT_ERRNO": ERRNO | 1, "SCMP_ACT_TRACE": TRACE | 1,
        "SCMP_ACT_LOG": None,  # equal to the default action: dropped, as runc does
        "SCMP_ACT_NOTIFY": 0x7FC00000, "SCMP_ACT_ALLOW": ALLOW,
    }


def test_errno_ret_and_default_errno_ret() -> None:
    p = plan({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18},
        {"names": ["getcwd"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
    ]})
    assert p.default_action == ERRNO | 38
    assert [(r.syscall, r.action) for r in p.rules] == [
        ("mkdir", ERRNO | 18), ("getcwd", TRACE | 7), ("read", ALLOW)]


def test_rule_equal_to_default_is_dropped_but_other_errno_is_kept() -> None:
    p = plan({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},                 # EPERM == default
        {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},  # EPERM == default
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]})
    assert [r.syscall for r in p.rules] == ["clone3"]


def test_one_rule_per_name_with_all_conditions_on_distinct_args() -> None:
    p = plan({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
        "names": ["kill", "tkill"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                 {"index": 1, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]}]})
    conds = ((0, EQ, 1, 0), (1, MASKED_EQ, 0xF0, 0x10))
    assert p.rules == (
        Rule("linux.seccomp.syscalls[0].names[0]", "kill", ERRNO | 1, conds),
        Rule("linux.seccomp.syscalls[0].names[1]", "tkill", ERRNO | 1, conds),
    )


def test_same_arg_conditions_are_split_into_separate_rules_like_runc() -> None:
    p = plan({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
        "names": ["personality"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_GE"},
                 {"index": 0, "value": 20, "op": "SCMP_CMP_LE"},
                 {"index": 1, "value": 3, "op": "SCMP_CMP_EQ"}]}]})
    assert [r.args for r in p.rules] == [((0, GE, 10, 0),), ((0, LE, 20, 0),), ((1, EQ, 3, 0),)]


def test_architectures_flags_and_optimisation() -> None:
    sc = [{"names": [f"n{i}", f"m{i}"], "action": "SCMP_ACT_ALLOW"} for i in range(17)]
    p = plan({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": sc,
              "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
              "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]})
    assert [a for _, a in p.arches] == ["x86_64", "x86", "aarch64"]
    assert p.optimize and p.flags == 2 | 4
    assert not plan({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": sc[:16]}).optimize


def test_filter_flags_adds_new_listener_for_notify() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
           "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
           "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    assert filter_flags(sec) == 1 | S.FLAG_NEW_LISTENER | S.FLAG_TSYNC_ESRCH
    assert filter_flags({"defaultAction": "SCMP_ACT_ALLOW"}) == 0


def test_docker_default_profile_translates() -> None:
    prof = S.default_profile()
    p = plan(prof)
    names = {r.syscall for r in p.rules}
    assert {"read", "write", "execve", "clone", "personality"} <= names
    assert not names & {"mount", "unshare", "keyctl", "add_key", "kexec_load"}
    assert p.optimize and p.default_action == ERRNO | 1
    assert sum(r.syscall == "personality" for r in p.rules) == 5


BASE: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
    {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}


def _bad(path: list[Any], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    tgt: Any = d
    for k in path[:-1]:
        tgt = tgt[k]
    if value is KeyError:
        del tgt[path[-1]]
    else:
        tgt[path[-1]] = value
    return d


@pytest.mark.parametrize("path,value,message", [
    (["syscalls", 1, "action"], "SCMP_ACT_FOO",
     'linux.seccomp.syscalls[1].action: unknown action "SCMP_ACT_FOO"'),
    (["defaultAction"], "ALLOW", 'linux.seccomp.defaultAction: unknown action "ALLOW"'),
    (["defaultAction"], KeyError, "linux.seccomp.defaultAction: is required"),
    (["defaultAction"], "SCMP_ACT_NOTIFY",
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
    (["defaultErrnoRet"], 1, "linux.seccomp.defaultErrnoRet: is only valid with SCMP_ACT_ERRNO"),
    (["syscalls", 1, "args", 0, "op"], "SCMP_CMP_EQUAL",
     'linux.seccomp.syscalls[1].args[0].op: unknown operator "SCMP_CMP_EQUAL"'),
    (["syscalls", 1, "args", 0, "index"], 6,
     "linux.seccomp.syscalls[1].args[0].index: must be an integer in 0..5, got 6"),
    (["syscalls", 1, "args", 0, "value"], -1,
     "linux.seccomp.syscalls[1].args[0].value: must be an integer in 0..18446744073709551615"),
    (["syscalls", 1, "args", 0, "valueTwo"], "1", "linux.seccomp.syscalls[1].args[0].valueTwo:"),
    (["syscalls", 0, "errnoRet"], 70000, "linux.seccomp.syscalls[0].errnoRet: must be an integer"),
    (["syscalls", 0, "names"], ["read", "Mkdir"],
     'linux.seccomp.syscalls[0].names[1]: not a syscall name: "Mkdir"'),
    (["syscalls", 0, "names"], [""], 'linux.seccomp.syscalls[0].names[0]: not a syscall name: ""'),
    (["syscalls", 0, "names"], ["open at"], "linux.seccomp.syscalls[0].names[0]: not a syscall"),
    (["syscalls", 0, "names"], [], "linux.seccomp.syscalls[0].names: must list at least one"),
    (["syscalls", 0, "names"], "read", "linux.seccomp.syscalls[0].names: must be an array"),
    (["syscalls", 0], "read", "linux.seccomp.syscalls[0]: must be an object, got str"),
    (["architectures"], ["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"],
     'linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_Z80"'),
    (["flags"], ["SECCOMP_FILTER_FLAG_NOPE"],
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_NOPE"'),
    (["syscalls", 0, "action"], "SCMP_ACT_NOTIFY",
     "linux.seccomp.listenerPath: is required when an action is SCMP_ACT_NOTIFY"),
])
def test_bad_input_names_the_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        plan(_bad(path, value))
    assert str(ei.value).startswith(message), str(ei.value)


def test_errno_ret_on_action_without_errno_is_an_error() -> None:
    d = _bad(["syscalls", 1, "action"], "SCMP_ACT_ALLOW")
    d["syscalls"][1]["errnoRet"] = 5
    with pytest.raises(ConfigError, match=r"syscalls\[1\]\.errnoRet: is only valid with"):
        plan(d)


def test_notify_on_write_is_refused_like_runc() -> None:
    d = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
         "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_NOTIFY"}]}
    with pytest.raises(ConfigError, match=r"syscalls\[0\]\.names\[1\]: SCMP_ACT_NOTIFY cannot"):
        plan(d)


def test_not_an_object() -> None:
    with pytest.raises(ConfigError, match="^linux.seccomp: must be an object"):
        plan([])  # type: ignore[arg-type]


def test_wait_killable_recv_only_with_a_listener() -> None:
    flag = {"flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"], "listenerPath": "/x"}
    assert filter_flags({"defaultAction": "SCMP_ACT_ALLOW", **flag}) == 0
    notify = {"defaultAction": "SCMP_ACT_ALLOW", **flag,
              "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    assert filter_flags(notify) == 32 | S.FLAG_NEW_LISTENER
