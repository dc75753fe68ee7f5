"""Fixtures for isle-runtime integration tests: a busybox rootfs per session, bundles per test."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
RUNTIME = str(REPO / ".venv" / "bin" / "isle-runtime")



class Runtime:
    """isle-runtime with a private --root; every call returns the CompletedProcess."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, *args: str, check: bool = True, timeout: float = 30,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        # files, not pipes: a created container inherits the runtime's stdio (as with runc)
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run([RUNTIME, "--root", str(self.root), *args], stdout=kw.pop(
                "stdout", out), stderr=err, timeout=timeout, **kw)
            out.seek(0)
            err.seek(0)
            cp = subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(),
                                             err.read().decode())
        if check and cp.returncode != 0:
            raise AssertionError(f"isle-runtime {' '.join(args)} -> {cp.returncode}: {cp.stderr}")
        return cp

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        if self.root.exists():
            for cid in os.listdir(self.root):
                self("delete", "--force", cid, check=False)


@pytest.fixture
def rt(tmp_path: Path):
    r = Runtime(tmp_path / "rt-root")
    yield r
    r.cleanup()


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path):
    """make(args, **config overrides) -> bundle dir whose config.json is runc's default spec."""
    from isle.oci.runtime_spec import default_spec

    def make(args: list[str], edit: Any = None, name: str = "bundle") -> Path:
        b = tmp_path / name
        b.mkdir(exist_ok=True)
        cfg = default_spec()
        cfg["root"] = {"path": str(busybox_rootfs), "readonly": True}
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = args
        if edit:
            edit(cfg)
        (b / "config.json").write_text(json.dumps(cfg))
        return b

    return make
