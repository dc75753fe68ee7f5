"""/etc/hosts, /etc/resolv.conf rendering (Docker's rules)."""

from __future__ import annotations

import pytest

from isle.errors import ConfigError
from isle.net.etc import parse_add_host, render_hosts, render_resolv, update_hosts

HOST = "search corp.example\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n"


def test_resolv_on_a_dns_network_points_at_its_gateway():
    out = render_resolv(host_resolv=HOST, network_dns=["10.89.0.1"])
    assert out == "search corp.example\nnameserver 10.89.0.1\noptions edns0\n"


def test_resolv_default_network_drops_loopback_host_servers():
    assert "nameserver 192.0.2.53\n" in render_resolv(host_resolv=HOST)
    assert "127.0.0.53" not in render_resolv(host_resolv=HOST)
    assert "nameserver 8.8.8.8" in render_resolv(host_resolv="nameserver 127.0.0.1\n")


def test_resolv_flags_replace_host_values():
    out = render_resolv(host_resolv=HOST, dns=["1.1.1.1"], dns_search=["a.test", "b.test"],
                        dns_options=["ndots:2"])
    assert out == "search a.test b.test\nnameserver 1.1.1.1\noptions ndots:2\n"
    with pytest.raises(ConfigError, match="dns: 'x' is not an IP"):
        render_resolv(host_resolv=HOST, dns=["x"])


def test_hosts_lists_own_names_and_add_hosts():
    out = render_hosts(hostname="web1", ips=["10.89.0.2"], names=["web"],
                       add_hosts=[parse_add_host("db:10.0.0.9"), parse_add_host("gw:host-gateway", "10.89.0.1")])
    assert "127.0.0.1\tlocalhost\n" in out
    assert "10.89.0.2\tweb1 web\n" in out
    assert out.endswith("10.0.0.9\tdb\n10.89.0.1\tgw\n")


def test_add_host_errors():
    with pytest.raises(ConfigError, match="add-host: 'nohost' is not NAME:IP"):
        parse_add_host("nohost")
    with pytest.raises(ConfigError, match="is not an IP"):
        parse_add_host("a:b")


def test_hosts_follow_network_connect_and_disconnect():
    """Own lines change where they stand; localhost, --add-host and the user's lines stay."""
    start = render_hosts(hostname="h1", ips=["10.1.0.2"], names=["web"],
                         add_hosts=[("db", "192.0.2.9")]) + "203.0.113.7\tmine\n"
    both = update_hosts(start, ["10.1.0.2"], ["10.1.0.2", "10.2.0.5"], ["h1"])
    assert both == start.replace("10.1.0.2\th1 web\n", "10.1.0.2\th1 web\n10.2.0.5\th1 web\n")
    second = update_hosts(both, ["10.1.0.2", "10.2.0.5"], ["10.2.0.5"], ["unused"])
    assert second == start.replace("10.1.0.2\th1 web\n", "10.2.0.5\th1 web\n")
    none = update_hosts(second, ["10.2.0.5"], [], ["unused"])
    assert none == start.replace("10.1.0.2\th1 web\n", "127.0.1.1\th1 web\n")
    assert update_hosts(none, [], ["10.3.0.9"], ["unused"]) == start.replace("10.1.0.2", "10.3.0.9")
    # an edited file without an own line: the names given, after the loopback lines
    edited = "127.0.0.1\tlocalhost\n::1\tlocalhost\n192.0.2.9\tdb\n"
    assert update_hosts(edited, ["10.9.9.9"], ["10.1.0.2"], ["h1", "web"]) == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.1.0.2\th1 web\n192.0.2.9\tdb\n")

    # an --add-host line for the container's own address is not one of its own lines
    added = "127.0.0.1\tlocalhost\n10.1.0.2\tme\n10.1.0.2\th1 web\n"
    assert update_hosts(added, ["10.1.0.2"], ["10.2.0.5"], ["h1", "web"]) == (
        "127.0.0.1\tlocalhost\n10.1.0.2\tme\n10.2.0.5\th1 web\n")
