"""qemu-guest-agent over virtio-serial: run a command in a whole-OS VM (guest-exec).

    with Agent("/run/isle/vms/deb/qga.sock") as a:
        a.ping(timeout=5)
        code, out, err = a.exec(["uname", "-r"], timeout=60)

The agent speaks JSON lines on the port QEMU exposes as a unix socket (one client at a time).
guest-sync-delimited first: the agent answers with a 0xFF byte before its reply, which drops
whatever a previous client left half-read.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from typing import Any

from isle.errors import VMError

__all__ = ["Agent", "PORT"]

PORT = "org.qemu.guest_agent.0"


class Agent:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
        try:
            self.s.connect(path)
        except OSError as exc:
            self.s.close()
            raise VMError(f"guest agent socket {path}: {exc}") from exc
        self.buf = b""

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.s.close()

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            self.s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except TimeoutError:
                raise VMError("the guest agent did not answer") from None
            except OSError as exc:  # QEMU resets the socket while the guest has the port closed
                raise VMError(f"the guest agent's socket: {exc}") from None
            if not chunk:
                raise VMError("the guest agent's socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def _send(self, cmd: str, args: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"execute": cmd}
        if args:
            msg["arguments"] = args
        try:
            self.s.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise VMError(f"the guest agent's socket: {exc}") from None

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        self._send(cmd, args)
        while True:
            line = self._line(deadline).strip(b"\xff \r")
            if not line:
                continue
            resp = json.loads(line)
            if "error" in resp:
                raise VMError(f"guest agent {cmd}: {resp['error'].get('desc', resp['error'])}")
            if "return" in resp:
                return resp["return"]

    def sync(self, timeout: float = 5) -> None:
        """guest-sync-delimited: skip to the 0xFF marker, then to our id's answer."""
        deadline = time.monotonic() + timeout
        n = random.randrange(1, 2**31)
        self.buf = b""
        self._send("guest-sync-delimited", {"id": n})
        while True:
            if b"\xff" in self.buf:
                self.buf = self.buf.rsplit(b"\xff", 1)[1]
                line = self._line(deadline)
                try:
                    if json.loads(line).get("return") == n:
                        return
                except ValueError:
                    pass
                continue
            self.s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except TimeoutError:
                raise VMError("the guest agent did not answer (is qemu-guest-agent running "
                              "in the guest?)") from None
            except OSError as exc:
                raise VMError(f"the guest agent's socket: {exc}") from None
            if not chunk:
                raise VMError("the guest agent's socket closed")
            self.buf += chunk

    def exec(self, argv: list[str], *, stdin: bytes = b"", env: list[str] | None = None,
             timeout: float = 0) -> tuple[int, bytes, bytes]:
        """Run argv in the guest; (exit code, stdout, stderr). A signal gives 128+signo."""
        self.sync()
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            args["input-data"] = base64.b64encode(stdin).decode()
        if env:
            args["env"] = env
        pid = self.call("guest-exec", args)["pid"]
        deadline = time.monotonic() + timeout if timeout else None
        delay = 0.02
        while True:
            st = self.call("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", ""))
                err = base64.b64decode(st.get("err-data", ""))
                code = st["exitcode"] if "exitcode" in st else 128 + int(st.get("signal", 0))
                return int(code), out, err
            if deadline is not None and time.monotonic() > deadline:
                raise VMError(f"{argv[0]} still running in the guest after {timeout:.0f}s")
            time.sleep(delay)
            delay = min(0.2, delay * 1.5)
