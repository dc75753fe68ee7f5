"""isle's nft table of a network goes with its last member, however that member's connect ended
(net/networks.py deactivate_unused): nft and the host sysctls are faked, the store is real."""

from __future__ import annotations

import pytest

from isle.net import firewall, sysctl
from isle.net.attach import Attacher
from isle.net.networks import Networks
from isle.net.types import Network, Subnet

CID = "c" * 64


@pytest.fixture
def nets(tmp_path, monkeypatch):
    tables: set[str] = set()
    monkeypatch.setattr(firewall, "apply", lambda bridge, isolate=True: tables.add(bridge))
    monkeypatch.setattr(firewall, "remove", lambda bridge: tables.discard(bridge))
    proc, sysfs = tmp_path / "proc", tmp_path / "sys"
    for k in (sysctl.IPV4_FORWARD, sysctl.IPV6_FORWARD):
        (proc / k).parent.mkdir(parents=True, exist_ok=True)
        (proc / k).write_text("0")
    sysfs.mkdir()
    n = Networks(str(tmp_path / "root"), str(tmp_path / "run"), default_subnet="10.99.0.0/16")
    n.sysctls = sysctl.HostSysctls(str(tmp_path / "state"), proc=str(proc), sysfs=str(sysfs))
    net = Network(name="web", id="ab" * 32, bridge="isle-abababab",
                  subnets=(Subnet(subnet="10.99.1.0/24", gateway="10.99.1.1"),))
    n.store.save_network(net)
    return n, net, tables


def _killed_in_activate(n: Networks, net: Network, cid: str) -> None:
    """What Attacher._connect got done for cid before its CLI was SIGKILLed inside activate:
    the lease saved, the table made, no record yet."""
    with n.store.lock():
        leases = n.store.leases()
        leases.allocate(net, cid)
        n.store.save_leases(leases)
        n.activate(net)


def test_teardown_of_a_connect_killed_in_activate_drops_the_table(nets):
    n, net, tables = nets
    _killed_in_activate(n, net, CID)
    assert tables == {net.bridge} and n.store.record(CID) is None
    Attacher(n).teardown(CID)          # rm -f of the container the killed `run` left
    assert n.store.leases().members("web") == set()
    assert tables == set() and n.store.fw_state(net.bridge) is None   # failed before the fix


def test_the_table_stays_while_another_member_has_a_lease(nets):
    n, net, tables = nets
    _killed_in_activate(n, net, CID)
    _killed_in_activate(n, net, "d" * 64)
    Attacher(n).teardown(CID)
    assert tables == {net.bridge} and n.store.fw_state(net.bridge) is not None
    Attacher(n).teardown("d" * 64)
    assert tables == set() and n.store.fw_state(net.bridge) is None


def test_gc_drops_tables_of_gone_networks_and_memberless_ones(nets):
    n, net, tables = nets
    _killed_in_activate(n, net, CID)
    with n.store.lock():               # a network removed while its table stayed (a crash)
        n.activate(Network(name="old", id="cd" * 32, bridge="isle-cdcdcdcd"))
    assert tables == {net.bridge, "isle-cdcdcdcd"}
    Attacher(n).gc([CID])              # CID is live: its network keeps its table
    assert tables == {net.bridge}
    Attacher(n).gc([])
    assert tables == set() and n.store.fw_bridges() == []
