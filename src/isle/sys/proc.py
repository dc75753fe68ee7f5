"""The one door to external programs: argv lists only, never a shell.

    >>> run(["true"], timeout=5).returncode
    0
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from isle.errors import CommandError

__all__ = ["run", "spawn", "which"]


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = 60,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv to completion; raise CommandError (argv, rc, stderr) if it fails and check."""
    argv = [os.fspath(a) for a in argv]
    try:
        cp = subprocess.run(
            argv,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, f"timed out after {timeout}s") from exc
    if check and cp.returncode != 0:
        err = (cp.stderr or b"").decode(errors="replace")
        raise CommandError(argv, cp.returncode, err)
    return cp


def spawn(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start argv in the background (no shell); the caller owns the process."""
    argv = [os.fspath(a) for a in argv]
    try:
        return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload,no-any-return]
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc


def which(name: str) -> str | None:
    import shutil

    return shutil.which(name)
