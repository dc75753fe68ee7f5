"""SIGKILLed containers and an isle killed mid-setup leave nothing once teardown/gc has run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from isle.net import parse_publish
from isle.net.netavark import NETAVARK

pytestmark = [pytest.mark.netns, pytest.mark.root]


def assert_clean(nm, kit, fw0, links0):
    assert kit.links(nm) == links0
    assert kit.firewall(nm) == fw0, kit.firewall(nm) ^ fw0
    assert nm.store.leases().data == {} and nm.store.records() == []
    assert os.listdir(nm.store.netns_dir) == []
    assert kit.aardvark_pids(nm.store.netavark_dir) == []


@pytest.mark.timeout(60)
def test_sigkilled_container_without_persistent_netns(nm, kit):
    """The engine may pass /proc/PID/ns/net; once PID is SIGKILLed that netns is gone."""
    fw0, links0 = kit.firewall(nm), kit.links(nm)
    nm.create("isle-test-k", subnet="10.203.1.0/24")
    p = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        time.sleep(0.2)
        att = nm.connect("k1" * 32, f"/proc/{p.pid}/ns/net", ["isle-test-k"],
                         parse_publish("127.0.0.1:18222:80"))
        assert att.ip == "10.203.1.2" and kit.links(nm) != links0
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    nm.teardown("k1" * 32)
    assert_clean(nm, kit, fw0, links0)


WRAPPER = """#!/bin/sh
# netavark that stops mid-way: before or after the real setup, then waits to be killed
case " $* " in
  *" setup "*)
    [ "{phase}" = after ] && {{ {nv} "$@" >/dev/null || exit 1; }}
    touch {marker}
    exec sleep 60 ;;
esac
exec {nv} "$@"
"""

CHILD = """
import sys
from isle.net import NetworkManager, parse_publish
nm = NetworkManager(root=sys.argv[1], runroot=sys.argv[2], netavark=sys.argv[3],
                    default_subnet="10.203.9.0/24", default_bridge="isletstcrash")
nm.connect("x" * 64, nm.create_netns("x" * 64), [("isle-test-c", {"aliases": ["k"]})],
           parse_publish("127.0.0.1:18223:80"))
"""


@pytest.mark.parametrize("phase", ["before", "after"])
@pytest.mark.timeout(60)
def test_isle_killed_mid_setup_is_undone_by_gc(nm, kit, tmp_path, phase):
    fw0, links0 = kit.firewall(nm), kit.links(nm)
    nm.create("isle-test-c", subnet="10.203.2.0/24")
    marker = tmp_path / "marker"
    wrapper = tmp_path / "netavark-wrapper"
    wrapper.write_text(WRAPPER.format(phase=phase, nv=NETAVARK, marker=marker))
    wrapper.chmod(0o755)
    child = subprocess.Popen([sys.executable, "-c", CHILD, nm.store.root, nm.store.runroot,
                              str(wrapper)], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert child.poll() is None, "child exited before setup"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    recs = nm.store.records()
    assert [r["networks"]["isle-test-c"]["state"] for r in recs] == ["setting-up"]
    if phase == "after":
        assert kit.links(nm) != links0 and kit.firewall(nm) != fw0
    report = nm.gc(live=set())
    assert report["removed"] == ["x" * 64] and report["errors"] == []
    assert_clean(nm, kit, fw0, links0)
    nm.remove("isle-test-c")


@pytest.mark.timeout(60)
def test_gc_keeps_live_containers_and_vms(nm, kit):
    nm.create("isle-test-g", subnet="10.203.4.0/24")
    live, dead = "l" * 64, "d" * 64
    nm.connect(live, nm.create_netns(live), ["isle-test-g"])
    nm.connect(dead, nm.create_netns(dead), ["isle-test-g"])
    tap = nm.attach_tap("vmlive", "isle-test-g")
    nm.create_netns("orphan" * 4)                        # isle died between netns and connect
    report = nm.gc(live={live, "vmlive"})
    assert sorted(report["removed"]) == sorted([dead, "orphan" * 4])
    assert {r["id"] for r in nm.store.records()} == {live, "vm-vmlive"}
    assert tap.tap in kit.links(nm)
    gw = nm.inspect("isle-test-g")["subnets"][0]["gateway"]
    assert kit.run_in(nm.store.netns_path(live), "busybox", "ping", "-c1", "-W2", gw).returncode == 0
    nm.teardown(live)
    nm.detach_tap("vmlive")
    assert nm.store.leases().data == {} and os.listdir(nm.store.netns_dir) == []


TAP_CHILD = """
import os, signal, sys
from isle.net import NetworkManager, parse_publish
nm = NetworkManager(root=sys.argv[1], runroot=sys.argv[2], default_subnet="10.203.9.0/24",
                    default_bridge="isletstcrash")
t = nm.attach_tap("vmcrash", "isle-test-t", ports=parse_publish("127.0.0.1::80"))
print(t.tap, flush=True)
os.kill(os.getpid(), signal.SIGKILL)     # isle dies before the engine recorded the VM
"""


@pytest.mark.timeout(60)
def test_vm_tap_left_by_a_killed_isle_is_removed_by_gc(nm, kit):
    """A VM's tap outlives QEMU and isle (it is persistent): an isle SIGKILLed right after it
    made the tap, lease and port rules leaves them to gc, which removes every one of them."""
    fw0, links0 = kit.firewall(nm), kit.links(nm)
    nm.create("isle-test-t", subnet="10.203.5.0/24")
    child = subprocess.run([sys.executable, "-c", TAP_CHILD, nm.store.root, nm.store.runroot],
                           capture_output=True, text=True, timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr
    tap = child.stdout.strip()
    assert tap in kit.links(nm) and kit.firewall(nm) != fw0
    assert nm.store.leases().owners() == {"vm-vmcrash"}
    report = nm.gc(live=set())
    assert report["removed"] == ["vm-vmcrash"] and report["errors"] == []
    assert_clean(nm, kit, fw0, links0)
    assert tap not in kit.links()
    nm.remove("isle-test-t")


FW_CHILD = """
import os, signal, sys
from isle.net import NetworkManager, firewall
nm = NetworkManager(root=sys.argv[1], runroot=sys.argv[2], default_subnet="10.203.9.0/24",
                    default_bridge="isletstcrash")
real = firewall.apply

def apply_then_die(bridge, isolate=True):
    real(bridge, isolate)
    os.kill(os.getpid(), signal.SIGKILL)     # isle dies with the network's table just made

firewall.apply = apply_then_die
nm.connect("f" * 64, nm.create_netns("f" * 64), ["isle-test-f"])
"""


def _nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                         timeout=10).stdout
    return {ln.strip() for ln in out.splitlines()}


@pytest.mark.timeout(60)
def test_network_table_left_by_an_isle_killed_mid_activate_is_removed_by_gc(nm, kit):
    """isle's nft table for a bridge is recorded before it is made: an isle SIGKILLed right
    after making it leaves a record gc finds (the table made first was orphaned for good)."""
    net = nm.create("isle-test-f", subnet="10.203.6.0/24")
    table = f"table inet isle-{net.bridge}"
    child = subprocess.run([sys.executable, "-c", FW_CHILD, nm.store.root, nm.store.runroot],
                           capture_output=True, text=True, timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert table in _nft_tables()
    report = nm.gc(live=set())
    assert report["errors"] == []
    assert table not in _nft_tables()
    assert nm.store.fw_bridges() == [] and os.listdir(nm.store.netns_dir) == []
    nm.remove("isle-test-f")
