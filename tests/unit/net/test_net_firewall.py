"""isle's own network rules as data (net/firewall.py), network options, and the bookkeeping of
the host sysctls netavark changes (net/sysctl.py) on a fake /proc/sys and /sys/class/net."""

from __future__ import annotations

import json
import os
import time

import pytest

from isle.errors import ConfigError
from isle.net import firewall, sysctl
from isle.net.networks import _needs_localnet, check_options
from isle.net.types import Network


def test_render_guards_loopback_and_isolates():
    text = firewall.render("isle-1234abcd")
    assert text.startswith("table inet isle-isle-1234abcd {}\ndelete table inet isle-isle-1234abcd\n")
    assert "hook prerouting priority raw" in text
    for rule in ('iifname "isle-1234abcd" ip daddr 127.0.0.0/8 drop',
                 'iifname "isle-1234abcd" ip saddr 127.0.0.0/8 drop',
                 'iifname "isle-1234abcd" ip6 daddr { ::1, ::ffff:0.0.0.0/96 } drop',
                 "ct status dnat return",
                 'iifname "isle-1234abcd" oifname != "isle-1234abcd" oifname "isle*" '
                 'meta oifkind "bridge" drop',
                 'oifname "isle-1234abcd" iifname != "isle-1234abcd" iifname "isle*" '
                 'meta iifkind "bridge" drop'):
        assert rule in text
    open_net = firewall.render("isle0", isolate=False)
    assert "ip daddr 127.0.0.0/8 drop" in open_net and "forward" not in open_net


@pytest.mark.parametrize("bad", ["", "a" * 16, 'x" accept; #', "br 0", "../x"])
def test_render_refuses_bad_bridge_names(bad):
    with pytest.raises(ConfigError, match="interface name"):
        firewall.render(bad)


def test_network_options():
    assert check_options({"isolate": "False"}) == {"isolate": "false"}
    assert check_options(None) == {}
    with pytest.raises(ConfigError, match="unknown network option 'icc'"):
        check_options({"icc": "false"})
    with pytest.raises(ConfigError, match="isolate='maybe'"):
        check_options({"isolate": "maybe"})
    n = Network(name="n", id="x")
    assert n.isolate and Network.from_dict(n.to_dict()).isolate
    m = Network.from_dict({**n.to_dict(), "options": {"isolate": "false"}})
    assert not m.isolate and m.to_dict()["options"] == {"isolate": "false"}
    old = n.to_dict()
    del old["options"]                                # a record from before options existed
    assert Network.from_dict(old).isolate


@pytest.mark.parametrize("host_ip,needs", [("", True), ("127.0.0.1", True), ("127.5.0.1", True),
                                           ("0.0.0.0", True), ("192.0.2.5", False),
                                           ("::", False), ("2001:db8::1", False)])
def test_needs_localnet(host_ip, needs):
    assert _needs_localnet({"host_ip": host_ip}) is needs


@pytest.fixture
def fake(tmp_path):
    proc, sysfs = tmp_path / "proc", tmp_path / "sys"
    for k, v in ((sysctl.IPV4_FORWARD, "0"), (sysctl.IPV6_FORWARD, "0")):
        (proc / k).parent.mkdir(parents=True, exist_ok=True)
        (proc / k).write_text(v)
    sysfs.mkdir()
    hs = sysctl.HostSysctls(str(tmp_path / "state"), proc=str(proc), sysfs=str(sysfs))

    def netavark(*bridges: str, ipv6: bool = False) -> None:   # what netavark does on setup
        (proc / sysctl.IPV4_FORWARD).write_text("1")
        if ipv6:
            (proc / sysctl.IPV6_FORWARD).write_text("1")
        for b in bridges:
            (sysfs / b / "brif").mkdir(parents=True, exist_ok=True)

    return hs, proc, sysfs, netavark


def test_forwarding_given_back_by_the_last_holder(fake):
    hs, proc, sysfs, netavark = fake
    hs.hold("isle-a")
    netavark("isle-a")
    hs.hold("isle-b", ipv6=True)
    netavark("isle-b", ipv6=True)
    os.rmdir(sysfs / "isle-a" / "brif")
    os.rmdir(sysfs / "isle-a")
    assert hs.release("isle-a") == {}                   # isle-b still needs both
    assert (proc / sysctl.IPV4_FORWARD).read_text() == "1"
    assert hs.release("isle-b") == {sysctl.IPV4_FORWARD: "0", sysctl.IPV6_FORWARD: "0"}
    assert (proc / sysctl.IPV6_FORWARD).read_text() == "0"
    assert not os.path.exists(hs.path)


def test_forwarding_kept_while_another_engine_uses_it(fake):
    hs, proc, sysfs, netavark = fake
    hs.hold("isle-a")
    netavark("isle-a")
    (sysfs / "podman0" / "brif" / "veth1234").mkdir(parents=True)   # podman's containers
    assert hs.release("isle-a") == {}
    assert (proc / sysctl.IPV4_FORWARD).read_text() == "1"
    assert json.loads(open(hs.path).read())["saved"] == {sysctl.IPV4_FORWARD: "0"}
    os.rmdir(sysfs / "podman0" / "brif" / "veth1234")
    assert hs.release() == {sysctl.IPV4_FORWARD: "0"}   # retried at isle's next release


def test_values_already_on_and_dead_holders(fake):
    hs, proc, sysfs, netavark = fake
    (proc / sysctl.IPV4_FORWARD).write_text("1")           # on before isle: stays on
    hs.hold("isle-a")
    netavark("isle-a")
    assert hs.release("isle-a") == {}
    assert (proc / sysctl.IPV4_FORWARD).read_text() == "1"
    (proc / sysctl.IPV4_FORWARD).write_text("0")
    hs.hold("isle-gone")                                   # its root vanished without teardown
    netavark()
    d = json.loads(open(hs.path).read())
    d["holders"]["isle-gone"]["since"] = time.time() - sysctl.GRACE - 1
    open(hs.path, "w").write(json.dumps(d))
    assert hs.release() == {sysctl.IPV4_FORWARD: "0"}
