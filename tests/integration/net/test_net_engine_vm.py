"""VMs join isle networks through a tap on the network's bridge: a container reaches a VM by
name and the VM a container (QEMU, TCG here); `isle rm` leaves no tap, veth, lease or record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.networks import network_manager

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(360)]
ISLE = os.path.join(os.path.dirname(sys.executable), "isle")


def isle(tmp: Path, *args: str, check: bool = True, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run([ISLE, "--root", str(tmp / "root"), "--runroot", str(tmp / "run"), *args],
                        capture_output=True, text=True, timeout=timeout)
    assert not check or cp.returncode == 0, (args, cp.stdout, cp.stderr)
    return cp


def _clean(tmp: Path, nm, network: str) -> None:
    """Whatever a failed test left: its containers and VMs, attachments, its network."""
    ids = isle(tmp, "ps", "-aq", "--no-trunc", check=False).stdout.split()
    if ids:
        isle(tmp, "rm", "-f", *ids, check=False)
    nm.gc(set())
    isle(tmp, "network", "rm", network, check=False)


def test_vm_and_container_reach_each_other_by_name(tmp_path):
    nm = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    isle(tmp_path, "network", "create", "--subnet", "10.206.9.0/24", "isle-test-vmnet")
    try:
        isle(tmp_path, "run", "--isolation", "vm", "--network", "isle-test-vmnet", "--name", "v1",
             "-d", "busybox", "sleep", "300")
        (info,) = json.loads(isle(tmp_path, "inspect", "v1").stdout)
        tap = nm.store.record(f"vm-{info['Id']}")["tap"]
        bridge = nm.store.network("isle-test-vmnet").bridge
        assert os.path.realpath(f"/sys/class/net/{tap}/master").endswith("/" + bridge)
        vm_ip = info["NetworkSettings"]["Networks"]["isle-test-vmnet"]["IPAddress"]
        out = isle(tmp_path, "run", "--rm", "--network", "isle-test-vmnet", "busybox", "ping",
                   "-c3", "-W5", "v1").stdout
        assert f"({vm_ip})" in out and " 0 packets received" not in out
        r = isle(tmp_path, "network", "connect", "bridge", "v1", check=False)
        assert r.returncode != 0 and "v1 is a VM: it joins one network" in r.stderr
        isle(tmp_path, "run", "-d", "--network", "isle-test-vmnet", "--name", "c1", "busybox",
             "sleep", "300")
        out = isle(tmp_path, "exec", "v1", "ping", "-c3", "-W5", "c1", check=False).stdout
        assert "PING c1 (10.206.9." in out and " 0 packets received" not in out, out
        isle(tmp_path, "rm", "-f", "v1", "c1")
        assert not os.path.exists(f"/sys/class/net/{tap}")
        assert nm.store.records() == [] and nm.store.leases().owners() == set()
        assert nm.store.netns_ids() == []
    finally:
        _clean(tmp_path, nm, "isle-test-vmnet")


def _rules(subnet: str) -> list[str]:
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        text = subprocess.run([tool], capture_output=True, text=True, timeout=30).stdout
        out += [ln for ln in text.splitlines() if subnet in ln]
    return out


def test_sigkilled_vm_leaves_no_tap_rule_or_lease_after_rm(tmp_path):
    """QEMU killed with SIGKILL: the tap outlives it (persistent), so `isle rm` must remove it,
    with the VM's port rules and its lease."""
    import signal
    import time

    nm = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    isle(tmp_path, "network", "create", "--subnet", "10.206.10.0/24", "isle-test-vmk")
    try:
        base = _rules("10.206.10.")
        isle(tmp_path, "run", "--isolation", "vm", "--network", "isle-test-vmk", "--name", "vk",
             "-p", "127.0.0.1::80", "-d", "busybox", "sleep", "300")
        (info,) = json.loads(isle(tmp_path, "inspect", "vk").stdout)
        tap = nm.store.record(f"vm-{info['Id']}")["tap"]
        assert os.path.exists(f"/sys/class/net/{tap}") and _rules("10.206.10.") != base
        pid = info["State"]["Pid"]
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        qemu = [int(k) for k in kids if "qemu" in open(f"/proc/{k}/comm").read()]
        assert len(qemu) == 1, kids
        os.kill(qemu[0], signal.SIGKILL)
        for _ in range(100):
            if not json.loads(isle(tmp_path, "inspect", "vk").stdout)[0]["State"]["Running"]:
                break
            time.sleep(0.1)
        assert os.path.exists(f"/sys/class/net/{tap}")     # a dead QEMU does not take it along
        isle(tmp_path, "rm", "vk")
        assert not os.path.exists(f"/sys/class/net/{tap}")
        assert _rules("10.206.10.") == base
        assert nm.store.records() == [] and nm.store.leases().owners() == set()
        assert nm.store.netns_ids() == []
    finally:
        _clean(tmp_path, nm, "isle-test-vmk")


def test_no_dev_net_tun_is_a_clear_error_and_leaves_nothing(tmp_path):
    """/dev/net/tun hidden (a private mount namespace over /dev/net): `run --isolation vm` on a
    bridge network names the missing device, exits 125, and leaves no tap, lease or record."""
    nm = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    isle(tmp_path, "network", "create", "--subnet", "10.206.11.0/24", "isle-test-vmt")
    try:
        links = set(os.listdir("/sys/class/net"))
        cmd = " ".join([ISLE, "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"),
                        "run", "--rm", "--isolation", "vm", "--network", "isle-test-vmt",
                        "busybox", "true"])
        cp = subprocess.run(["unshare", "-m", "sh", "-c",
                             f"mount -t tmpfs none /dev/net && exec {cmd}"],
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 125 and "/dev/net/tun is missing" in cp.stderr, cp.stderr
        assert "Traceback" not in cp.stderr
        assert set(os.listdir("/sys/class/net")) == links
        assert nm.store.records() == [] and nm.store.leases().owners() == set()
        assert nm.store.netns_ids() == []
        assert isle(tmp_path, "ps", "-aq").stdout == ""
    finally:
        _clean(tmp_path, nm, "isle-test-vmt")
