"""The versions of isle and of every program it drives (`isle version`, `isle info`).

Each program is asked the way it answers (`--version`, first lines), in parallel: a missing one
is listed as not installed rather than left out, so `isle version` says what this host lacks.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

from isle.errors import IsleError
from isle.sys import proc

__all__ = ["components", "isle_version", "PROGRAMS"]

#: (component name, program, what isle uses it for)
PROGRAMS: list[tuple[str, str, str]] = [
    ("conmon", "conmon", "container monitor"),
    ("runc", "runc", "OCI runtime (--runtime runc)"),
    ("crun", "crun", "OCI runtime (--runtime crun)"),
    ("runsc", "runsc", "gVisor (--isolation sandbox)"),
    ("qemu", "qemu-system-x86_64", "microVMs (--isolation vm, isle vm)"),
    ("netavark", "/usr/lib/podman/netavark", "bridge networks"),
    ("aardvark-dns", "/usr/lib/podman/aardvark-dns", "DNS on networks"),
]

_VERSION = re.compile(r"(?:version\s+|^\S+\s+)v?(\d[\w.+~:-]*)", re.I | re.M)
_COMMIT = re.compile(r"^commit:\s*(\S+)", re.I | re.M)


def isle_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("isle")
    except PackageNotFoundError:
        return "unknown"


def _ask(name: str, prog: str, role: str) -> dict[str, Any]:
    path = prog if os.path.isabs(prog) else proc.which(prog)
    d: dict[str, Any] = {"Name": name, "Version": "", "Details": {"Path": path or "",
                                                                  "Role": role}}
    if not path or not os.access(path, os.X_OK):
        d["Version"] = "not installed"
        d["Details"]["Path"] = ""
        return d
    try:
        out = proc.run([path, "--version"], timeout=10, check=False)
    except IsleError as exc:
        d["Version"] = f"unknown ({exc})"
        return d
    text = (out.stdout or b"").decode(errors="replace") + (out.stderr or b"").decode(
        errors="replace")
    m = _VERSION.search(text)
    d["Version"] = m.group(1) if m else (text.strip().splitlines() or ["unknown"])[0]
    c = _COMMIT.search(text)
    if c and c.group(1) != "unknown":
        d["Details"]["GitCommit"] = c.group(1)
    return d


def components(isle_runtime: str = "") -> list[dict[str, Any]]:
    """[{Name, Version, Details: {Path, Role[, GitCommit]}}], isle itself first (Docker's
    `Server.Components`)."""
    from concurrent.futures import ThreadPoolExecutor

    me = isle_version()
    out: list[dict[str, Any]] = [
        {"Name": "Engine", "Version": me,
         "Details": {"Python": platform.python_version(), "Os": "linux",
                     "Arch": platform.machine(), "KernelVersion": os.uname().release}},
        {"Name": "isle-runtime", "Version": me,
         "Details": {"Path": isle_runtime, "Role": "OCI runtime (default)"}},
    ]
    with ThreadPoolExecutor(len(PROGRAMS)) as ex:
        out += list(ex.map(lambda p: _ask(*p), PROGRAMS))
    return out
