"""Published ports: parse ``-p``/``EXPOSE`` text, pick random host ports, check the host's ports.

    parse_publish("127.0.0.1:8080:80/udp") == [PortMapping("127.0.0.1", 8080, 80, "udp")]
    parse_publish("8000-8001:80-81")       == [PortMapping("", 8000, 80, "tcp", 2)]
    parse_publish("80")                    == [PortMapping("", 0, 80, "tcp")]   # random host port
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
from collections.abc import Iterable

from isle.errors import ConfigError
from isle.net.types import PortMapping

__all__ = ["parse_publish", "parse_expose", "check_conflicts", "resolve_random", "host_port_free",
           "claim"]

PROTOS = ("tcp", "udp", "sctp")


def _range(text: str, what: str, spec: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        raise ConfigError("publish", f"{spec!r}: {what} {text!r} is not a port number") from None
    for p in (a, b):
        if not 1 <= p <= 65535:
            raise ConfigError("publish", f"{spec!r}: {what} {p} is outside 1-65535")
    if b < a:
        raise ConfigError("publish", f"{spec!r}: {what} range {text} ends before it starts")
    return a, b - a + 1


def parse_publish(spec: str) -> list[PortMapping]:
    """``[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`` with ranges; IPv6 host IPs in brackets."""
    s = spec.strip()
    if not s:
        raise ConfigError("publish", "empty port specification")
    body, _, proto = s.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in PROTOS:
        raise ConfigError("publish",
                          f"{spec!r}: protocol {proto!r} is not one of {', '.join(PROTOS)}")
    host_ip = ""
    if body.startswith("["):
        end = body.find("]")
        if end < 0 or body[end + 1:end + 2] != ":":
            raise ConfigError("publish",
                              f"{spec!r}: write an IPv6 host address as [ADDR]:HOST:CONTAINER")
        host_ip, body = body[1:end], body[end + 2:]
        parts = body.split(":")
        if len(parts) == 1:
            parts = ["", parts[0]]
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        elif len(parts) > 3:
            raise ConfigError("publish", f"{spec!r}: too many ':' (want [IP:][HOST:]CONTAINER)")
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ConfigError("publish",
                              f"{spec!r}: host address {host_ip!r} is not an IP") from None
    host, ctr = (parts if len(parts) == 2 else ["", parts[0]])
    cport, n = _range(ctr, "container port", spec)
    if not host:
        if n > 1:
            return [PortMapping(host_ip, 0, cport + i, proto) for i in range(n)]
        return [PortMapping(host_ip, 0, cport, proto)]
    hport, hn = _range(host, "host port", spec)
    if hn != n:
        raise ConfigError("publish", f"{spec!r}: host range has {hn} ports, container range {n}")
    return [PortMapping(host_ip, hport, cport, proto, n)]


def parse_expose(ports: Iterable[str]) -> list[PortMapping]:
    """Image ``ExposedPorts`` keys ("80/tcp", "53/udp") as random-host-port mappings for ``-P``."""
    out: list[PortMapping] = []
    for p in ports:
        num, _, proto = p.partition("/")
        start, n = _range(num, "exposed port", p)
        proto = proto.lower() or "tcp"
        if proto not in PROTOS:
            raise ConfigError("expose",
                              f"{p!r}: protocol {proto!r} is not one of {', '.join(PROTOS)}")
        out += [PortMapping("", 0, start + i, proto) for i in range(n)]
    return out


def _expand(pm: PortMapping) -> list[tuple[str, int, str]]:
    return [(pm.host_ip, pm.host_port + i, pm.proto) for i in range(pm.range)]


def check_conflicts(ports: Iterable[PortMapping], taken: Iterable[PortMapping]) -> None:
    """Refuse a host port published twice (in ``ports`` or already by another container)."""
    seen: dict[tuple[int, str], str] = {}
    for pm in taken:
        for ip, port, proto in _expand(pm):
            seen[(port, proto)] = ip
    for pm in ports:
        if pm.host_port == 0:
            continue
        for ip, port, proto in _expand(pm):
            other = seen.get((port, proto))
            if other is not None and (not other or not ip or other == ip):
                raise ConfigError("publish", f"host port {port}/{proto} is already published")
            seen[(port, proto)] = ip


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ip and ":" in ip else socket.AF_INET


def host_port_free(ip: str, port: int, proto: str) -> bool:
    """True if nothing on the host listens on ip:port/proto (a bind test; sctp is not checked)."""
    if proto == "sctp":
        return True
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(_family(ip), kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip or ("::" if _family(ip) == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError("publish", f"host address {ip} is not on this host") from None
            raise
    return True


def _random_port(ip: str, proto: str) -> int:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(_family(ip), kind if proto != "sctp" else socket.SOCK_STREAM) as s:
        s.bind((ip or "0.0.0.0", 0))
        return int(s.getsockname()[1])


def resolve_random(ports: Iterable[PortMapping], taken: Iterable[PortMapping] = ()
                   ) -> list[PortMapping]:
    """Give every host_port 0 a free host port (kernel's ephemeral choice, or a free run for
    ranges)."""
    taken = list(taken)
    busy = {(p, proto) for pm in taken for _, p, proto in _expand(pm)}
    out: list[PortMapping] = []
    for pm in ports:
        if pm.host_port:
            out.append(pm)
            continue
        for _ in range(100):
            base = (_random_port(pm.host_ip, pm.proto) if pm.range == 1
                    else random.randint(20000, 60000 - pm.range))
            cand = PortMapping(pm.host_ip, base, pm.container_port, pm.proto, pm.range)
            exp = _expand(cand)
            if all((p, pr) not in busy and host_port_free(ip, p, pr) for ip, p, pr in exp):
                busy.update((p, pr) for _, p, pr in exp)
                out.append(cand)
                break
        else:
            raise ConfigError("publish",
                              f"no free host port found for {pm.container_port}/{pm.proto}")
    return out


def claim(ports: list[PortMapping], taken: list[PortMapping]) -> list[PortMapping]:
    """ports checked against the other containers' (taken) and against the host's sockets,
    random host ports (0) resolved: what a container may publish now."""
    check_conflicts(ports, taken)
    for pm in ports:
        for i in range(pm.range if pm.host_port else 0):
            if not host_port_free(pm.host_ip, pm.host_port + i, pm.proto):
                raise ConfigError("publish", f"host port {pm.host_port + i}/{pm.proto} is "
                                  "already in use on the host")
    return resolve_random(ports, taken)
