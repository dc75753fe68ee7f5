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
                        sel.unregister(stdin_fd)
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
