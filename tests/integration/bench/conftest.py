"""Bench and sandbox tests reuse the engine suite's `isle` fixture (a CLI on a private root)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_engine = _load("isle_bench_engine", HERE.parent / "engine" / "conftest.py")
Isle = _engine.Isle
isle = _engine.isle
