"""Compiled filters loaded into a real forked (single-threaded) process, checked by the kernel."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isle.runtime import seccomp as S
from isle.sys.libc import PR_SET_NO_NEW_PRIVS, LinuxSyscalls

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers below are x86_64"),
    pytest.mark.timeout(60),
]

NR = {"getcwd": 79, "mkdir": 83, "mkdirat": 258, "personality": 135, "unshare": 272,
      "keyctl": 250, "add_key": 248, "mount": 165, "clone3": 435, "acct": 163, "kill": 62,
      "getpid": 39, "fchmodat2": 452, "mseal": 462, "io_uring_setup": 425}
CLONE_NEWUSER = 0x10000000
_libc = ctypes.CDLL(None, use_errno=True)


def sys_call(name: str, *args: int) -> int:
    """Raw syscall; returns the result or -errno."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_ulong(a) for a in args])
    return -ctypes.get_errno() if ret == -1 else int(ret)


def in_filtered_child(seccomp: dict[str, Any], body: Callable[[int | None], Any]
                      ) -> tuple[int, Any]:
    """Fork, set no_new_privs, install the compiled filter, run body(listener_fd); return the
    child's wait status and what body returned (JSON over a pipe)."""
    prog = S.compile_filter(seccomp, use_cache=False)
    flags = S.filter_flags(seccomp)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            LinuxSyscalls().prctl(PR_SET_NO_NEW_PRIVS, 1)
            fd = S.install_filter(prog, flags=flags)
            out = json.dumps({"ok": body(fd)})
        except BaseException as e:  # report, never return into pytest
            out, code = json.dumps({"error": repr(e)}), 1
        os.write(w, out.encode())
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data)["ok"] if data else None
    if data and "error" in json.loads(data):
        pytest.fail(f"child failed: {json.loads(data)['error']}")
    return status, result


def test_errno_returns_the_configured_errno() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOTSUP}]}

    def body(_: int | None) -> list[int]:
        return [sys_call("mkdir", 0, 0o700), sys_call("getcwd", 0, 0), sys_call("getpid")]

    status, got = in_filtered_child(sec, body)
    assert status == 0
    assert got[:2] == [-errno.EXDEV, -errno.ENOTSUP] and got[2] > 0


def test_default_errno_ret_applies_to_unlisted_syscalls() -> None:
    sec = {**S.default_profile(), "defaultErrnoRet": errno.ENOSYS}
    status, got = in_filtered_child(sec, lambda _: [sys_call("acct", 0), sys_call("getpid")])
    assert status == 0 and got[0] == -errno.ENOSYS and got[1] > 0


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_KILL"])
def test_kill_actions_kill_with_sigsys(action: str) -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], "action": action}]}
    status, got = in_filtered_child(sec, lambda _: sys_call("getcwd", 0, 0))
    assert got is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_trap_raises_sigsys_that_a_handler_sees() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_TRAP"}]}
    seen: list[int] = []

    def body(_: int | None) -> list[int]:
        signal.signal(signal.SIGSYS, lambda sig, frame: seen.append(sig))
        sys_call("getcwd", 0, 0)
        return seen

    status, got = in_filtered_child(sec, body)
    assert status == 0 and got == [signal.SIGSYS]


def test_arg_comparisons_block_one_value_and_allow_another() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
        # kill(self, 0) refused; kill(1, 0) and kill(self, SIGCONT) allowed (AND across args)
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_GT"},
                  {"index": 0, "value": 1, "op": "SCMP_CMP_NE"},  # same arg: runc splits (OR)
                  ]},
        {"names": ["acct"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS,
         "args": [{"index": 0, "value": 0xF0, "valueTwo": 0x30, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]}

    def body(_: int | None) -> list[int]:
        me = os.getpid()
        return [sys_call("personality", 0xFFFFFFFF), sys_call("personality", 0),
                sys_call("kill", me, 0), sys_call("kill", 1, 0),
                sys_call("acct", 0x1234), sys_call("acct", 0x1204)]

    status, got = in_filtered_child(sec, body)
    assert status == 0
    pers_blocked, pers_ok, kill_me, kill_1, acct_hit, acct_miss = got
    assert pers_blocked == -errno.EPERM and pers_ok >= 0
    # split rules are ORed: pid>0 alone is enough, so both kills are refused, as under runc
    assert kill_me == -errno.EXDEV and kill_1 == -errno.EXDEV
    assert acct_hit == -errno.EROFS        # 0x1234 & 0xf0 == 0x30
    assert acct_miss != -errno.EROFS       # 0x1204 & 0xf0 == 0x00: reaches the kernel


def test_conditions_on_different_args_are_anded() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV,
         "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 1, "op": "SCMP_CMP_NE"}]}]}

    def body(_: int | None) -> list[int]:
        me = os.getpid()
        return [sys_call("kill", me, 0), sys_call("kill", 1, 0),
                sys_call("kill", me, int(signal.SIGCONT))]

    status, got = in_filtered_child(sec, body)
    assert status == 0 and got == [-errno.EXDEV, 0, 0]


@pytest.mark.parametrize("flags", [
    ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],  # dropped: no listener
])
def test_oci_flags_are_accepted_by_the_kernel(flags: list[str]) -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "flags": flags, "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}]}

    def body(_: int | None) -> list[Any]:
        with open("/proc/self/status") as f:
            mode = [ln.split()[1] for ln in f if ln.startswith("Seccomp:")]
        return [sys_call("getcwd", 0, 0), mode]

    status, got = in_filtered_child(sec, body)
    assert status == 0 and got == [-errno.EXDEV, ["2"]]


def test_log_allows() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_LOG"}]}
    status, got = in_filtered_child(sec, lambda _: os.getcwd())
    assert status == 0 and got == os.getcwd()


def test_trace_without_a_tracer_returns_enosys() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_TRACE", "errnoRet": errno.EXDEV}]}
    status, got = in_filtered_child(sec, lambda _: sys_call("getcwd", 0, 0))
    assert status == 0 and got == -errno.ENOSYS


# struct seccomp_notif (80 bytes) and struct seccomp_notif_resp (24 bytes), linux/seccomp.h
NOTIF = struct.Struct("=QII" "iIQ6Q")
RESP = struct.Struct("=QqiI")
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)


def test_notify_hands_the_listener_to_the_agent_which_answers(tmp_path: Path) -> None:
    import fcntl

    path = str(tmp_path / "agent.sock")
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path, "listenerMetadata": "hello",
           "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
           "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    assert S.filter_flags(sec) & S.FLAG_NEW_LISTENER
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(path)
    agent.listen(1)
    agent.settimeout(20)

    def body(fd: int | None) -> int:
        assert fd is not None
        state = {"ociVersion": "1.0.2", "id": "t1", "status": "creating", "pid": os.getpid(),
                 "bundle": "/b"}
        S.send_listener(path, fd, state, metadata="hello")
        os.close(fd)
        return sys_call("mkdir", 0, 0o700)  # blocks until the agent answers

    # the child installs the filter and blocks in mkdir; this (single-threaded) process is the agent
    prog = S.compile_filter(sec, use_cache=False)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            agent.close()
            LinuxSyscalls().prctl(PR_SET_NO_NEW_PRIVS, 1)
            fd = S.install_filter(prog, flags=S.filter_flags(sec))
            out = json.dumps({"ok": body(fd)})
        except BaseException as e:
            out, code = json.dumps({"error": repr(e)}), 1
        os.write(w, out.encode())
        os._exit(code)
    os.close(w)
    try:
        conn, _ = agent.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        assert len(fds) == 1
        nfd = fds[0]
        try:
            meta = json.loads(msg)
            assert meta["fds"] == ["seccompFd"] and meta["pid"] == pid
            assert meta["metadata"] == "hello" and meta["state"]["id"] == "t1"
            assert os.readlink(f"/proc/self/fd/{nfd}") == "anon_inode:seccomp notify"
            buf = bytearray(NOTIF.size)
            fcntl.ioctl(nfd, SECCOMP_IOCTL_NOTIF_RECV, buf)
            nid, npid, _, nr, _, _, *args = NOTIF.unpack(buf)
            assert npid == pid and nr == NR["mkdir"] and args[1] == 0o700
            fcntl.ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND,
                        bytearray(RESP.pack(nid, 0, -errno.EROFS, 0)))
        finally:
            os.close(nfd)
    finally:
        agent.close()
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
    assert status == 0, data
    assert json.loads(data) == {"ok": -errno.EROFS}


def _docker_probe(d: str) -> dict[str, Any]:
    res = {
        "unshare_user": sys_call("unshare", CLONE_NEWUSER),
        "keyctl": sys_call("keyctl", 0, 0),
        "add_key": sys_call("add_key", 0, 0, 0, 0, 0),
        "mount": sys_call("mount", 0, 0, 0, 0, 0),
        "clone3": sys_call("clone3", 0, 0),
        "fchmodat2": sys_call("fchmodat2", 0, 0, 0, 0),  # allowed since Docker 25 (Linux 6.6)
        "mseal": sys_call("mseal", 0, 0, 0),  # newer than the profile here (Linux 6.10)
        "io_uring_setup": sys_call("io_uring_setup", 0, 0),  # denied since Docker 25
        "personality_norandom": sys_call("personality", 0x0040000),
        "personality_query": sys_call("personality", 0xFFFFFFFF),
        "getpid": sys_call("getpid"),
    }
    os.mkdir(d)
    with open(os.path.join(d, "f"), "w") as f:
        f.write("ok")
    with open(os.path.join(d, "f")) as f:
        res["read"] = f.read()
    os.unlink(os.path.join(d, "f"))
    os.rmdir(d)
    pid = os.fork()  # clone with plain flags is allowed
    if pid == 0:
        os._exit(7)
    res["child"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return res


def test_docker_default_blocks_what_docker_blocks_and_allows_the_rest(tmp_path: Path) -> None:
    d = str(tmp_path / "made-under-docker-profile")
    status, got = in_filtered_child(S.default_profile(), lambda _: _docker_probe(d))
    assert status == 0
    blocked = ["unshare_user", "keyctl", "add_key", "mount", "personality_norandom"]
    assert {k: got[k] for k in blocked} == {k: -errno.EPERM for k in blocked}
    assert got["clone3"] == -errno.ENOSYS  # Docker answers ENOSYS so libc falls back to clone
    assert got["mseal"] == -errno.ENOSYS  # the ENOSYS prologue, not the default EPERM
    assert got["fchmodat2"] not in (-errno.ENOSYS, -errno.EPERM)  # Docker 25+ allows it
    assert got["io_uring_setup"] == -errno.EPERM  # Docker 25+ denies io_uring
    assert got["personality_query"] >= 0 and got["getpid"] > 0
    assert got["read"] == "ok" and got["child"] == 7
    # control: the same calls under an allow-all filter (we are root) are not EPERM
    allow_all = {"defaultAction": "SCMP_ACT_ALLOW"}
    status, free = in_filtered_child(allow_all, lambda _: _docker_probe(d))
    assert status == 0
    assert all(free[k] != -errno.EPERM for k in blocked), free
    assert free["clone3"] != -errno.ENOSYS
    kernel = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    assert free["mseal"] != -errno.ENOSYS or kernel < (6, 10)
    assert free["io_uring_setup"] != -errno.EPERM


def test_the_kernel_refuses_an_invalid_program() -> None:
    status, got = in_filtered_child({"defaultAction": "SCMP_ACT_ALLOW"}, lambda _: _bad_install())
    assert status == 0 and got == errno.EINVAL
    with pytest.raises(ValueError):
        S.install_filter(b"\x00" * 7)


def _bad_install() -> int:
    try:
        S.install_filter(b"\x00" * 8)  # BPF_LD with no BPF_RET: rejected by the verifier
    except OSError as e:
        return e.errno or 0
    return 0
