"""Talking to a running VM's monitor (its monitor.sock): requests and answers, the guest's view
for `ps`/`stats`, the host cost of its QEMU, and `exec` of one more process on an exec slot."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable
from typing import Any

from isle.errors import VMError
from isle.runtime.vm import state as st
from isle.runtime.vm.boot import winsize
from isle.runtime.vm.monitor import READY_TIMEOUT, recvline
from isle.vm import job as vmjob


def ask(s: st.State, line: str, timeout: float = READY_TIMEOUT) -> str:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.path.join(s.rundir, "monitor.sock"))
        sock.sendall(line.encode() + b"\n")
        ans = sock.recv(4096).decode().strip()
    except OSError as exc:
        raise VMError(f"container {s.id}: its VM monitor does not answer ({exc})") from exc
    finally:
        sock.close()
    if not ans.startswith("ok"):
        raise VMError(f"container {s.id}: {ans.removeprefix('error ') or 'monitor went away'}")
    return ans[3:]


def running_state(cid: str, root: str) -> st.State:
    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status not in ("running", "paused"):
        raise InvalidState(f"container {cid} is {s.status}, not running")
    return s


def guest_ps(cid: str, root: str) -> list[list[str]]:
    """The container's processes as the guest sees them (for `top`): a header row (PID USER
    TIME COMMAND) then one row each; asked of the guest over the control channel."""
    import base64

    if running_state(cid, root).status == "paused":
        from isle.errors import InvalidState

        raise InvalidState(f"container {cid} is paused: its guest cannot answer")
    answer = ask(running_state(cid, root), "ps", timeout=30)
    text = base64.b64decode(answer).decode(errors="replace")
    return [ln.split(None, 3) for ln in text.splitlines() if ln.strip()]


def guest_stats(cid: str, root: str) -> dict[str, int]:
    """The guest's view for `stats`: memory used and total (bytes, MemTotal - MemAvailable),
    CPU time of all guest vCPUs outside idle (ns), the container's processes, and the PSS of
    QEMU on the host (what the VM really costs the host)."""
    s = running_state(cid, root)
    out: dict[str, int] = {"qemu_pss": qemu_pss(s)}
    if s.status == "running":
        try:
            total, avail, ticks, pids = (int(x) for x in ask(s, "stats", timeout=30).split())
        except ValueError as exc:
            raise VMError(f"container {cid}: a malformed stats answer from the guest") from exc
        out.update(memory_usage=(total - avail) << 10, memory_limit=total << 10,
                   cpu_ns=ticks * 10_000_000, pids=pids)  # USER_HZ = 100
    return out


def qemu_pss(s: st.State) -> int:
    """Proportional set size of the VM's QEMU in bytes (shared template pages split among the
    clones that map them); 0 when it is gone."""
    if not st.pid_alive(s.qemu_pid, s.qemu_start):
        return 0
    try:
        with open(f"/proc/{s.qemu_pid}/smaps_rollup") as f:
            for ln in f:
                if ln.startswith("Pss:"):
                    return int(ln.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def exec_(cid: str, root: str, job: vmjob.Job, tty_fd: int = -1, *,
          script: Callable[[int], str] | None = None,
          on_slot: Callable[[int], None] | None = None,
          fds: tuple[int, int, int] = (0, 1, 2)) -> int:
    """Run one more process in a running VM on a free exec slot; stream its stdio; its exit code.

    With job.terminal the process runs on the slot's guest tty, relayed to tty_fd (a raw pty
    slave, or our own terminal), whose size changes are passed on. script(slot): the guest
    shell to run instead of job's (render_exec's contract: the slot's ports, 'xexit SLOT N');
    on_slot(slot) once it was sent; fds: the stdin, stdout and stderr to stream."""
    import base64
    import threading

    from isle.errors import InvalidState

    s = st.load(root, cid)
    if s.status != "running":
        raise InvalidState(f"container {cid} is {s.status}, not running")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    socks: list[socket.socket] = [conn]
    try:
        try:
            conn.connect(os.path.join(s.rundir, "monitor.sock"))
            conn.sendall(b"alloc tty\n" if job.terminal else b"alloc\n")
            ans = recvline(conn, 256).split()
        except OSError as exc:
            raise VMError(f"container {cid}: its VM monitor does not answer ({exc})") from exc
        if ans[:1] != ["slot"]:
            raise VMError(
                f"container {cid}: exec refused: {' '.join(ans[1:]) or 'monitor went away'}"
            )
        i = int(ans[1])
        ends = {}
        tags = ("t",) if job.terminal else ("o", "e") + (("i",) if job.stdin else ())
        for tag in tags:
            x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            x.connect(os.path.join(s.rundir, "tty.sock" if tag == "t" else f"x{i}{tag}.sock"))
            socks.append(x)
            ends[tag] = x
        if job.stdin and not job.terminal:
            xi = ends["i"]

            def pump() -> None:
                try:
                    while chunk := os.read(fds[0], 65536):
                        xi.sendall(chunk)
                    xi.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            threading.Thread(target=pump, daemon=True).start()
        text = script(i) if script is not None else vmjob.render_exec(job, i)
        conn.sendall(f"exec {i} {base64.b64encode(text.encode()).decode()}\n".encode())
        if on_slot is not None:
            on_slot(i)
        outs = {ends["t"]: tty_fd} if job.terminal else {ends["o"]: fds[1], ends["e"]: fds[2]}
        code: int | None = None
        buf = b""
        size = (0, 0)
        keys = job.terminal  # reading the terminal for keys (until its end closes)
        while True:
            watch: list[Any] = list(outs) + ([conn] if code is None else [])
            if keys and code is None:
                watch.append(tty_fd)
                if (now := winsize(tty_fd)) != size and now[0] and now[1]:
                    size = now
                    try:
                        ask(s, f"winsz {i} {now[0]} {now[1]}", timeout=5)
                    except VMError:
                        pass
            timeout = (0.2 if job.terminal else None) if code is None else 0.2
            r, _, _ = select.select(watch, [], [], timeout)
            if not r:
                if code is None:
                    continue
                return code  # drained after the exit report
            for x in r:
                if isinstance(x, int):  # keys typed on tty_fd: to the guest's tty (it echoes)
                    try:
                        data = os.read(tty_fd, 65536)
                    except OSError:
                        data = b""
                    if data:
                        ends["t"].sendall(data)
                    else:
                        keys = False  # the caller closed its end
                    continue
                data = x.recv(65536)
                if x is conn:
                    if not data:
                        raise VMError(f"container {cid} ended while exec was running")
                    buf += data
                    if b"\n" in buf:
                        line = buf.split(b"\n", 1)[0].decode().split()
                        if line[:1] != ["exit"]:
                            raise VMError(f"exec: {' '.join(line)}")
                        code = int(line[1])
                elif data:
                    os.write(outs[x], data)
                else:
                    del outs[x]
    finally:
        for x in socks:
            x.close()

