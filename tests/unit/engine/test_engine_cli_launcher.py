"""The lean `isle` launcher (sys/launcher.py): what it writes runs isle, with the venv as
sys.executable, without site."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from isle.sys import launcher

SRC = str(Path(__file__).resolve().parents[3] / "src")


def test_launcher_runs_isle_without_site(tmp_path: Path) -> None:
    target = tmp_path / "isle"
    launcher.install_isle(str(target), src=SRC)
    head = target.read_text().splitlines()[0]
    assert head.startswith("#!/") and head.endswith(" -SE")
    cp = subprocess.run([str(target), "version"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "Version:" in cp.stdout, cp.stderr
    probe = tmp_path / "probe"
    probe.write_text(target.read_text().replace(
        "from isle.cli.main import main\nmain()\n",
        "import isle.cli.main, click\nprint(sys.executable, 'site' in sys.modules, "
        "isle.cli.main.__file__.startswith(sys.path[0]))\n"))
    probe.chmod(0o755)
    out = subprocess.run([str(probe)], capture_output=True, text=True, timeout=60).stdout.split()
    assert out == [sys.executable, "False", "True"]


def test_launcher_keeps_the_venv_python_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "isle"
    launcher.install_isle(str(target), python=sys.executable, src=SRC)
    assert target.read_text().splitlines()[0] == f"#!{sys.executable} -SE"
    cp = subprocess.run([str(target), "--help"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "Usage: isle" in cp.stdout
