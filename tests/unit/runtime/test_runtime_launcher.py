"""The lean isle-runtime launcher: which interpreter it picks and that the script it writes runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from isle.runtime import launcher


def test_env_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISLE_RUNTIME_PYTHON", "/opt/py/bin/python3")
    assert launcher.choose_python() == "/opt/py/bin/python3"


def test_choice_is_a_compatible_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISLE_RUNTIME_PYTHON", raising=False)
    py = launcher.choose_python()
    assert py == sys.executable or launcher._compatible(py)


def test_a_missing_or_other_version_python_is_not_compatible(tmp_path: Path) -> None:
    assert not launcher._compatible(str(tmp_path / "nope"))
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 2 7 00000000\n")
    fake.chmod(0o755)
    assert not launcher._compatible(str(fake))


def test_written_launcher_runs_the_cli(tmp_path: Path) -> None:
    target = tmp_path / "isle-runtime"
    launcher.install(str(target))
    assert (tmp_path / ".isle-runtime.py").read_text().startswith("#!")
    out = subprocess.run([str(target), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("isle-runtime version")
    bad = subprocess.run([str(target), "nosuchverb"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "nosuchverb" in bad.stderr


def test_vm_runtime_launcher_runs_without_site_and_finds_qemu_qmp(tmp_path: Path) -> None:
    """isle-vm-runtime's launcher: -SE like isle-runtime's, plus the venv's site-packages for
    qemu.qmp (imported by the runtime when it speaks QMP)."""
    target = tmp_path / "isle-vm-runtime"
    launcher.install_vm(str(target))
    assert target.read_text().splitlines()[0].endswith(" -SE")
    cp = subprocess.run([str(target), "--version"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stdout.startswith("isle-vm-runtime"), cp.stderr
    probe = tmp_path / "probe"
    probe.write_text(target.read_text().replace(
        "from isle.runtime.vm.cli import main\nsys.exit(main())\n",
        "import qemu.qmp.legacy\nprint('site' in sys.modules)\n"))
    probe.chmod(0o755)
    out = subprocess.run([str(probe)], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False"], out.stderr
