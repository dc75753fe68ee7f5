"""CLI parsing, state derivation, hooks and exec process building, without root."""

from __future__ import annotations

import json
import os

import pytest

from isle.errors import ConfigError, NotFound
from isle.runtime import cli, hooks
from isle.runtime.exec_spec import build_process
from isle.runtime.state import Container, alive, proc_starttime, valid_id


def test_parse_flags_like_urfave():
    f, pos = cli._parse(["--bundle=/b", "-pid-file", "/p", "--no-pivot", "id1", "--x"],
                        cli._CREATE)
    assert f == {"bundle": "/b", "pid_file": "/p", "no_pivot": True}
    assert pos == ["id1", "--x"]
    f, pos = cli._parse(["-e", "A=1", "--env", "B=2", "-t", "c", "sh", "-c", "x"], cli._EXEC)
    assert f["env"] == ["A=1", "B=2"] and f["tty"] and pos == ["c", "sh", "-c", "x"]
    with pytest.raises(cli.UsageError, match="not defined: --nope"):
        cli._parse(["--nope"], cli._CREATE)
    with pytest.raises(cli.UsageError, match="needs an argument"):
        cli._parse(["--bundle"], cli._CREATE)


def test_main_errors_exit_1_and_log_json(tmp_path, capsys):
    log = tmp_path / "log"
    rc = cli.main(["--root", str(tmp_path), "--log", str(log), "--log-format", "json",
                   "state", "nope"])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and "nope" in entry["msg"]
    assert cli.main(["--root", str(tmp_path), "bogus"]) == 1
    assert cli.main(["--version"]) == 0


def test_spec_and_features(tmp_path, capsys):
    assert cli.main(["spec", "--bundle", str(tmp_path)]) == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["root"]["path"] == "rootfs" and cfg["process"]["args"] == ["sh"]
    assert cli.main(["spec", "--bundle", str(tmp_path)]) == 1  # exists
    capsys.readouterr()
    assert cli.main(["features"]) == 0
    feats = json.loads(capsys.readouterr().out)
    assert "user" in feats["linux"]["namespaces"] and "poststop" in feats["hooks"]
    assert "rbind" in feats["mountOptions"]


def test_state_status_derivation(tmp_path):
    c = Container(str(tmp_path), "x")
    with pytest.raises(NotFound):
        c.load()
    os.mkdir(c.dir)
    c.data = {"id": "x", "pid": os.getpid(), "starttime": proc_starttime(os.getpid())}
    c.save()
    assert c.load().status() == "running"
    os.mkfifo(c.fifo)
    assert c.status() == "created"
    c.data["starttime"] = 1  # pid reused by another process
    assert c.status() == "stopped"
    assert not alive(None, None)
    st = c.oci_state()
    assert st["status"] == "stopped" and st["pid"] == 0
    for bad in ("", "a/b", "..", "x y"):
        with pytest.raises(ConfigError):
            valid_id(bad)


def test_hooks_get_state_env_args_and_timeout(tmp_path):
    out = tmp_path / "out"
    h = {"path": "/bin/sh", "args": ["sh", "-c", f'cat > {out}; echo "$1 $X" >> {out}', "sh",
                                     "arg1"], "env": ["X=envx"]}
    hooks.run_hooks({"poststart": [h]}, "poststart", {"id": "c", "status": "running"})
    state, rest = out.read_text().split("}", 1)
    assert json.loads(state + "}")["id"] == "c"
    assert rest.strip() == "arg1 envx"
    slow = {"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}
    with pytest.raises(hooks.HookError, match=r"hooks.poststop\[0\].*timed out"):
        hooks.run_hooks({"poststop": [slow]}, "poststop", {})
    warns = hooks.run_hooks({"poststop": [{"path": "/bin/false"}]}, "poststop", {},
                            warn_only=True)
    assert warns and "exited 1" in warns[0]
    with pytest.raises(hooks.HookError, match="No such file"):
        hooks.run_hooks({"prestart": [{"path": "/no/hook"}]}, "prestart", {})


def test_build_process_from_flags_and_file(tmp_path):
    c = Container(str(tmp_path), "c")
    os.mkdir(c.dir)
    c.data = {"config": {"process": {"env": ["PATH=/bin", "A=1"], "cwd": "/",
                                     "capabilities": {"bounding": ["CAP_KILL"]}}}}
    c.save()
    p = build_process(str(tmp_path), "c", {"env": ["A=2"], "cwd": "/tmp", "user": "5:6",
                                           "cap": ["CAP_CHOWN"], "tty": True}, ["sh"])
    assert p["env"] == ["PATH=/bin", "A=2"] and p["cwd"] == "/tmp" and p["terminal"]
    assert p["user"] == {"uid": 5, "gid": 6}
    assert "CAP_CHOWN" in p["capabilities"]["bounding"]
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"args": ["ls"], "env": ["BAD"]}))
    with pytest.raises(ConfigError, match=r"process.env\[0\]"):
        build_process(str(tmp_path), "c", {"process": str(pf)}, [])
