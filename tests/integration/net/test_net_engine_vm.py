"""A VM container joins an isle network exactly as a container does: the engine hands the VM
runtime the same network namespace (veth on the bridge, lease, DNS name, published ports) and
the runtime connects its guest to it (QEMU, TCG here). Containers reach the VM by name and the
VM them, a published port reaches the guest, and `isle rm` leaves no netns, lease, rule or link."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
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


def _rules(subnet: str) -> list[str]:
    out = []
    for tool in ("iptables-save", "ip6tables-save", "nft"):
        argv = [tool, "list", "ruleset"] if tool == "nft" else [tool]
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except FileNotFoundError:
            continue
        out += [ln for ln in text.splitlines() if subnet in ln]
    return out


def _assert_nothing_left(nm, network: str) -> None:
    """This test's own traces only (other runs share the host): records, leases, netns, no port
    left on its network's bridge."""
    assert nm.store.records() == [] and nm.store.leases().owners() == set()
    assert nm.store.netns_ids() == []
    brif = f"/sys/class/net/{nm.store.network(network).bridge}/brif"
    assert not os.path.exists(brif) or os.listdir(brif) == []  # (the bridge goes when unused)


def test_vm_and_containers_share_one_network_names_both_ways_and_a_port(tmp_path):
    nm = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    isle(tmp_path, "network", "create", "--subnet", "10.206.9.0/24", "isle-test-vmnet")
    try:
        base = _rules("10.206.9.")
        isle(tmp_path, "run", "-d", "--network", "isle-test-vmnet", "--name", "c1", "busybox",
             "sleep", "300")
        isle(tmp_path, "run", "--isolation", "vm", "--network", "isle-test-vmnet", "--name", "v1",
             "-p", "127.0.0.1::8080", "-d", "busybox", "sh", "-c",
             "mkdir -p /w && echo from-the-guest > /w/index.html && exec httpd -f -p 8080 -h /w")
        (info,) = json.loads(isle(tmp_path, "inspect", "v1").stdout)
        net = info["NetworkSettings"]["Networks"]["isle-test-vmnet"]
        vm_ip = net["IPAddress"]
        assert vm_ip.startswith("10.206.9.")
        # the same attachment a container gets: a netns with a veth on the bridge, no tap
        assert nm.store.record(info["Id"]) is not None
        assert nm.store.record(f"vm-{info['Id']}") is None
        # container -> VM by name
        out = isle(tmp_path, "run", "--rm", "--network", "isle-test-vmnet", "busybox", "ping",
                   "-c3", "-W5", "v1").stdout
        assert f"({vm_ip})" in out and " 0 packets received" not in out, out
        # VM -> container by name
        out = isle(tmp_path, "exec", "v1", "ping", "-c3", "-W5", "c1", check=False).stdout
        assert "PING c1 (10.206.9." in out and " 0 packets received" not in out, out
        # the published port reaches the guest's server
        port = isle(tmp_path, "port", "v1", "8080").stdout.strip().rsplit(":", 1)[1]
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.2)
        assert body == b"from-the-guest\n"
        r = isle(tmp_path, "network", "connect", "bridge", "v1", check=False)
        assert r.returncode != 0 and "v1 is a VM: it joins one network" in r.stderr
        isle(tmp_path, "rm", "-f", "v1", "c1")
        assert _rules("10.206.9.") == base
        _assert_nothing_left(nm, "isle-test-vmnet")
    finally:
        _clean(tmp_path, nm, "isle-test-vmnet")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for t in os.listdir(f"/proc/{p}/task")
                    for k in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def test_sigkilled_qemu_leaves_no_netns_rule_or_lease_after_rm(tmp_path):
    """QEMU killed with SIGKILL: the container is seen to stop; `isle rm` removes its netns,
    port rules and lease (the tap lived in that netns and went with QEMU's fd)."""
    import signal

    nm = network_manager(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    isle(tmp_path, "network", "create", "--subnet", "10.206.10.0/24", "isle-test-vmk")
    try:
        base = _rules("10.206.10.")
        isle(tmp_path, "run", "--isolation", "vm", "--network", "isle-test-vmk", "--name", "vk",
             "-p", "127.0.0.1::80", "-d", "busybox", "sleep", "300")
        (info,) = json.loads(isle(tmp_path, "inspect", "vk").stdout)
        assert _rules("10.206.10.") != base
        qemu = [k for k in _descendants(info["State"]["Pid"])
                if "qemu" in open(f"/proc/{k}/comm").read()]
        assert len(qemu) == 1, qemu
        os.kill(qemu[0], signal.SIGKILL)
        for _ in range(200):
            if not json.loads(isle(tmp_path, "inspect", "vk").stdout)[0]["State"]["Running"]:
                break
            time.sleep(0.1)
        isle(tmp_path, "rm", "-f", "vk")
        assert _rules("10.206.10.") == base
        _assert_nothing_left(nm, "isle-test-vmk")
    finally:
        _clean(tmp_path, nm, "isle-test-vmk")
