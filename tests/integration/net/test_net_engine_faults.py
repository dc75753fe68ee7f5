"""Faults through the real `isle` CLI: a SIGKILLed container and an `isle` killed mid-setup leave
no veth, netns, lease, record or firewall rule once `isle rm` / `isle system prune` has run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.networks import network_manager

pytestmark = [pytest.mark.root, pytest.mark.netns]
ISLE = os.path.join(os.path.dirname(sys.executable), "isle")
SUBNET = "10.206.7"


def _argv(tmp: Path, *args: str) -> list[str]:
    return [ISLE, "--root", str(tmp / "root"), "--runroot", str(tmp / "run"), *args]


def isle(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(_argv(tmp, *args), capture_output=True, text=True, timeout=60)
    assert not check or cp.returncode == 0, (args, cp.stderr)
    return cp


def host_state(tmp: Path, bridge: str) -> dict[str, object]:
    """Links on the network's bridge, its firewall rules, and isle's records/leases/netns files."""
    st = network_manager(Settings(root=str(tmp / "root"), runroot=str(tmp / "run"))).store
    brif = f"/sys/class/net/{bridge}/brif"
    rules = []
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool], capture_output=True, text=True, timeout=30).stdout
        rules += [ln for ln in out.splitlines() if SUBNET + "." in ln or bridge in ln]
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=30).stdout
    rules += [ln.strip() for ln in nft.splitlines() if SUBNET + "." in ln or bridge in ln]
    return {"veths": sorted(os.listdir(brif)) if os.path.isdir(brif) else [],
            "rules": rules, "records": [r["id"] for r in st.records()],
            "leases": sorted(st.leases().owners()), "netns": st.netns_ids()}


@pytest.fixture
def net(tmp_path: Path):
    isle(tmp_path, "network", "create", "--subnet", f"{SUBNET}.0/24", "isle-test-fault")
    nm = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    bridge = nm.store.network("isle-test-fault").bridge
    try:
        yield bridge
    finally:
        ids = isle(tmp_path, "ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            isle(tmp_path, "rm", "-f", *ids, check=False)
        nm.gc(set())
        isle(tmp_path, "network", "rm", "isle-test-fault", check=False)


EMPTY = {"veths": [], "records": [], "leases": [], "netns": []}


def _bare(state: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in state.items() if k != "rules"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cleanup", ["rm", "prune"])
def test_sigkilled_container_leaves_nothing_after_rm(tmp_path, net, cleanup):
    base_rules = host_state(tmp_path, net)["rules"]
    isle(tmp_path, "run", "-d", "--name", "k1", "--network", "isle-test-fault", "-p", "127.0.0.1::80",
         "busybox", "sleep", "300")
    up = host_state(tmp_path, net)
    assert len(up["veths"]) == 1 and len(up["records"]) == 1 and up["rules"] != base_rules
    pid = json.loads(isle(tmp_path, "inspect", "k1").stdout)[0]["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not json.loads(isle(tmp_path, "inspect", "k1").stdout)[0]["State"]["Running"]:
            break
        time.sleep(0.05)
    if cleanup == "rm":
        isle(tmp_path, "rm", "k1")
    else:
        isle(tmp_path, "system", "prune", "-f")
        assert "k1" not in isle(tmp_path, "ps", "-a").stdout
    after = host_state(tmp_path, net)
    assert _bare(after) == EMPTY and after["rules"] == base_rules


@pytest.mark.timeout(180)
@pytest.mark.parametrize("cleanup", ["rm", "prune"])
def test_isle_killed_mid_setup_is_undone(tmp_path, net, cleanup):
    base_rules = host_state(tmp_path, net)["rules"]
    st = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"))).store
    p = subprocess.Popen(_argv(tmp_path, "run", "-d", "--name", "k2", "--network", "isle-test-fault",
                               "-p", "127.0.0.1::80", "busybox", "sleep", "300"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(2000):      # the record is written just before netavark runs: kill right there
        if st.records() or p.poll() is not None:
            break
        time.sleep(0.002)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert st.records() or st.netns_ids(), "isle finished before it could be killed mid-setup"
    if cleanup == "rm":
        isle(tmp_path, "rm", "-f", "k2")
    else:
        out = isle(tmp_path, "system", "prune", "-f").stdout
        assert "k2" not in isle(tmp_path, "ps", "-a").stdout, out
    after = host_state(tmp_path, net)
    assert _bare(after) == EMPTY and after["rules"] == base_rules
