"""Lean console-script launchers: pick the interpreter, check it, write the script atomically.

pip's shims start Python with ``site`` and import ``re`` (~5 ms a start); isle's commands are
timed against runc, podman and Docker, so ``scripts/setup`` replaces them with ``-SE`` scripts
that put isle's source (and, where needed, the venv's site-packages) on sys.path themselves.
The interpreter: the distribution's build of the same X.Y (Debian's is PGO+LTO with a static
libpython: it starts sooner and runs ~10-15% faster) when it has the same bytecode magic and
loads the modules the command needs, else the running one. `isle`'s launcher is written here
(``python -m isle.sys.launcher .venv/bin/isle``; the CLI layer may not import sys), the runtimes'
by isle.runtime.launcher. ``sys.executable`` stays the venv's Python in the scripts, so helpers
started through it (exit command, health loop, the runtime found beside it) see the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["compatible", "choose_python", "write", "install_with_site", "install_isle"]


def compatible(python: str, needs: str, prelude: str = "") -> bool:
    """python runs, is this X.Y with the same bytecode magic, and imports needs (comma list)."""
    from importlib.util import MAGIC_NUMBER

    code = (f"import sys; {prelude}import importlib.util, {needs}; "
            "print(sys.version_info[0], sys.version_info[1], importlib.util.MAGIC_NUMBER.hex())")
    try:
        out = subprocess.run([python, "-SE", "-c", code], capture_output=True, text=True,
                             timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return out == [str(sys.version_info[0]), str(sys.version_info[1]), MAGIC_NUMBER.hex()]


def choose_python(env_var: str, needs: str, prelude: str = "") -> str:
    """$env_var, else the distribution's same-version Python if compatible, else this one."""
    if v := os.environ.get(env_var):
        return v
    distro = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if os.path.realpath(distro) != os.path.realpath(sys.executable) and os.access(
            distro, os.X_OK) and compatible(distro, needs, prelude):
        return distro
    return sys.executable


def write(target: str, text: str) -> None:
    """The script at target, executable, replaced in one rename."""
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


SITE_TEMPLATE = """#!{python} -SE
# {name}: lean launcher written by isle/sys/launcher.py (see there)
import sys
sys.dont_write_bytecode = False
sys.executable = {venv_python!r}
sys.path[0] = {src!r}  # not the venv's bin dir: fewer stats per import
sys.path.append({site!r})
{body}"""

#: what isle imports from the standard library and the venv (a candidate must load them all)
_ISLE_NEEDS = ("ssl,_sqlite3,zlib,lzma,bz2,ctypes,_json,termios,fcntl,resource,select,socket,"
               "struct,_sha256,hashlib,click,rich,httpx,psutil,zstandard")


def paths_prelude(src: str, site: str) -> str:
    """What a candidate interpreter runs first to see isle's source and the venv's packages."""
    return f"sys.path[:0] = [{src!r}]; sys.path.append({site!r}); "


def install_with_site(target: str, *, name: str, body: str, env_var: str, needs: str,
                      python: str | None = None, src: str | None = None,
                      site: str | None = None) -> None:
    """A launcher that also sees the venv's site-packages (run this with the venv's Python,
    with site, so its purelib is the venv's); body imports and calls the command's main."""
    import sysconfig

    src = src or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site = site or sysconfig.get_paths()["purelib"]
    python = python or choose_python(env_var, needs, paths_prelude(src, site))
    write(target, SITE_TEMPLATE.format(python=python, name=name, venv_python=sys.executable,
                                       src=src, site=site, body=body))


def install_isle(target: str, python: str | None = None, src: str | None = None,
                 site: str | None = None) -> None:
    """The `isle` launcher."""
    install_with_site(target, name="isle", body="from isle.cli.main import main\nmain()\n",
                      env_var="ISLE_PYTHON", needs=_ISLE_NEEDS, python=python, src=src,
                      site=site)


if __name__ == "__main__":
    install_isle(sys.argv[1] if len(sys.argv) > 1 else
                 os.path.join(os.path.dirname(sys.executable), "isle"))
