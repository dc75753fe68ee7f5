"""The VM-isolated OCI runtime: runc's CLI over microVMs (`isle-vm-runtime`), and `dispatch` for isle-runtime.

isle-runtime hands a whole command line here when config.json says ``org.isle.isolation=vm``::

    from isle.runtime.vm import dispatch, wants_vm
    if wants_vm(bundle): return dispatch(sys.argv[1:])
"""

from __future__ import annotations

import json
import os

__all__ = ["dispatch", "wants_vm", "ANNOTATION"]

ANNOTATION = "org.isle.isolation"


def wants_vm(bundle: str) -> bool:
    """True when the bundle's config.json carries the annotation org.isle.isolation=vm."""
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return (json.load(f).get("annotations") or {}).get(ANNOTATION) == "vm"
    except (OSError, ValueError, AttributeError):
        return False


def dispatch(argv: list[str]) -> int:
    """Run one runc-style command line (without the program name) in the VM runtime; its exit code."""
    from isle.runtime.vm.cli import main

    return main(argv)
