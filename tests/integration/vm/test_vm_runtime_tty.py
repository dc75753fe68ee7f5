"""process.terminal under isle-vm-runtime: the pty master goes to --console-socket (as runc sends
it), the process runs on a real tty in the guest (its controlling terminal), resizes reach it,
and its exit code comes back."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]
RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime")


def _read_until(fd: int, buf: bytearray, want: bytes, timeout: float = 90) -> bool:
    end = time.monotonic() + timeout
    while want not in buf and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return want in buf


@pytest.mark.timeout(200)
def test_create_with_console_socket_gives_a_tty_that_resizes(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    # process.consoleSize holds from the first instruction; the terminal has a node in the
    # container's /dev (/dev/console, as runc binds the pty there), so tty names it
    script = ('[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo is-a-tty; echo "size $(stty size)"; tty; '
              'while read x; do [ "$x" = q ] && break; echo "got:$x"; stty size; done; exit 7')
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", script], terminal=True,
                        consoleSize={"height": 21, "width": 77})
    root = str(tmp_path / "root")
    sp = str(tmp_path / "console.sock")
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(sp)
    ls.listen(1)
    ls.settimeout(150)

    def rt(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([RUNTIME, "--root", root, *args], env=vm_env, capture_output=True,
                              timeout=150, stdin=subprocess.DEVNULL)

    # without a console socket a detached terminal is refused, leaving nothing
    r = rt("create", "-b", b, "t0")
    assert r.returncode != 0 and b"console-socket" in r.stderr, r.stderr
    assert not (tmp_path / "root" / "t0").exists()
    errf = open(tmp_path / "create.err", "wb")  # (not a pipe: the VM's monitor keeps stdio)
    created = subprocess.Popen([RUNTIME, "--root", root, "create", "--console-socket", sp,
                                "-b", b, "t1"], env=vm_env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=errf)
    errf.close()
    master = -1
    try:
        conn, _ = ls.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
        (master,) = fds
        assert msg.startswith(b"/dev/pts/")
        assert created.wait(150) == 0, (tmp_path / "create.err").read_text()
        assert rt("start", "t1").returncode == 0
        out = bytearray()
        assert _read_until(master, out, b"is-a-tty"), out
        assert _read_until(master, out, b"/dev/console"), out
        assert b"size 21 77" in out, out
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
        time.sleep(0.8)  # the runtime polls the size every 0.2 s
        os.write(master, b"hello\r")
        assert _read_until(master, out, b"33 111"), out
        assert b"hello\r\n" in out  # echoed by the guest's tty (the host side is raw: once)
        assert out.count(b"hello") == 2  # the echo and got:hello
        os.write(master, b"q\r")
        end = time.monotonic() + 60
        while json.loads(rt("state", "t1").stdout)["status"] != "stopped":
            assert time.monotonic() < end
            time.sleep(0.3)
    finally:
        if created.poll() is None:
            created.kill()
            created.wait()
        if master >= 0:
            os.close(master)
        rt("delete", "-f", "t1")
        ls.close()
    assert not (tmp_path / "root" / "t1").exists()


@pytest.mark.timeout(200)
def test_exec_tty_in_a_container_without_one(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs,
                        ["sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.2; done'])
    root = str(tmp_path / "root")

    def rt(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([RUNTIME, "--root", root, *args], env=vm_env, timeout=150,
                              stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]

    assert rt("run", "-d", "-b", b, "x1", stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL).returncode == 0
    master = -1
    try:
        # no console socket and no terminal on stdin: refused
        r = rt("exec", "-t", "x1", "true", capture_output=True)
        assert r.returncode != 0 and b"console-socket" in r.stderr, r.stderr
        sp = str(tmp_path / "c.sock")
        ls = socket.socket(socket.AF_UNIX)
        ls.bind(sp)
        ls.listen(1)
        ls.settimeout(60)
        pid_file = tmp_path / "exec.pid"
        # conmon's way: detached, the pty master to the socket, the daemon's pid to --pid-file
        r = rt("exec", "-d", "-t", "--console-socket", sp, "--pid-file", str(pid_file), "x1",
               "sh", "-c", '[ -t 0 ] && [ -t 1 ] && echo exec-tty; read x; stty size; exit 4',
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # (the daemon keeps both)
        assert r.returncode == 0
        conn, _ = ls.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
        ls.close()
        (master,) = fds
        out = bytearray()
        assert _read_until(master, out, b"exec-tty"), out
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 21, 77, 0, 0))
        time.sleep(0.8)
        os.write(master, b"go\r")
        assert _read_until(master, out, b"21 77"), out
        daemon = int(pid_file.read_text())
        end = time.monotonic() + 30
        while os.path.exists(f"/proc/{daemon}") and time.monotonic() < end:
            try:
                _, status = os.waitpid(daemon, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
    finally:
        if master >= 0:
            os.close(master)
        rt("delete", "-f", "x1")
    assert not (tmp_path / "root" / "x1").exists()
