"""isle-runtime's native front (runtime/front.c): `start` reads the exec fifo without an
interpreter when create left a plan; everything else (other verbs and flags, poststart hooks, a
dead init, a started container) goes to the Python runtime, which answers as it always did."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from isle.runtime import launcher

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def front(tmp_path: Path) -> tuple[Path, Path]:
    """(a front whose 'Python' logs each hand-over to a file, then runs the real launcher;
    that log)."""
    script = REPO / ".venv" / "bin" / ".isle-runtime.py"
    if not script.exists():
        pytest.skip("isle-runtime has no native front here (no gcc at setup)")
    real = script.read_text().split("\n", 1)[0][2:].split()[0]
    log = tmp_path / "handed"
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    py.chmod(0o755)
    target = tmp_path / "isle-runtime"
    if not launcher._build_front(str(target), str(py), str(script)):
        pytest.skip("gcc cannot build the front here")
    return target, log


def _run(front: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with open(os.devnull, "w") as null:  # a created init keeps the caller's stdio: not a pipe
        err = root.parent / "err"
        with open(err, "w") as e:
            p = subprocess.run([str(front), "--root", str(root), *args], stdout=null, stderr=e,
                               timeout=30)
        return subprocess.CompletedProcess(p.args, p.returncode, "", err.read_text())


def test_start_needs_no_interpreter_and_the_rest_is_handed_over(front, rt, bundle) -> None:
    fr, log = front
    b = bundle(["sleep", "30"])
    rt("create", "-b", str(b), "f1")
    assert (rt.root / "f1" / "start.plan").read_text().split()[2] == "0"
    cp = _run(fr, rt.root, "--log", str(rt.root.parent / "log.json"), "--log-format", "json",
              "start", "f1")
    assert cp.returncode == 0, cp.stderr
    assert not log.exists()  # no Python: the front did it
    assert rt.state("f1")["status"] == "running"
    again = _run(fr, rt.root, "start", "f1")  # no fifo any more: Python says why
    assert again.returncode == 1 and "running" in again.stderr
    assert _run(fr, rt.root, "state", "f1").returncode == 0
    assert len(log.read_text().splitlines()) == 2  # both handed over
    rt("delete", "--force", "f1")


def test_poststart_hooks_and_a_dead_init_go_to_python(front, rt, bundle, tmp_path) -> None:
    fr, log = front
    mark = tmp_path / "poststart"

    def hook(c):
        c["hooks"] = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {mark}"]}]}

    rt("create", "-b", str(bundle(["sleep", "30"], hook)), "h1")
    assert _run(fr, rt.root, "start", "h1").returncode == 0
    assert mark.exists() and log.read_text().count("start h1") == 1  # Python ran the hook
    rt("create", "-b", str(bundle(["sleep", "30"], name="b2")), "d1")
    os.kill(rt.state("d1")["pid"], 9)
    cp = _run(fr, rt.root, "start", "d1")
    assert cp.returncode == 1 and cp.stderr, cp  # Python's answer, not a hang
    assert log.read_text().count("start d1") == 1
    for c in ("h1", "d1"):
        rt("delete", "--force", c)
