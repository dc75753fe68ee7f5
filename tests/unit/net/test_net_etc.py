"""/etc/hosts, /etc/resolv.conf rendering (Docker's rules)."""

from __future__ import annotations

import pytest

from isle.errors import ConfigError
from isle.net.etc import parse_add_host, render_hosts, render_resolv

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
