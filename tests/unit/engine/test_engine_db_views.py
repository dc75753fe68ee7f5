"""db.py (SQLite records), monitor argv, views (inspect/ps templates), k8s-file log parsing."""

from __future__ import annotations

import pytest

from isle.engine.db import ContainerRecord, Db, VolumeRecord
from isle.engine.logs import read_entries
from isle.engine.monitor import MonitorArgs, conmon_argv
from isle.engine.views import human_duration
from isle.errors import AlreadyExists, NotFound


def rec(cid: str, name: str) -> ContainerRecord:
    return ContainerRecord(id=cid, name=name, image="busybox", image_id="sha256:x", created=1.0,
                           state="created", opts={"image": "busybox"})


def test_db_records(tmp_path):
    db = Db(str(tmp_path / "d" / "isle.db"))
    db.insert_container(rec("ab" * 32, "one"))
    with pytest.raises(AlreadyExists, match="one"):
        db.insert_container(rec("cd" * 32, "one"))
    assert db.get_container("one").id == "ab" * 32
    assert db.get_container("abab").name == "one"  # id prefix
    db.update_container("ab" * 32, state="exited", exit_code=3, oom_killed=True)
    r = Db(str(tmp_path / "d" / "isle.db")).get_container("ab" * 32)  # another connection
    assert (r.state, r.exit_code, r.oom_killed) == ("exited", 3, True)
    with pytest.raises(NotFound):
        db.get_container("zzz")
    db.delete_container("ab" * 32)
    assert db.list_containers() == []
    assert db.insert_volume(VolumeRecord(name="v", created=1, driver="local", mountpoint="/m"))
    assert not db.insert_volume(VolumeRecord(name="v", created=1, driver="local", mountpoint="/m"))
    assert db.set_volume_populated("v") and not db.set_volume_populated("v")
    assert [e["action"] for e in db.events()] == ["create", "destroy", "create"]
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_conmon_argv():
    a = MonitorArgs(container_id="c" * 64, name="n", runtime_path="/usr/bin/runc",
                    runtime_root="/run/r", bundle="/b", persist_dir="/p", exit_dir="/e",
                    socket_dir="/s", log_path="/b/ctr.log", exit_command=["/py", "-m", "x", "cleanup"],
                    stdin=True)
    argv = conmon_argv(a)
    assert argv[:3] == ["conmon", "--api-version", "1"]
    assert argv[argv.index("-r") + 1] == "/usr/bin/runc"
    assert "k8s-file:/b/ctr.log" in argv and "-i" in argv and "-t" not in argv
    i = argv.index("--exit-command")
    assert argv[i + 1] == "/py" and argv.count("--exit-command-arg") == 3
    j = argv.index("--runtime-arg")
    assert argv[j:j + 4] == ["--runtime-arg", "--root", "--runtime-arg", "/run/r"]


def test_human_duration():
    assert human_duration(0.5) == "Less than a second" and human_duration(120) == "2 minutes"


def test_k8s_file_logs(tmp_path):
    p = tmp_path / "ctr.log"
    p.write_bytes(b"2024-01-01T00:00:00.000000001+00:00 stdout P hel\n"
                  b"2024-01-01T00:00:00.000000002+00:00 stdout F lo\n"
                  b"2024-01-01T00:00:01.5+00:00 stderr F err\n")
    es = read_entries(str(p))
    assert [(e.stream, e.data) for e in es] == [("stdout", b"hello\n"), ("stderr", b"err\n")]
    assert es[1].time - es[0].time == pytest.approx(1.5, abs=0.01)
