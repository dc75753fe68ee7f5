"""The VM-isolated OCI runtime: runc's CLI over microVMs (isle-vm-runtime), dispatch() for others.

isle-runtime hands a whole command line here when config.json says ``org.isle.isolation=vm``. Keep
VM state apart from container state by giving the VM runtime its own root, ``vm_root(root)``::

    from isle.runtime.vm import dispatch, owns, vm_root, wants_vm
    vm_argv = ["--root", vm_root(root), *verb_argv]
    if wants_vm(bundle): return dispatch(vm_argv)    # create/run: they have a bundle
    if owns(root, cid): return dispatch(vm_argv)      # state/kill/delete/...: only an id
"""

from __future__ import annotations

import json
import os

__all__ = ["dispatch", "wants_vm", "owns", "vm_root", "ANNOTATION"]

ANNOTATION = "org.isle.isolation"


def wants_vm(bundle: str) -> bool:
    """True when the bundle's config.json carries the annotation org.isle.isolation=vm."""
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return (json.load(f).get("annotations") or {}).get(ANNOTATION) == "vm"
    except (OSError, ValueError, AttributeError):
        return False


def vm_root(root: str) -> str:
    """Where VM containers of a container-runtime root keep their state."""
    return os.path.join(root, "vm")


def owns(root: str, cid: str) -> bool:
    """True when container cid under the container runtime's root is a VM container."""
    return "/" not in cid and os.path.exists(os.path.join(vm_root(root), cid, "state.json"))


def dispatch(argv: list[str]) -> int:
    """Run one runc-style command line (no program name) in the VM runtime; its exit code."""
    _see_site_packages()
    from isle.runtime.vm.cli import main

    return main(argv)


def _see_site_packages() -> None:
    """The VM runtime's QMP client (qemu.qmp: template restores, pause) comes from the venv's
    site-packages, which isle-runtime's lean launcher leaves off sys.path: added for a hand-off
    (the launcher's venv: <venv>/bin/isle-runtime -> <venv>/lib/pythonX.Y/site-packages)."""
    import sys

    if any(p.endswith("site-packages") for p in sys.path):
        return
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0] or ".")))
    site = os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                        "site-packages")
    if os.path.isdir(site):
        sys.path.append(site)
