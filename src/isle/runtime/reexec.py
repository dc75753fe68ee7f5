"""Runtime processes a container can see run from a sealed interpreter, with an empty environment.

The threat (CVE-2019-5736): root in a container opens ``/proc/PID/exe`` of a runtime process
that joined its pid namespace (``O_PATH``, or for writing once "text file busy" clears after the
process is gone, through ``/proc/self/fd/N``) and overwrites the host executable behind it, the
interpreter every later isle command runs. ``/proc/PID/environ`` shows that process's caller's
environment (tokens, proxies). Who can see such a process: a container, for the ``exec`` helper
(`isle exec`, health checks); another container, for the init of a container created into its pid
namespace (``linux.namespaces`` pid by path: pods, ``--pid container:X``; or none, the host's).

runc's answer: ``PR_SET_DUMPABLE`` 0 before joining namespaces, and ``runc init`` is a re-exec of
runc from a sealed memfd copy (or a read-only overlay) with a minimal environment. Non-dumpable
alone is not enough: CAP_SYS_PTRACE in the container's user namespace (``--cap-add SYS_PTRACE``
without a user namespace: the host's) overrides it for both ``exe`` and ``environ``.

isle's version, for Python: such a process starts as fork + ``execve(fd)`` of the runtime's own
interpreter (``/proc/self/exe``), where fd is ``sys.libc.sealed_exe()``:

- as root, a private read-only clone of the interpreter's mount holding just that file
  (``open_tree(OPEN_TREE_CLONE)`` + ``mount_setattr(MOUNT_ATTR_RDONLY)``, attached nowhere):
  no copy, ~0.1-0.2 ms; opening it for writing, directly or by reopening, fails with EROFS, and
  only CAP_SYS_ADMIN could make it writable again;
- otherwise (rootless) runc's sealed memfd copy: ~1 ms for the 17 KB pyenv launcher, ~5 ms for
  Debian's 6.8 MB static ``/usr/bin/python3.11``; writes fail with EPERM.

Shared libraries (libpython for a ``--enable-shared`` build, libc) are reachable only through
``/proc/PID/map_files``, which needs CAP_SYS_ADMIN. The new process gets an empty environment
and no host path on its command line; what it needs (the code to start, then the work as one
JSON message) comes over the pipe it talks to the runtime on. The fork closes every fd but
stdio, the preserved ones and the pipes before the exec. The new interpreter costs a Python
start-up (~8 ms) plus the modules the init needs (~5 ms) -- paid on ``exec`` and on creates into
a pid namespace someone else sees. A fresh pid namespace's init (every ordinary ``run`` and
``create``) is its pid 1: nothing but processes joined later can see it, so it keeps the fork
path; it turns non-dumpable before it waits on exec.fifo (``exec`` into a created container).

In the new process, init.exec_stage1 then applies the user, capabilities, cwd, rlimits and oom
score *before* it forks into the container's pid namespace: what the container can see (and,
with CAP_SYS_PTRACE, attach to) has nothing the exec'd process will not have anyway.
"""

from __future__ import annotations

import os

from isle.runtime.init import Chan, _fail
from isle.sys import libc as L

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["spawn", "send_payload", "main", "payload_opts"]

_SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spawn(keep: tuple[int | None, ...] = (), preserve: int = 0) -> tuple[int, Chan]:
    """Fork a child that re-executes this interpreter from sealed_exe() with an empty
    environment and runs ``main``, which waits for send_payload's message.
    keep: fds the child needs under their numbers (besides stdio, 3..2+preserve and the pipes).
    -> (pid, chan to it)."""
    exe = L.sealed_exe()
    try:
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
    except BaseException:
        os.close(exe)
        raise
    boot = (f"import sys\nsys.path[0] = {_SRC!r}\n"
            f"from isle.runtime.reexec import main\nmain({p2c_r}, {c2p_w})\n").encode()
    os.write(p2c_w, boot)  # < PIPE_BUF and before the fork: the child reads exactly this
    pid = os.fork()
    if pid == 0:
        try:
            os.close(p2c_w)
            os.close(c2p_r)
            _only_fds({p2c_r, c2p_w, exe, *(fd for fd in keep if fd is not None)}, preserve)
            for fd in (p2c_r, c2p_w, *keep):
                if fd is not None:
                    os.set_inheritable(fd, True)
            os.execve(exe, ["isle-runtime", "-SE", "-c",
                            f"import os;exec(os.read({p2c_r},{len(boot)}))"], {})
        except BaseException as exc:  # noqa: BLE001
            try:
                os.write(c2p_w, b'{"error": "re-executing the runtime: %s"}\n'
                         % str(exc).replace('"', "'").encode())
            finally:
                os._exit(127)
    os.close(exe)
    os.close(p2c_r)
    os.close(c2p_w)
    return pid, Chan(c2p_r, p2c_w)


def send_payload(chan: Chan, entry: str, payload: dict[str, Any]) -> None:
    """The spawned child's work: entry "exec" (init.exec_stage1) or "stage1" (init.stage1), with
    payload's values (JSON; see payload_opts)."""
    dbg = {k: "1" for k in ("ISLE_RUNTIME_DEBUG", "ISLE_RUNTIME_TRACE") if os.environ.get(k)}
    try:
        chan.send(op="payload", entry=entry, debug=dbg, **payload)
    except BrokenPipeError:
        pass  # the child's error is in the pipe: the caller's next recv reports it


def _only_fds(keep: set[int], preserve: int) -> None:
    """Close every fd above stdio and the preserved ones except keep (close_range: no listing)."""
    lo = 3 + preserve
    for fd in sorted(k for k in keep if k >= lo) + [1 << 30]:
        if fd > lo:
            os.closerange(lo, fd)
        lo = max(lo, fd + 1)


def main(rfd: int, wfd: int) -> None:
    """The sealed interpreter's entry (see spawn). Never returns."""
    chan = Chan(rfd, wfd)
    try:
        msg = chan.expect("payload")
        from isle.runtime import init

        if msg.get("debug"):  # the runtime's debugging switches, and nothing else of its env
            os.environ.update(msg["debug"])
            from isle.runtime import state

            state._TRACE = msg["debug"].get("ISLE_RUNTIME_TRACE")
        opts = msg["opts"]
        for fd in (rfd, wfd, *init._opt_fds(opts)):  # inherited across the exec:
            os.set_inheritable(fd, False)  # close-on-exec again, as they were
        if opts.get("seccomp_prog") is not None:
            opts["seccomp_prog"] = bytes.fromhex(opts["seccomp_prog"])
        cfg = msg["cfg"]
        proc = msg.get("proc") or cfg.get("process") or {}
        _preload(cfg, proc)
        if msg["entry"] == "exec":
            init.exec_stage1(chan, cfg, proc, msg["init_pid"], opts)
        elif msg["entry"] == "stage1":
            init.stage1(chan, cfg, opts)
        raise RuntimeError(f"unknown entry {msg['entry']!r}")
    except BaseException as exc:  # noqa: BLE001 -- everything goes back to the runtime
        _fail(chan, exc)


def _preload(cfg: dict[str, Any], proc: dict[str, Any]) -> None:
    """What the runtime's preload() imports, here, before the host's paths are gone."""
    from isle.runtime.init import preload_imports

    preload_imports(proc)
    sc = (cfg.get("linux") or {}).get("seccomp")
    if sc:
        import isle.runtime.seccomp_cache  # noqa: F401
        import isle.sys.seccomp_lib  # noqa: F401
        from isle.runtime.seccomp_cache import install_simple  # noqa: F401

        if sc.get("flags") or sc.get("listenerPath") or any(
                isinstance(s, dict) and s.get("action") == "SCMP_ACT_NOTIFY"
                for s in sc.get("syscalls") or []):
            import isle.runtime.seccomp  # noqa: F401
            if sc.get("listenerPath"):
                import socket  # noqa: F401


def payload_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """opts as JSON can carry them (the seccomp program as hex)."""
    prog = opts.get("seccomp_prog")
    return dict(opts, seccomp_prog=prog.hex() if prog is not None else None)
