"""The VM's monitor: one small process per VM (like conmon's child), QEMU's parent. It holds the
guest's control channel, starts the job on `start`, forwards `kill`, lends exec slots, passes the
guest agent's answers (ps, stats) on, records the exit code in <root>/<id>/exit and exits with that
code, so a subreaper (conmon, containerd's shim) sees the program's real status."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
from typing import Any

from isle.config import Settings
from isle.errors import IsleError, VMError
from isle.runtime.vm import state as st
from isle.runtime.vm.boot import Prepared, drain_relays, drop_cgroup, launch, unplug, winsize
from isle.vm.microvm import MicroVM

#: a container id as runtime.vm.state accepts it (one is passed on to the guest's shell)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
READY_TIMEOUT = float(os.environ.get("ISLE_VM_READY_TIMEOUT", "90"))
FAILED = 255  # exit code recorded when the VM itself failed (QEMU died, guest vanished)


def run_monitor(root: str, s: st.State, p: Prepared, settings: Settings, ready_w: int,
             cgroup_files: tuple[str, ...] = ()) -> int:
    """The detached monitor's life; returns the exit code for os._exit."""
    vm: MicroVM | None = None
    code = FAILED
    sdir = os.path.join(root, s.id)
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        stdin = os.dup(0)
        os.dup2(devnull, 0)
        vm = launch(p, settings, 1, 2, in_fd=stdin, cgroup_files=cgroup_files)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        vm.expect("ready", READY_TIMEOUT)
        lsock = listen(vm)
        s.status, s.pid, s.qemu_pid, s.rundir = "created", os.getpid(), vm.pid, vm.rundir
        s.pid_start, s.qemu_start = st.starttime(s.pid), st.starttime(vm.pid)
        st.save(root, s)
        os.write(ready_w, f"ok {os.getpid()}\n".encode())
        os.close(ready_w)
        ready_w = -1
        code = serve(root, s, p, vm, lsock)
    except IsleError as exc:
        if ready_w >= 0:
            os.write(ready_w, f"error {exc}\n".encode())
        else:
            note(sdir, "error", str(exc))
    except BaseException as exc:  # the monitor must never die silently
        if ready_w >= 0:
            os.write(ready_w, f"error monitor: {exc!r}\n".encode())
    finally:
        if vm is not None:
            vm.close()
        drain_relays()
        unplug(s)
        drop_cgroup(s.cgroup)
        if os.path.isdir(sdir):
            note(sdir, "exit", str(code))
    return code


def note(sdir: str, name: str, text: str) -> None:
    from isle.sys.fs import atomic_write

    try:
        atomic_write(os.path.join(sdir, name), text.encode(), durable=False)
    except OSError:
        pass


def listen(vm: MicroVM) -> socket.socket:
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    lsock.bind(os.path.join(vm.rundir, "monitor.sock"))
    lsock.listen(8)
    return lsock


def recvline(conn: socket.socket, limit: int = 1 << 20) -> str:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


def serve(
    root: str,
    s: st.State,
    p: Prepared,
    vm: MicroVM,
    lsock: socket.socket,
    *,
    job_sent: bool = False,
    forward_signals: bool = False,
) -> int:
    """The monitor loop: guest control lines, and start/kill/exec requests on monitor.sock."""
    assert vm.ctl is not None
    started = False
    waiting: list[socket.socket] = []  # `start` callers answered once the guest says started
    slots: dict[int, socket.socket | None] = {i: None for i in range(1, p.boot.slots + 1)}
    busy: set[int] = set()
    tty_slot = 0  # the exec slot the VM's terminal (hvc0) is lent to
    asking: dict[str, list[socket.socket]] = {"ps": [], "stats": []}  # guest agent queries
    stop = {"sig": 0}

    def on_term(signum: int, _f: Any) -> None:
        if forward_signals:
            try:
                vm.signal(signum)
            except VMError:
                pass
        else:
            stop["sig"] = signum

    for sig in (signal.SIGTERM,) + ((signal.SIGINT, signal.SIGHUP) if forward_signals else ()):
        signal.signal(sig, on_term)
    import time

    deadline = time.monotonic() + READY_TIMEOUT
    size = (0, 0)
    while True:
        if stop["sig"]:
            return 128 + stop["sig"]
        if started and p.tty_fd >= 0 and (now := winsize(p.tty_fd)) != size:
            size = now  # the caller resized the pty (conmon, `exec -t`'s resize): tell the guest
            if now[0] and now[1]:
                vm.send(f"winsz 0 {now[0]} {now[1]}".encode())
        if job_sent and not started and time.monotonic() > deadline:
            raise VMError(
                f"the guest did not start the process within {READY_TIMEOUT:.0f}s; {vm.diagnose()}"
            )
        try:
            # a line already buffered (a clone's replayed 'ready', two lines in one read) is
            # handled now, not after the select's timeout
            wait = 0.0 if vm.has_line() else 0.2 if p.tty_fd >= 0 else 1.0
            r, _, _ = select.select([vm.ctl, lsock], [], [], wait)
        except InterruptedError:
            continue
        if vm.ctl in r or vm.has_line():
            line = vm.readline(5)
            if line == "started":
                started = True
                s.status = "running"
                st.save(root, s)
                for c in waiting:
                    c.sendall(b"ok\n")
                    c.close()
                waiting.clear()
            elif line.startswith("exit"):
                for pending in slots.values():
                    if pending is not None:
                        pending.close()
                return int(line.split()[1])
            elif line.startswith("xexit"):
                _, slot, code = line.split()
                caller = slots.get(int(slot))
                slots[int(slot)] = None
                busy.discard(int(slot))
                if tty_slot == int(slot):
                    tty_slot = 0
                if caller is not None:
                    try:
                        caller.sendall(f"exit {code}\n".encode())
                    except OSError:
                        pass
                    caller.close()
            elif line.split(" ", 1)[0] in asking:  # the guest agent's answer: to the askers
                word, _, rest = line.partition(" ")
                for c in asking[word]:
                    try:
                        c.sendall(f"ok {rest}\n".encode())
                    except OSError:
                        pass
                    c.close()
                asking[word].clear()
            elif line.startswith("error"):
                raise VMError(f"guest init failed: {line[6:]}")
        if lsock in r:
            conn, _ = lsock.accept()
            conn.settimeout(5)
            try:
                cmd = conn.recv(4096).decode().split()
            except OSError:
                conn.close()
                continue
            if cmd[:1] == ["alloc"]:
                free = [i for i in slots if i not in busy]
                if cmd[1:] == ["tty"] and started and free and (p.terminal or tty_slot):
                    conn.sendall(b"error the VM's terminal is taken (by the container's "
                                 + (b"process" if p.terminal else b"other exec -t") + b")\n")
                    conn.close()
                    continue
                if not started or not free:
                    conn.sendall(
                        b"error "
                        + (
                            b"all exec slots are busy"
                            if started
                            else b"the container's process has not started"
                        )
                        + b"\n"
                    )
                    conn.close()
                    continue
                i = free[0]
                try:
                    conn.sendall(f"slot {i}\n".encode())
                    req = recvline(conn).split()
                except OSError:
                    conn.close()
                    continue
                if req[:2] != ["exec", str(i)] or len(req) != 3:
                    conn.close()
                    continue
                busy.add(i)
                slots[i] = conn
                if cmd[1:] == ["tty"]:
                    tty_slot = i
                vm.send(f"exec {i} {req[2]}".encode())
            elif cmd[:1] == ["start"]:
                if started or job_sent:  # (job_sent: a foreground run, or a second start)
                    conn.sendall(b"error already started\n")
                    conn.close()
                else:
                    vm.send_job(p.script)
                    job_sent = True
                    deadline = time.monotonic() + READY_TIMEOUT
                    waiting.append(conn)
            elif cmd[:1] in (["ps"], ["stats"]) and len(cmd) == 1:
                if not started:
                    conn.sendall(b"error the container's process has not started\n")
                    conn.close()
                else:
                    if not asking[cmd[0]]:
                        vm.send(cmd[0].encode())
                    asking[cmd[0]].append(conn)
            elif cmd[:1] == ["winsz"] and len(cmd) == 4 and all(x.isdigit() for x in cmd[1:]):
                # an exec's terminal resized: winsz SLOT ROWS COLS (the slot's tty is hvcSLOT)
                if tty_slot and int(cmd[1]) == tty_slot:
                    vm.send(f"winsz 0 {int(cmd[2])} {int(cmd[3])}".encode())
                conn.sendall(b"ok\n")
                conn.close()
            elif (cmd[:1] == ["xkill"] and len(cmd) == 4 and cmd[1].isdigit()
                  and cmd[2].isdigit() and _ID.fullmatch(cmd[3])):
                # a pod container's signal (runtime.vm.pod): xkill SLOT SIG CID
                if int(cmd[1]) in busy:
                    vm.send(" ".join(cmd).encode())
                conn.sendall(b"ok\n")
                conn.close()
            elif cmd[:1] == ["kill"] and len(cmd) in (2, 3):
                signum = int(cmd[1])
                conn.sendall(b"ok\n")
                conn.close()
                if started:
                    vm.signal(signum, all=cmd[2:] == ["all"])
                else:  # nothing runs yet: the VM itself is what a signal stops
                    return 128 + signum
            else:
                conn.sendall(b"error unknown command\n")
                conn.close()


