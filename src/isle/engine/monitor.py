"""The per-container monitor (Debian's conmon): its argv (pure), its start-up handshake, attach I/O.

conmon runs ``<runtime> create``, reports the container pid on the sync pipe, then outlives `isle`:
it owns stdio, writes the k8s-file log (rotated at --log-size-max), writes ``exit`` / ``oom`` files
into its persist dir, and runs the exit command (``isle container cleanup ID``) when the container ends.
"""

from __future__ import annotations

import os
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

from isle.errors import CommandError, IsleError
from isle.oci.fastjson import loads
from isle.record import field, record

__all__ = ["MonitorArgs", "conmon_argv", "read_sync", "connect_attach", "STDOUT", "STDERR",
           "conmon_path"]

STDOUT, STDERR = 2, 3  # first byte of each attach-socket packet
LOG_SIZE_MAX = 8 * 1024 * 1024


@record
class MonitorArgs:
    """What conmon needs to know about one container."""
    container_id: str
    name: str
    runtime_path: str
    runtime_root: str
    bundle: str
    persist_dir: str  # pidfile, conmon.pid, exit, oom
    exit_dir: str
    socket_dir: str
    log_path: str
    log_size_max: int = LOG_SIZE_MAX
    stdin: bool = False
    leave_stdin_open: bool = False  # -i kept open when an attached client leaves
    tty: bool = False
    exit_command: list[str] = field(default_factory=list)
    exit_delay: int = 0
    runtime_args: list[str] = field(default_factory=list)
    conmon: str = "conmon"


def conmon_path() -> str:
    for d in ("/usr/bin", "/usr/libexec/podman", "/usr/local/bin"):
        p = os.path.join(d, "conmon")
        if os.access(p, os.X_OK):
            return p
    return "conmon"


def conmon_argv(a: MonitorArgs) -> list[str]:
    argv = [
        a.conmon, "--api-version", "1",
        "-c", a.container_id, "-u", a.container_id[:12], "-n", a.name,
        "-r", a.runtime_path, "-b", a.bundle,
        "-p", os.path.join(a.persist_dir, "pidfile"),
        "-P", os.path.join(a.persist_dir, "conmon.pid"),
        "-l", f"k8s-file:{a.log_path}", "--log-size-max", str(a.log_size_max),
        "--exit-dir", a.exit_dir, "--persist-dir", a.persist_dir,
        "--socket-dir-path", a.socket_dir,
        "--runtime-arg", "--root", "--runtime-arg", a.runtime_root,
        "--log-level", "error", "--no-sync-log",
    ]
    for r in a.runtime_args:
        argv += ["--runtime-arg", r]
    if a.stdin:
        argv += ["-i"]
        if a.leave_stdin_open:
            argv += ["--leave-stdin-open"]
    if a.tty:
        argv += ["-t"]
    if a.exit_command:
        argv += ["--exit-command", a.exit_command[0]]
        for x in a.exit_command[1:]:
            argv += ["--exit-command-arg", x]
        if a.exit_delay:
            argv += ["--exit-delay", str(a.exit_delay)]
    return argv


def read_sync(fd: int, argv: list[str], timeout: float = 60.0) -> int:
    """Read conmon's {"data": pid[, "message": ...]} line; the pid, or CommandError with its message."""
    import select

    buf = b""
    while not buf.endswith(b"\n"):
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            raise CommandError(argv, -1, f"monitor gave no answer in {timeout:.0f}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    if not buf.strip():
        raise CommandError(argv, -1, "monitor exited before reporting the container pid")
    try:
        msg = loads(buf.splitlines()[0])
        pid = int(msg["data"])
    except (ValueError, KeyError) as exc:
        raise IsleError(f"monitor sent a bad sync message: {buf[:200]!r}") from exc
    if pid <= 0:
        raise CommandError(argv, -1, str(msg.get("message", "the runtime failed to create the container")))
    return pid


def connect_attach(bundle: str) -> socket.socket:
    """Connect to conmon's SEQPACKET attach socket in the bundle (any path length, via /proc/self/fd)."""
    import socket  # not at the top: `run -d` never attaches, and socket costs ~2 ms to import

    dfd = os.open(bundle, os.O_PATH | os.O_CLOEXEC)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.connect(f"/proc/self/fd/{dfd}/attach")
        return s
    finally:
        os.close(dfd)
