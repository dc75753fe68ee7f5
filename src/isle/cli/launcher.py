"""Write a lean ``isle`` launcher: Python with -SE, isle's source and the venv's site-packages
on sys.path, bytecode cache on.

pip's console-script shim starts the interpreter with ``site`` (every .pth file, the editable
install's finder) and imports ``re``: ~5 ms of every ``isle`` command, and every container start
is timed against podman's and Docker's. The launcher adds the two directories ``site`` would
have found.

The interpreter: the distribution's build of the venv's X.Y where it is compatible (same
bytecode magic, the modules isle needs importable, the venv's compiled extensions loading):
Debian builds it with PGO + LTO and a static libpython, which starts sooner and runs isle's
Python ~15% faster than pyenv's shared build (`isle run --rm` 88 -> 76 ms, interleaved). Else
the venv's own. ``sys.executable`` stays the venv's Python either way, so helpers started
through it (exit command, health loop, the runtime found beside it) see the venv as before.
$ISLE_PYTHON overrides the choice. ``scripts/setup`` runs
``.venv/bin/python src/isle/cli/launcher.py .venv/bin/isle`` after every pip install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

TEMPLATE = """#!{python} -SE
# isle: lean launcher written by isle/cli/launcher.py (see there)
import sys
sys.dont_write_bytecode = False
sys.executable = {venv_python!r}
sys.path[0] = {src!r}  # not the venv's bin dir: fewer stats per import
sys.path.append({site!r})
from isle.cli.main import main
main()
"""

#: what isle imports from the standard library and the venv (a candidate must load them all)
_NEEDS = ("ssl,_sqlite3,zlib,lzma,bz2,ctypes,_json,termios,fcntl,resource,select,socket,struct,"
          "_sha256,hashlib,click,rich,httpx,psutil,zstandard")


def _compatible(python: str, src: str, site: str) -> bool:
    """python runs, is this X.Y with the same bytecode magic, and loads what isle needs."""
    from importlib.util import MAGIC_NUMBER

    code = (f"import sys; sys.path[:0] = [{src!r}]; sys.path.append({site!r}); "
            f"import importlib.util, {_NEEDS}; "
            "print(sys.version_info[0], sys.version_info[1], importlib.util.MAGIC_NUMBER.hex())")
    try:
        out = subprocess.run([python, "-SE", "-c", code], capture_output=True, text=True,
                             timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return out == [str(sys.version_info[0]), str(sys.version_info[1]), MAGIC_NUMBER.hex()]


def choose_python(src: str, site: str) -> str:
    if v := os.environ.get("ISLE_PYTHON"):
        return v
    distro = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if os.path.realpath(distro) != os.path.realpath(sys.executable) and os.access(
            distro, os.X_OK) and _compatible(distro, src, site):
        return distro
    return sys.executable


def install(target: str, python: str | None = None, src: str | None = None,
            site: str | None = None) -> None:
    src = src or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site = site or sysconfig.get_paths()["purelib"]  # run with site: the venv's
    python = python or choose_python(src, site)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(TEMPLATE.format(python=python, venv_python=sys.executable, src=src, site=site))
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


if __name__ == "__main__":
    install(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(sys.executable),
                                                               "isle"))
