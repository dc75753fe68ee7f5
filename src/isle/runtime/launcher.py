"""Write a lean ``isle-runtime`` launcher: no site, no pip shim, bytecode cache on.

pip's console-script shim imports ``re`` and the whole site machinery; the runtime needs only
the standard library and isle's own source, and its start-up time is measured against runc.
``scripts/setup`` runs ``python -m isle.runtime.launcher .venv/bin/isle-runtime`` (and with
``--vm`` for ``isle-vm-runtime``, whose QMP client comes from the venv's site-packages).
``isle-runtime`` itself is a small native front (front.c) when gcc is there: `start` only reads
the container's exec fifo, and an interpreter's start-up (~8 ms) was most of its cost against
runc's; every other verb is handed to the Python launcher beside it (``.isle-runtime.py``).

The interpreter: the venv's Python, unless the distribution's build of the same X.Y is there
(``/usr/bin/pythonX.Y``, same bytecode magic, the modules the runtime uses importable): Debian
builds it with PGO and LTO and links libpython statically, which starts ~4 ms sooner than a
``--enable-shared`` build and runs the runtime's Python ~10% faster. $ISLE_RUNTIME_PYTHON
overrides the choice.
"""

from __future__ import annotations

import os
import sys

from isle.sys.launcher import choose_python as _choose
from isle.sys.launcher import compatible, install_with_site, write

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
    return compatible(python, _NEEDS)


def choose_python() -> str:
    """$ISLE_RUNTIME_PYTHON, else the distribution's same-version Python if compatible, else
    this interpreter."""
    return _choose("ISLE_RUNTIME_PYTHON", _NEEDS)


def install(target: str, python: str | None = None, src: str | None = None) -> None:
    """target: the native front (front.c: `start` without an interpreter, the rest handed to the
    Python launcher beside it, .<name>.py) when gcc builds it, else the Python launcher itself."""
    python = python or choose_python()
    src = src or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(os.path.dirname(os.path.abspath(target)),
                          f".{os.path.basename(target)}.py")
    write(script, TEMPLATE.format(python=python, src=src))
    if not _build_front(target, python, script):
        write(target, TEMPLATE.format(python=python, src=src))


def _build_front(target: str, python: str, script: str) -> bool:
    """Compile front.c into target (static if the C library allows, else dynamic); False when
    there is no gcc or it fails (the Python launcher then serves every verb)."""
    import json
    import shutil

    from isle.sys import proc

    gcc = shutil.which("gcc")
    if not gcc:
        return False
    c = os.path.join(os.path.dirname(os.path.abspath(__file__)), "front.c")
    tmp = f"{target}.{os.getpid()}.tmp"
    defs = [f"-DPYTHON={json.dumps(python)}", f"-DSCRIPT={json.dumps(script)}"]
    for static in (["-static"], []):
        r = proc.run([gcc, *static, "-O2", "-s", "-Wall", "-o", tmp, *defs, c], timeout=120,
                     check=False)
        if r.returncode == 0:
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)
            return True
    if os.path.exists(tmp):
        os.unlink(tmp)
    return False


#: isle-vm-runtime imports the venv's qemu.qmp for QMP: its launcher sees site-packages too
_VM_NEEDS = "_json,select,socket,struct,fcntl,resource,asyncio,qemu.qmp.legacy"


def install_vm(target: str, python: str | None = None, src: str | None = None,
               site: str | None = None) -> None:
    install_with_site(target, name="isle-vm-runtime",
                      body="from isle.runtime.vm.cli import main\nsys.exit(main())\n",
                      env_var="ISLE_RUNTIME_PYTHON", needs=_VM_NEEDS, python=python, src=src,
                      site=site)


if __name__ == "__main__":  # launcher.py TARGET [--vm]
    if sys.argv[2:] == ["--vm"]:
        install_vm(sys.argv[1])
    else:
        install(sys.argv[1] if len(sys.argv) > 1 else
                os.path.join(os.path.dirname(sys.executable), "isle-runtime"))
