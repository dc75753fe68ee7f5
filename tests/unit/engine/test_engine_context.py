"""engine/context: the container lock probe (lock_busy) and what opening the engine does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.context import Context

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"),
                    cache=str(tmp_path / "cache"), runtime="isle-runtime", rootless=False)


def test_lock_busy_only_while_another_process_holds_it(settings: Settings) -> None:
    ctx = Context(settings)
    cid = "a" * 64
    lock = ctx.paths(cid).lock
    assert not ctx.lock_busy(cid)
    assert not os.path.exists(lock)  # the probe made no lock file
    with ctx.locked(cid):
        assert not ctx.lock_busy(cid)  # this process's own
    assert not ctx.lock_busy(cid)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1]); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", lock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert ctx.lock_busy(cid)
    finally:
        holder.communicate("", timeout=10)
    assert not ctx.lock_busy(cid)


def _dead_step(settings: Settings) -> Path:
    """A live-build marker whose builder is gone (a SIGKILLed `isle build`)."""
    import json

    gone = subprocess.Popen(["true"])
    gone.wait()
    steps = Path(settings.runroot) / "build-steps"
    steps.mkdir(parents=True, exist_ok=True)
    marker = steps / "isle-build-0123456789ab"
    marker.write_text(json.dumps({"owner": gone.pid, "owner_start": 1, "bundle": "",
                                  "network": "none"}))
    return marker


def test_the_api_services_engine_sweeps_killed_builds(settings: Settings) -> None:
    """The Docker API service opens its own engines (one per connection's thread), never the
    CLI's Ctx: opening one clears a killed build's step as the CLI's next command does."""
    from isle.api.routes import Api

    marker = _dead_step(settings)
    api = Api(settings)
    assert api.engine is not None
    assert not marker.exists()


def test_the_clis_engine_sweeps_killed_builds(settings: Settings) -> None:
    from isle.cli.ctx import Ctx

    marker = _dead_step(settings)
    Ctx(settings.root, settings.runroot, None).engine
    assert not marker.exists()


def test_opening_the_engine_with_no_build_costs_no_import(settings: Settings) -> None:
    """No build-steps directory (or only its lock): the sweep's module is not even imported."""
    code = ("import sys; from isle.config import Settings; from isle.engine.engine import Engine; "
            "Engine(Settings(root=sys.argv[1], runroot=sys.argv[2])); "
            "print('isle.engine.buildsteps' in sys.modules)")
    Path(settings.runroot, "build-steps").mkdir(parents=True)
    Path(settings.runroot, "build-steps", ".lock").touch()
    out = subprocess.run([sys.executable, "-c", code, settings.root, settings.runroot],
                         capture_output=True, text=True, check=True).stdout
    assert out == "False\n"
