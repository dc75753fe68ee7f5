"""Write a lean ``isle-runtime`` launcher: no site, no pip shim, bytecode cache on.

pip's console-script shim imports ``re`` and the whole site machinery; the runtime needs only
the standard library and isle's own source, and its start-up time is measured against runc.
``scripts/setup`` runs ``python src/isle/runtime/launcher.py .venv/bin/isle-runtime``.

The interpreter: the venv's Python, unless the distribution's build of the same X.Y is there
(``/usr/bin/pythonX.Y``, same bytecode magic, the modules the runtime uses importable): Debian
builds it with PGO and LTO and links libpython statically, which starts ~4 ms sooner than a
``--enable-shared`` build and runs the runtime's Python ~10% faster. $ISLE_RUNTIME_PYTHON
overrides the choice.
"""

from __future__ import annotations

import os
import subprocess
import sys

TEMPLATE = """#!{python} -SE
# isle-runtime: lean launcher written by isle/runtime/launcher.py (see there)
import sys
sys.dont_write_bytecode = False
sys.path[0] = {src!r}  # not the venv's bin dir: fewer stats per import
from isle.runtime.cli import exit_fast, main
exit_fast(main())
"""

#: what the runtime imports from the standard library (a candidate must have them all)
_NEEDS = "ctypes,_json,_sha256,termios,fcntl,resource,select,_signal,_thread,socket,struct"


def _compatible(python: str) -> bool:
    """python runs, is this X.Y with the same bytecode magic, and has the runtime's modules."""
    from importlib.util import MAGIC_NUMBER

    code = (f"import sys, importlib.util, {_NEEDS}; "
            "print(sys.version_info[0], sys.version_info[1], importlib.util.MAGIC_NUMBER.hex())")
    try:
        out = subprocess.run([python, "-SE", "-c", code], capture_output=True, text=True,
                             timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return out == [str(sys.version_info[0]), str(sys.version_info[1]), MAGIC_NUMBER.hex()]


def choose_python() -> str:
    """$ISLE_RUNTIME_PYTHON, else the distribution's same-version Python if compatible, else
    this interpreter."""
    if v := os.environ.get("ISLE_RUNTIME_PYTHON"):
        return v
    distro = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if os.path.realpath(distro) != os.path.realpath(sys.executable) and os.access(
            distro, os.X_OK) and _compatible(distro):
        return distro
    return sys.executable


def install(target: str, python: str | None = None, src: str | None = None) -> None:
    python = python or choose_python()
    src = src or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(TEMPLATE.format(python=python, src=src))
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


if __name__ == "__main__":
    install(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(sys.executable),
                                                               "isle-runtime"))
