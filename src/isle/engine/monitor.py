"""The per-container monitor (Debian's conmon): its argv (pure), its start-up handshake, attach I/O.

conmon runs ``<runtime> create``, reports the container pid on the sync pipe, then outlives `isle`:
it owns stdio, writes the k8s-file log (rotated at --log-size-max), writes ``exit`` / ``oom`` files
into its persist dir, and runs the exit command (``isle container cleanup ID``) when the container
ends.
"""

from __future__ import annotations

import os

from isle.errors import CommandError, IsleError
from isle.oci.fastjson import loads
from isle.record import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from isle.engine.runtimes import OciCli

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
    """Read conmon's {"data": pid[, "message": ...]} line; the pid, or CommandError with its
    message."""
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
        raise CommandError(argv, -1, str(msg.get("message",
                                                 "the runtime failed to create the container")))
    return pid


def connect_attach(bundle: str) -> socket.socket:
    """Connect to conmon's SEQPACKET attach socket in the bundle (any path length, via
    /proc/self/fd)."""
    import socket  # not at the top: `run -d` never attaches, and socket costs ~2 ms to import

    dfd = os.open(bundle, os.O_PATH | os.O_CLOEXEC)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.connect(f"/proc/self/fd/{dfd}/attach")
        return s
    finally:
        os.close(dfd)


MONITOR_LOST = "the monitor (conmon) died at {t}: the container's output after that is not logged"


def note_monitor_lost(log_path: str) -> str:
    """The monitor died under a live container: say so in its log (a k8s-file stderr line that
    `isle logs` shows where the gap begins) and return the text for State.Error."""
    import time

    now = time.time()
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    msg = MONITOR_LOST.format(t=t + "Z")
    line = f"{t}.{int(now % 1 * 1e9):09d}+00:00 stderr F isle: {msg}\n".encode()
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass
    return msg


def lost_exit(runtime: OciCli, cid: str, error: str) -> tuple[int, str]:
    """The monitor died and left no exit file: the code and reason the runtime still knows
    (isle-vm-runtime's state reports the guest's exitCode and a QEMU crash's error), else 255."""
    st: dict[str, object] = {}
    try:
        st = runtime.state(cid) or {}
    except Exception:  # noqa: BLE001 - a gone runtime state says nothing
        st = {}
    why = str(st.get("error") or "")
    code = st.get("exitCode")
    if isinstance(code, int):
        return code, "; ".join(x for x in (error, why) if x)
    base = error or "the monitor died and left no exit code"
    return 255, "; ".join(x for x in (base, why) if x)


def runtime_error(runtime: OciCli, cid: str) -> str:
    """Why a runtime with a guest says the container ended (a QEMU crash), from its `state`."""
    try:
        st = runtime.state(cid) or {}
    except Exception:  # noqa: BLE001
        return ""
    return str(st.get("error") or "")
