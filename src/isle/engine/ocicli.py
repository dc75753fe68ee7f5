"""A thin driver for any runc-compatible OCI runtime CLI (isle-runtime, runc, crun): argv in, facts out."""

from __future__ import annotations

import os
TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from typing import Any

from isle.errors import CommandError, ConfigError, IsleError, NotFound
from isle.oci.fastjson import loads

__all__ = ["OciRuntime", "resolve_runtime"]


def _isle_runtime_works() -> str | None:
    """The isle-runtime entry point once its CLI module exists; else None (fall back to runc)."""
    import sys

    import isle.runtime

    if not os.path.exists(os.path.join(os.path.dirname(isle.runtime.__file__ or ""), "cli.py")):
        return None  # (not importlib.util.find_spec: ~1 ms of every container start)
    beside = os.path.join(os.path.dirname(sys.executable), "isle-runtime")
    if os.access(beside, os.X_OK) and _interpreter_ok(beside):
        return beside
    cand = _which("isle-runtime")
    if cand and os.access(cand, os.X_OK) and _interpreter_ok(cand):
        return cand
    return None


def _interpreter_ok(path: str) -> bool:
    """A script's #! interpreter must be executable by us (a venv under /root is not, for users)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return True
    interp = head[2:].split(b"\n", 1)[0].split()[0].decode()
    return os.access(os.path.realpath(interp), os.X_OK)


#: flip to True once isle-runtime runs the engine's test suite; until then the *default* is runc
ISLE_RUNTIME_IS_DEFAULT = True


def resolve_runtime(name: str, *, explicit: bool = True) -> str:
    """'isle-runtime' | 'runc' | 'crun' | PATH -> an absolute executable path (ConfigError if none).

    explicit=False means "the configured default": isle-runtime only once it is ready, else runc.
    """
    if not name or name == "isle-runtime":
        if explicit or ISLE_RUNTIME_IS_DEFAULT:
            p = _isle_runtime_works()
            if p:
                return p
            if explicit and name:
                raise ConfigError("--runtime", "isle-runtime is not installed here")
        name = "runc"
    if os.sep in name:
        if not os.access(name, os.X_OK):
            raise ConfigError("--runtime", f"{name}: not an executable file")
        return os.path.abspath(name)
    p = _which(name)
    if p is None:
        raise ConfigError("--runtime", f"runtime {name!r} not found on PATH")
    return p


def _which(name: str) -> str | None:
    from isle.sys import proc

    return proc.which(name)


class OciRuntime:
    def __init__(self, path: str, root: str, args: list[str] | None = None) -> None:
        self.path = path
        self.root = root
        self.args = list(args or [])  # global flags before the sub-command (runsc's --platform)

    def _argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *self.args, *args]

    def run(self, *args: str, timeout: float = 60, check: bool = True) -> Any:
        from isle.sys import proc  # subprocess: not on the paths that never run the runtime CLI

        return proc.run(self._argv(*args), timeout=timeout, check=check)

    def start(self, cid: str) -> None:
        if os.path.basename(self.path) == "isle-runtime":
            # isle's own runtime: its `start` (open the exec fifo, read a byte) as a call here,
            # not a second interpreter (~20 ms of every `run -d`); same errors, as CommandError
            from isle.runtime.container import start

            try:
                start(self.root, cid)
            except (IsleError, OSError) as exc:
                raise CommandError(self._argv("start", cid), 1, f"isle-runtime: {exc}") from None
            return
        self.run("start", cid)

    def state(self, cid: str) -> dict[str, Any] | None:
        cp = self.run("state", cid, check=False)
        if cp.returncode != 0:
            return None
        return loads(cp.stdout)  # type: ignore[no-any-return]

    def kill(self, cid: str, sig: int, *, all_procs: bool = False) -> bool:
        args = ["kill"] + (["--all"] if all_procs else []) + [cid, str(sig)]
        cp = self.run(*args, check=False)
        return bool(cp.returncode == 0)

    def delete(self, cid: str, *, force: bool = False) -> None:
        cp = self.run("delete", *(["--force"] if force else []), cid, check=False)
        if cp.returncode != 0:
            err = (cp.stderr or b"").decode(errors="replace")
            if "does not exist" in err or "not exist" in err or "not found" in err:
                return
            raise CommandError(self._argv("delete", cid), cp.returncode, err)

    def pause(self, cid: str) -> None:
        self.run("pause", cid)

    def resume(self, cid: str) -> None:
        self.run("resume", cid)

    def ps(self, cid: str) -> list[int]:
        cp = self.run("ps", "--format", "json", cid, check=False)
        if cp.returncode != 0:
            raise NotFound(f"container {cid} is not running")
        return list(loads(cp.stdout or b"[]") or [])

    def exec_argv(self, cid: str, process_json: str, *, detach: bool, tty: bool,
                  pid_file: str = "") -> list[str]:
        argv = self._argv("exec", "--process", process_json)
        if detach:
            argv.append("--detach")
        if pid_file:
            argv += ["--pid-file", pid_file]
        argv.append(cid)
        return argv
