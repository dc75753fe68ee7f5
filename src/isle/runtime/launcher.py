"""Write a lean ``isle-runtime`` launcher: no site, no pip shim, bytecode cache on.

pip's console-script shim imports ``re`` and the whole site machinery; the runtime needs only
the standard library and isle's own source, and its start-up time is measured against runc.
``scripts/setup`` runs ``python src/isle/runtime/launcher.py .venv/bin/isle-runtime``.
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{python} -SE
# isle-runtime: lean launcher written by isle/runtime/launcher.py (see there)
import sys
sys.dont_write_bytecode = False
sys.path[0] = {src!r}  # not the venv's bin dir: fewer stats per import
from isle.runtime.cli import exit_fast, main
exit_fast(main())
"""


def install(target: str, python: str | None = None, src: str | None = None) -> None:
    python = python or sys.executable
    src = src or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(TEMPLATE.format(python=python, src=src))
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


if __name__ == "__main__":
    install(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(sys.executable),
                                                               "isle-runtime"))
