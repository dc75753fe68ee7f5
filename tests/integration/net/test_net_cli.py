"""`isle network ...` through the real CLI: verbs, exit codes, error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from isle.config import Settings
from isle.engine.networks import network_manager

ISLE = os.path.join(os.path.dirname(sys.executable), "isle")


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, ISLE_ROOT=str(tmp_path / "isle-test-root"),
             ISLE_RUNROOT=str(tmp_path / "isle-test-run"))
    yield e
    network_manager(Settings(root=e["ISLE_ROOT"], runroot=e["ISLE_RUNROOT"])).gc(set())


def isle(env, *args):
    return subprocess.run([ISLE, *args], env=env, capture_output=True, text=True, timeout=60)


def test_network_verbs_and_errors(env):
    r = isle(env, "network", "create", "--subnet", "10.205.1.0/24", "--label", "team=a", "isle-test-n")
    assert r.returncode == 0 and len(r.stdout.strip()) == 64
    r = isle(env, "network", "create", "--subnet", "10.205.1.0/25", "isle-test-m")
    assert r.returncode == 1 and "overlaps 10.205.1.0/24 of network isle-test-n" in r.stderr
    r = isle(env, "network", "create", "--subnet", "10.205.2.9/24", "isle-test-m")
    assert r.returncode == 1 and "did you mean 10.205.2.0/24" in r.stderr
    assert isle(env, "network", "ls", "-q").stdout.split() == ["bridge", "isle-test-n"]
    (info,) = json.loads(isle(env, "network", "inspect", "isle-test-n").stdout)
    assert info["Labels"] == {"team": "a"} and info["Subnets"][0]["gateway"] == "10.205.1.1"
    r = isle(env, "network", "rm", "isle-test-nope")
    assert r.returncode == 1 and "network isle-test-nope not found" in r.stderr
    r = isle(env, "network", "connect", "isle-test-n", "nosuchcontainer")
    assert r.returncode == 1 and "nosuchcontainer" in r.stderr
    assert isle(env, "network", "prune", "-f").stdout.split() == ["isle-test-n"]
    assert isle(env, "network", "ls", "-q").stdout.split() == ["bridge"]


@pytest.mark.netns
@pytest.mark.root
@pytest.mark.timeout(60)
def test_connect_and_disconnect_a_running_container(env):
    nm = network_manager(Settings(root=env["ISLE_ROOT"], runroot=env["ISLE_RUNROOT"]))
    nm.create("isle-test-one", subnet="10.205.3.0/24")
    nm.create("isle-test-two", subnet="10.205.4.0/24")
    cid = "f" * 64
    nm.connect(cid, nm.create_netns(cid), ["isle-test-one"], name="web")
    r = isle(env, "network", "connect", "--ip", "10.205.4.77", "--alias", "www", "isle-test-two", "web")
    assert r.returncode == 0, r.stderr
    (info,) = json.loads(isle(env, "network", "inspect", "isle-test-two").stdout)
    assert info["Containers"][cid]["ips"] == ["10.205.4.77"] and "www" in info["Containers"][cid]["aliases"]
    out = subprocess.run(["nsenter", f"--net={nm.store.netns_path(cid)}", "ip", "-o", "addr"],
                         capture_output=True, text=True).stdout
    assert "eth1" in out and "10.205.4.77/24" in out
    r = isle(env, "network", "rm", "isle-test-two")
    assert r.returncode == 1 and "has 1 connected" in r.stderr
    assert isle(env, "network", "disconnect", "isle-test-two", cid[:10]).returncode == 0
    assert isle(env, "network", "rm", "isle-test-two").returncode == 0
    nm.teardown(cid)
