"""Fixtures for engine tests: an `isle` CLI bound to a private root/runroot, cleaned after the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")


class Isle:
    def __init__(self, root: Path, runroot: Path) -> None:
        self.root, self.runroot = root, runroot
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
        if os.environ.get("ISLE_TEST_RUNTIME"):  # run the suite on another runtime (runc, crun...)
            self.env["ISLE_RUNTIME"] = os.environ["ISLE_TEST_RUNTIME"]

    def argv(self, *args: str) -> list[str]:
        return [ISLE, "--root", str(self.root), "--runroot", str(self.runroot), *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                            env=self.env, input=input)
        if check and cp.returncode != 0:
            raise AssertionError(f"isle {' '.join(args)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
        return cp

    def inspect(self, ref: str) -> dict:
        return json.loads(self("inspect", ref).stdout)[0]

    def cleanup(self) -> None:
        cp = self("ps", "-aq", "--no-trunc", check=False)
        ids = cp.stdout.split()
        if ids:
            self("rm", "-f", *ids, check=False)


@pytest.fixture
def isle(tmp_path: Path) -> Iterator[Isle]:
    i = Isle(tmp_path / "root", tmp_path / "run")
    try:
        yield i
    finally:
        i.cleanup()
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
