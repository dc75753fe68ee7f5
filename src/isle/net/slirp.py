"""Rootless networking: Debian's slirp4netns gives a namespace a user-mode NAT (tap0 10.0.2.100,
gateway 10.0.2.2, DNS 10.0.2.3); published ports are host sockets slirp4netns opens (API socket).

It runs detached for the container's life (its own session); isle records its pid and stops it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from typing import Any

from isle.errors import CommandError, ConfigError, Unsupported
from isle.net.types import PortMapping
from isle.sys import proc

__all__ = ["start", "add_hostfwd", "stop", "stop_for", "is_running", "GUEST_IP", "GATEWAY", "DNS",
           "PREFIX"]

SLIRP = proc.SLIRP4NETNS
GUEST_IP, GATEWAY, DNS, PREFIX = "10.0.2.100", "10.0.2.2", "10.0.2.3", 24


def start(target: str | int, api_socket: str, *, userns_path: str | None = None,
          mtu: int = 65520, timeout: float = 10, host_loopback: bool = False) -> int:
    """Start slirp4netns for a netns path (str) or a process id (int); returns its pid when ready.

    api_socket is bound relative to its directory (unix socket paths are limited to 108 bytes).
    The host's loopback stays out of reach (10.0.2.2 would be the host's 127.0.0.1) unless
    host_loopback (podman's allow_host_loopback=true, asked for by the user).
    """
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        tun = "/dev/net/tun"
        mode = oct(os.stat(tun).st_mode & 0o777) if os.path.exists(tun) else "missing"
        raise Unsupported(f"/dev/net/tun is not usable by uid {os.getuid()} (mode {mode}); "
                          "rootless networking needs it world read-writable (Debian's udev: 0666)")
    r, w = os.pipe()
    sockdir, sockname = os.path.split(api_socket)
    argv = [SLIRP, "--configure", f"--mtu={mtu}", f"--api-socket={sockname}", f"--ready-fd={w}"]
    if not host_loopback:
        argv.insert(3, "--disable-host-loopback")
    if userns_path:
        argv.append(f"--userns-path={userns_path}")
    if isinstance(target, str):
        argv += ["--netns-type=path", target]
    else:
        argv.append(str(target))
    argv.append("tap0")
    try:
        p = proc.spawn(argv, pass_fds=(w,), start_new_session=True, stdin=proc.DEVNULL,
                       cwd=sockdir,
                       stdout=proc.DEVNULL, stderr=proc.PIPE)
    finally:
        os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        ok = bool(ready) and os.read(r, 1) == b"1"
    finally:
        os.close(r)
    if not ok:
        p.kill()
        err = p.communicate()[1].decode(errors="replace") if p.stderr else ""
        raise CommandError(argv, p.returncode if p.returncode is not None else -1,
                           err or "slirp4netns did not become ready")
    if p.stderr:
        p.stderr.close()
    # the child is ours until it exits; it must outlive this process, so do not wait on it here
    p.returncode = 0
    return p.pid


def add_hostfwd(api_socket: str, pm: PortMapping) -> None:
    """Publish host_ip:host_port(+range) -> container port; a busy host port is a ConfigError."""
    if pm.proto not in ("tcp", "udp"):
        raise ConfigError("publish", f"{pm.proto} cannot be published in rootless mode")
    for i in range(pm.range):
        req = {"execute": "add_hostfwd", "arguments": {
            "proto": pm.proto, "host_addr": pm.host_ip or "0.0.0.0",
            "host_port": pm.host_port + i, "guest_addr": GUEST_IP,
            "guest_port": pm.container_port + i}}
        dfd = os.open(os.path.dirname(api_socket), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            try:
                s.connect(f"/proc/self/fd/{dfd}/{os.path.basename(api_socket)}")
            finally:
                os.close(dfd)
            s.sendall(json.dumps(req).encode())
            s.shutdown(socket.SHUT_WR)
            resp = json.loads(s.recv(65536) or b"{}")
        if "error" in resp:
            desc = resp["error"].get("desc", resp["error"]) if isinstance(resp["error"], dict) \
                else resp["error"]
            raise ConfigError("publish", f"host port {pm.host_port + i}/{pm.proto}: {desc}")


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0]) == SLIRP.encode()
    except OSError:
        return False


def stop(pid: int, timeout: float = 5) -> None:
    """SIGTERM the slirp4netns at pid (only if it is one), then SIGKILL; reap it if it is ours."""
    if not is_running(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(pid) and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        time.sleep(0.02)
    if is_running(pid):
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def stop_for(rec: dict[str, Any]) -> None:
    """Stop the slirp4netns of an attachment record and forget it (idempotent)."""
    s = rec.get("slirp") or {}
    if s.get("pid"):
        stop(int(s["pid"]))
    if s.get("api") and os.path.lexists(s["api"]):
        os.unlink(s["api"])
    rec["networks"].pop("slirp4netns", None)
