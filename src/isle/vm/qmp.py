"""QMP through the pinned qemu.qmp library (its synchronous 'legacy' client); errors as VMError."""

from __future__ import annotations

import os
import time
from typing import Any

from isle.errors import VMError

__all__ = ["Monitor", "preload"]


def preload() -> None:
    """Import qemu.qmp (asyncio: ~35 ms) now, e.g. while a just-spawned QEMU starts up."""
    import qemu.qmp.legacy  # noqa: F401


class Monitor:
    """One QMP connection to a QEMU started with ``-qmp unix:PATH,server=on,wait=off``."""

    def __init__(self, path: str, *, timeout: float = 30.0, alive: Any = None) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if alive is not None and not alive():
                raise VMError(f"QEMU exited before its QMP socket {path} appeared")
            if time.monotonic() > deadline:
                raise VMError(f"QMP socket {path} did not appear within {timeout:.0f}s")
            time.sleep(0.002)
        while True:
            self._qmp = QEMUMonitorProtocol(path)
            try:
                self._qmp.connect(negotiate=True)
                break
            except Exception as exc:  # qemu.qmp raises its own tree (ConnectError, OSError...)
                # QEMU binds the socket before it listens: refused in between (a loaded host
                # widens that window); retried while QEMU lives, until the deadline
                refused = isinstance(getattr(exc, "exc", exc), ConnectionRefusedError)
                if not refused or time.monotonic() > deadline or (
                        alive is not None and not alive()):
                    raise VMError(f"QMP connect to {path} failed: {exc}") from exc
                self.close()
                time.sleep(0.005)
        self._qmp.settimeout(timeout)

    def cmd(self, name: str, **args: Any) -> Any:
        try:
            resp = self._qmp.cmd(name, args or None)
        except Exception as exc:
            raise VMError(f"QMP {name} failed: {exc}") from exc
        if "error" in resp:
            raise VMError(f"QMP {name}: {resp['error'].get('desc', resp['error'])}")
        return resp.get("return")

    def send_fd(self, fd: int, name: str) -> None:
        """Hand fd to QEMU under name (SCM_RIGHTS + getfd), e.g. for migrate 'fd:name'."""
        try:
            self._qmp.send_fd_scm(fd)
        except Exception as exc:
            raise VMError(f"QMP could not pass fd {fd}: {exc}") from exc
        self.cmd("getfd", fdname=name)

    def wait_migration(self, timeout: float) -> None:
        """Poll query-migrate until completed; VMError on failure or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            st = (self.cmd("query-migrate") or {}).get("status", "none")
            if st == "completed":
                return
            if st in ("failed", "cancelled"):
                raise VMError(f"migration {st}")
            if time.monotonic() > deadline:
                raise VMError(f"migration still {st} after {timeout:.0f}s")
            time.sleep(0.002)

    def close(self) -> None:
        try:
            self._qmp.close()
        except Exception:
            pass
