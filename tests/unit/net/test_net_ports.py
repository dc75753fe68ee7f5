"""Publish specs, EXPOSE lists, conflicts and random host ports."""

from __future__ import annotations

import socket

import pytest

from isle.errors import ConfigError
from isle.net.ports import check_conflicts, host_port_free, parse_expose, parse_publish, resolve_random
from isle.net.types import PortMapping as P


@pytest.mark.parametrize("spec,want", [
    ("80", [P("", 0, 80)]),
    ("8080:80", [P("", 8080, 80)]),
    ("127.0.0.1:8080:80/udp", [P("127.0.0.1", 8080, 80, "udp")]),
    ("127.0.0.1::80", [P("127.0.0.1", 0, 80)]),
    ("8000-8002:90-92/tcp", [P("", 8000, 90, "tcp", 3)]),
    ("90-91", [P("", 0, 90), P("", 0, 91)]),
    ("[::1]:8080:80", [P("::1", 8080, 80)]),
    ("5000:5000/SCTP", [P("", 5000, 5000, "sctp")]),
])
def test_parse_publish(spec, want):
    assert parse_publish(spec) == want


@pytest.mark.parametrize("spec,msg", [
    ("", "empty"),
    ("8080:80/icmp", "protocol 'icmp'"),
    ("70000:80", "host port 70000 is outside"),
    ("8080:0", "container port 0 is outside"),
    ("a:80", "host port 'a' is not a port number"),
    ("8000-8001:80", "host range has 2 ports, container range 1"),
    ("10.0.0.300:80:80", "host address '10.0.0.300' is not an IP"),
    ("1:2:3:4", "too many"),
    ("90-80", "ends before it starts"),
])
def test_parse_publish_errors_name_the_problem(spec, msg):
    with pytest.raises(ConfigError, match="publish") as ei:
        parse_publish(spec)
    assert msg in str(ei.value)


def test_parse_expose():
    assert parse_expose(["80/tcp", "53/udp", "7000-7001"]) == [
        P("", 0, 80), P("", 0, 53, "udp"), P("", 0, 7000), P("", 0, 7001)]


def test_conflicts_within_request_and_with_others():
    check_conflicts([P("", 8080, 80), P("", 8080, 80, "udp")], [])
    with pytest.raises(ConfigError, match="host port 8081/tcp is already published"):
        check_conflicts([P("", 8080, 80, "tcp", 2)], [P("127.0.0.1", 8081, 1)])
    check_conflicts([P("127.0.0.1", 8081, 80)], [P("127.0.0.2", 8081, 80)])


def test_host_port_free_sees_a_listener_and_random_ports_avoid_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not host_port_free("127.0.0.1", port, "tcp")
        assert not host_port_free("", port, "tcp")
        got = resolve_random([P("127.0.0.1", 0, 80), P("127.0.0.1", 0, 81)])
    assert all(g.host_port and g.host_port != port for g in got)
    assert got[0].host_port != got[1].host_port
    assert [g.container_port for g in got] == [80, 81]
