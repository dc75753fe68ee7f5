"""Security regression tests: each one is an attack from inside a container (or from an
unprivileged host user) that must fail. Canaries live under the test's own tmp dir, never in
real host files. The integration suite's fixtures and leak check apply here too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_leaks = _load("isle_sec_leaks", INTEGRATION / "conftest.py")
_engine = _load("isle_sec_engine", INTEGRATION / "engine" / "conftest.py")
_runtime = _load("isle_sec_runtime", INTEGRATION / "runtime" / "conftest.py")

# fixtures re-exported: the autouse leak check, the engine CLI (`isle`), the runtime (`rt`, `bundle`)
no_leaks = _leaks.no_leaks
snapshot = _leaks.snapshot
Isle = _engine.Isle
isle = _engine.isle
Runtime = _runtime.Runtime
rt = _runtime.rt
bundle = _runtime.bundle
