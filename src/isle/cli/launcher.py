"""Write a lean ``isle`` launcher: the venv's Python with -SE, isle's source and the venv's
site-packages on sys.path, bytecode cache on.

pip's console-script shim starts the interpreter with ``site`` (every .pth file, the editable
install's finder) and imports ``re``: ~5 ms of every ``isle`` command, and every container start
is timed against podman's and Docker's. The launcher keeps the venv's interpreter (so
``sys.executable`` still starts a full isle for helpers such as the exit command) and adds
the two directories ``site`` would have found. ``scripts/setup`` runs
``python src/isle/cli/launcher.py .venv/bin/isle`` after every pip install.
"""

from __future__ import annotations

import os
import sys
import sysconfig

TEMPLATE = """#!{python} -SE
# isle: lean launcher written by isle/cli/launcher.py (see there)
import sys
sys.dont_write_bytecode = False
sys.path[0] = {src!r}  # not the venv's bin dir: fewer stats per import
sys.path.append({site!r})
from isle.cli.main import main
main()
"""


def install(target: str, python: str | None = None, src: str | None = None,
            site: str | None = None) -> None:
    python = python or sys.executable
    src = src or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site = site or sysconfig.get_paths()["purelib"]
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(TEMPLATE.format(python=python, src=src, site=site))
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


if __name__ == "__main__":
    install(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(sys.executable),
                                                               "isle"))
