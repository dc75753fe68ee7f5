"""Foreground I/O: pump conmon's attach socket to our stdout/stderr and our stdin into it."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
from collections.abc import Callable, Iterator

from isle.engine.monitor import STDERR

__all__ = ["pump", "raw_terminal", "wait_pid_exit"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return
        view = view[n:]


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put a tty into raw mode for the block (no-op when fd is not a terminal)."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    old = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def pump(sock: socket.socket, *, stdin_fd: int | None, stdout_fd: int = 1, stderr_fd: int = 2,
         on_resize: Callable[[], None] | None = None) -> None:
    """Until conmon closes the socket: container output -> our fds, our stdin -> the container."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    if stdin_fd is not None:
        sel.register(stdin_fd, selectors.EVENT_READ)
    rfd = wfd = -1
    if on_resize is not None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGWINCH, lambda *_: None)
        sel.register(rfd, selectors.EVENT_READ)
        on_resize()
    try:
        while True:
            for key, _ in sel.select():
                if key.fileobj is sock:
                    data = sock.recv(65536)
                    if not data:
                        return
                    _write_all(stderr_fd if data[0] == STDERR else stdout_fd, data[1:])
                elif key.fileobj == rfd:
                    with contextlib.suppress(BlockingIOError):
                        os.read(rfd, 512)
                    if on_resize is not None:
                        on_resize()
                else:
                    d = os.read(stdin_fd, 65536) if stdin_fd is not None else b""
                    if not d:
                        sel.unregister(stdin_fd)  # type: ignore[arg-type]  # set: d came from it
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_WR)
                    else:
                        with contextlib.suppress(OSError):
                            sock.sendall(d)
    finally:
        sel.close()
        if rfd >= 0:
            signal.set_wakeup_fd(-1)
            os.close(rfd)
            os.close(wfd)


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Wait for any process (not only our children) to exit; True if it did in time."""
    import select

    try:
        pfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        r, _, _ = select.select([pfd], [], [], timeout)
        return bool(r)
    finally:
        os.close(pfd)


def run_with_console(argv: list[str], sock_path: str, *, stdin_fd: int | None = 0,
                     stdout_fd: int = 1) -> int:
    """Run a runtime command that hands its pty master to sock_path (--console-socket); copy
    between that pty and our terminal until the process ends; its exit code."""
    from isle.sys import proc

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    srv.bind(sock_path)
    srv.listen(1)
    child = proc.spawn(argv, stdin=proc.DEVNULL)
    master = -1
    try:
        import select

        while master < 0:
            r, _, _ = select.select([srv], [], [], 0.1)
            if r:
                conn, _ = srv.accept()
                with conn:
                    _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                master = fds[0]
            elif child.poll() is not None:
                return int(child.returncode)
        if stdin_fd is not None and os.isatty(stdin_fd):
            import fcntl
            import termios

            with contextlib.suppress(OSError):
                fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(stdin_fd, termios.TIOCGWINSZ,
                                                                  b"\0" * 8))
        with raw_terminal(stdin_fd) if stdin_fd is not None else contextlib.nullcontext():
            sel = selectors.DefaultSelector()
            sel.register(master, selectors.EVENT_READ)
            if stdin_fd is not None:
                sel.register(stdin_fd, selectors.EVENT_READ)
            done = False
            while not done:
                for key, _ in sel.select():
                    if key.fileobj == master:
                        try:
                            data = os.read(master, 65536)
                        except OSError:
                            data = b""
                        if not data:
                            done = True
                            break
                        _write_all(stdout_fd, data)
                    else:
                        d = os.read(stdin_fd, 65536) if stdin_fd is not None else b""
                        if not d:
                            sel.unregister(stdin_fd)  # type: ignore[arg-type]  # d came from it
                        else:
                            with contextlib.suppress(OSError):
                                _write_all(master, d)
            sel.close()
        return int(child.wait())
    finally:
        if master >= 0:
            os.close(master)
        srv.close()
        with contextlib.suppress(OSError):
            os.unlink(sock_path)
