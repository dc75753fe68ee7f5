"""The integration leak check's scoping: with another test run on the host, a test answers only
for mounts under its run's roots, its own processes, and cgroups/links/netns naming its ids."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

_p = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("isle_leaks_under_test", _p)
assert _spec and _spec.loader
leaks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(leaks)


def test_scoped_keeps_only_what_the_test_made(tmp_path: Path) -> None:
    cid = "0123456789abcdef" * 4
    (tmp_path / "containers" / cid).mkdir(parents=True)
    ids = leaks.own_ids([tmp_path])
    assert ids == {cid[:12]}
    leaked = {
        "mounts": [f"{tmp_path}/containers/{cid}/rootfs", "/tmp/pytest-of-root/other/rootfs"],
        "cgroups": [f"/sys/fs/cgroup/memory/isle/{cid}", "/sys/fs/cgroup/memory/isle/fedcba987654"],
        "links": ["isle8d4bd9d", "veth0"],
        "children": ["4242"],
    }
    assert leaks.scoped(leaked, [tmp_path], ids) == {
        "mounts": [f"{tmp_path}/containers/{cid}/rootfs"],
        "cgroups": [f"/sys/fs/cgroup/memory/isle/{cid}"],
        "children": ["4242"],
    }


@pytest.mark.root
def test_others_running_sees_live_sessions_and_drops_stale(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setattr(leaks, "SESSIONS", str(tmp_path))
    p = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / str(os.getpid())).touch()  # this run itself does not count
        assert not leaks.others_running()
        (tmp_path / str(p.pid)).touch()
        assert leaks.others_running()
    finally:
        p.kill()
        p.wait()
    assert not leaks.others_running()
    assert not (tmp_path / str(p.pid)).exists()  # a dead run's entry is dropped
