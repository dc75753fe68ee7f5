"""Run OCI hooks: path + args + env, the container state JSON on stdin, an optional timeout."""

from __future__ import annotations

import os
import time

from isle.errors import IsleError
from isle.oci import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["run_hooks", "HookError"]


class HookError(IsleError):
    exit_code = 1


def run_hook(hook: dict[str, Any], state: dict[str, Any], field: str) -> None:
    path = hook["path"]
    args = hook.get("args") or [path]
    env = dict(e.split("=", 1) for e in hook.get("env") or [])
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(path, args, env, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)])
    except OSError as exc:
        os.close(r)
        os.close(w)
        raise HookError(f"{field}: {path}: {os.strerror(exc.errno or 0)}") from None
    os.close(r)
    try:
        os.write(w, json.dumps(state).encode())
    except BrokenPipeError:
        pass
    os.close(w)
    timeout = hook.get("timeout")
    deadline = time.monotonic() + timeout if timeout else None
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise HookError(f"{field}: {path} timed out after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise HookError(f"{field}: {path} exited {code}")


def run_hooks(hooks: dict[str, Any] | None, kind: str, state: dict[str, Any],
              warn_only: bool = False) -> list[str]:
    """Run every hook of kind in order; raise on the first failure unless warn_only."""
    warnings = []
    for i, h in enumerate((hooks or {}).get(kind) or []):
        try:
            run_hook(h, state, f"hooks.{kind}[{i}]")
        except HookError as exc:
            if not warn_only:
                raise
            warnings.append(str(exc))
    return warnings
