"""Render a container's /etc/hosts, /etc/resolv.conf and /etc/hostname (pure functions).

Docker's rules: ``--dns`` replaces the nameservers; on a network that resolves names the
nameserver is the network's DNS (aardvark-dns on the gateway), which forwards the rest; otherwise
the host's nameservers minus loopback ones (they are unreachable from the namespace), falling back
to public resolvers only when nothing is left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from isle.errors import ConfigError

__all__ = ["render_hosts", "render_resolv", "parse_add_host", "parse_resolv", "update_hosts",
           "FALLBACK_DNS"]

FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


def parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, options) from resolv.conf text."""
    ns: list[str] = []
    search: list[str] = []
    opts: list[str] = []
    for line in text.splitlines():
        f = line.split("#", 1)[0].split(";", 1)[0].split()
        if not f:
            continue
        if f[0] == "nameserver" and len(f) > 1:
            ns.append(f[1])
        elif f[0] in ("search", "domain"):
            search = f[1:]
        elif f[0] == "options":
            opts += f[1:]
    return ns, search, opts


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return True


def render_resolv(*, host_resolv: str, network_dns: Sequence[str] = (), dns: Sequence[str] = (),
                  dns_search: Sequence[str] = (), dns_options: Sequence[str] = (),
                  host_network: bool = False) -> str:
    """resolv.conf text for a container; ``network_dns`` = DNS servers of its networks."""
    for d in dns:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise ConfigError("dns", f"{d!r} is not an IP address") from None
    h_ns, h_search, h_opts = parse_resolv(host_resolv)
    if host_network:
        servers = list(dns) or h_ns
    elif network_dns:
        servers = list(network_dns)     # aardvark forwards to --dns (or the host's) itself
    else:
        servers = list(dns) or [s for s in h_ns if not _loopback(s)] or list(FALLBACK_DNS)
    search = list(dns_search) if dns_search else h_search
    search = [] if search == ["."] else search
    opts = list(dns_options) if dns_options else h_opts
    lines = [f"nameserver {s}" for s in servers]
    if search:
        lines.insert(0, "search " + " ".join(search))
    if opts:
        lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


def parse_add_host(spec: str, host_gateway: str | None = None) -> tuple[str, str]:
    """``NAME:IP`` (``host-gateway`` = the network gateway) -> (name, ip)."""
    name, sep, ip = spec.partition(":")
    if not sep or not name or not ip:
        raise ConfigError("add-host", f"{spec!r} is not NAME:IP")
    if ip == "host-gateway":
        if not host_gateway:
            raise ConfigError("add-host", f"{spec!r}: this container has no gateway")
        ip = host_gateway
    try:
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise ConfigError("add-host", f"{spec!r}: {ip!r} is not an IP address") from None
    return name, ip.strip("[]")


def render_hosts(*, hostname: str, ips: Sequence[str] = (), names: Iterable[str] = (),
                 add_hosts: Sequence[tuple[str, str]] = (), base: str | None = None) -> str:
    """/etc/hosts: loopback names, the container's own addresses and names, then --add-host."""
    if base is not None:                 # --network host: the host's file plus extras
        lines = [base.rstrip("\n")]
    else:
        lines = ["127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback",
                 "fe00::0\tip6-localnet",
                 "ff00::0\tip6-mcastprefix",
                 "ff02::1\tip6-allnodes",
                 "ff02::2\tip6-allrouters"]
    own = [hostname] + [n for n in names if n and n != hostname]
    for ip in ips:
        lines.append(f"{ip}\t{' '.join(own)}")
    if not ips and base is None:
        lines.append(f"127.0.1.1\t{' '.join(own)}")
    for name, ip in add_hosts:
        lines.append(f"{ip}\t{name}")
    return "\n".join(lines) + "\n"


def update_hosts(text: str, old_ips: Sequence[str], new_ips: Sequence[str],
                 names: Sequence[str]) -> str:
    """/etc/hosts text after the container's addresses changed from old_ips to new_ips (network
    connect/disconnect): its own lines (an old address, or 127.0.1.1 when it had none, followed by
    exactly its names) are replaced where they stood; every other line stays as it is.

    names: the container's names (hostname first): they pick its own lines from --add-host
    lines for the same address, and are used when the file has no own line at all.
    """
    lines = text.splitlines()
    own_at = [i for i, ln in enumerate(lines) if ln.split()[:1] and ln.split()[0] in
              (list(old_ips) or ["127.0.1.1"])]
    mine = [i for i in own_at if names and names[0] in lines[i].split()[1:]] or own_at
    own = lines[mine[0]].split()[1:] if mine else list(names)     # not an --add-host line
    drop = [i for i in own_at if lines[i].split()[1:] == own]
    if drop:
        at = drop[0]
    else:       # no own line left: after the leading loopback and multicast lines
        at = 0
        while at < len(lines) and lines[at].split()[:1] and _special_ip(lines[at].split()[0]):
            at += 1
    fresh = [f"{ip}\t{' '.join(own)}" for ip in new_ips] or [f"127.0.1.1\t{' '.join(own)}"]
    kept = [ln for i, ln in enumerate(lines) if i not in drop]
    at -= sum(1 for i in drop if i < at)
    return "\n".join(kept[:at] + fresh + kept[at:]) + "\n"


def _special_ip(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_loopback or a.is_multicast or a.is_reserved
