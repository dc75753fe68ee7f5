"""IP address management, pure: subnet checks, overlap detection and address leases.

    leases = Leases({})
    net = Network(name="n", id="..", subnets=(plan_subnet("10.89.0.0/24"),))
    leases.allocate(net, "ctr1")          # ["10.89.0.2"]  (.1 is the gateway)
    leases.release_owner("ctr1")

The caller persists ``Leases.data`` (``{network: {ip: owner}}``) under a lock.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from isle.errors import ConfigError
from isle.net.types import Network, Subnet

__all__ = ["parse_subnet", "plan_subnet", "check_overlap", "pick_free_subnet", "ula_subnet",
           "Leases", "IPNet"]

IPNet = IPv4Network | IPv6Network


def parse_subnet(text: str, field: str = "subnet") -> IPNet:
    """A CIDR network ("10.89.0.0/24"); a host address with prefix is refused, naming the fix."""
    text = text.strip()
    if "/" not in text:
        raise ConfigError(field, f"{text!r} has no prefix length (e.g. {text}/24)")
    try:
        net = ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(field, f"{text!r} is not an IP network in CIDR form "
                                     "(e.g. 10.89.0.0/24)") from None
        raise ConfigError(field, f"{text} is not a network address (did you mean {loose}?)"
                          ) from None
    if net.num_addresses < 4:
        raise ConfigError(field, f"{text} is too small for containers (at most /30 or /126)")
    return net


def _addr(text: str, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ip_address(text.strip())
    except ValueError:
        raise ConfigError(field, f"{text!r} is not an IP address") from None


def check_requested(net: Network, requested: Iterable[str],
                    field: str = "ip") -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The requested addresses, each an address inside one of net's subnets (else one error
    naming the address, the network and its subnets)."""
    want = [_addr(r, field) for r in requested]
    subnets = [ip_network(s.subnet) for s in net.subnets]
    for w in want:
        if not any(w.version == n.version and w in n for n in subnets):
            cidrs = ", ".join(str(n) for n in subnets)
            raise ConfigError(field, f"{w} is outside the subnets of network {net.name} "
                                     f"({cidrs})")
    return want


def plan_subnet(subnet: str, gateway: str | None = None, ip_range: str | None = None,
                *, internal: bool = False) -> Subnet:
    """Validate one subnet with its gateway (default: first host) and lease range."""
    net = parse_subnet(subnet)
    gw = None
    if gateway:
        g = _addr(gateway, "gateway")
        if g not in net:
            raise ConfigError("gateway", f"{gateway} is outside the subnet {net}")
        if g == net.network_address or (net.version == 4 and g == net.broadcast_address):
            raise ConfigError("gateway", f"{gateway} is the network or broadcast address of {net}")
        gw = str(g)
    else:  # internal networks keep a gateway address too: aardvark-dns listens there
        gw = str(net.network_address + 1)
    rng = None
    if ip_range:
        r = parse_subnet(ip_range, "ip-range")
        if r.version != net.version or not r.subnet_of(net):  # type: ignore[arg-type]
            raise ConfigError("ip-range", f"{ip_range} is not inside the subnet {net}")
        rng = str(r)
    return Subnet(subnet=str(net), gateway=gw, ip_range=rng)


def check_overlap(subnets: Iterable[str], others: Mapping[str, Iterable[str]]) -> None:
    """Refuse a subnet that overlaps one of ``others`` ({owner: [cidr]}), naming the owner."""
    for s in subnets:
        a = ip_network(s)
        for owner, theirs in others.items():
            for t in theirs:
                b = ip_network(t, strict=False)
                if a.version == b.version and a.overlaps(b):
                    raise ConfigError("subnet", f"{s} overlaps {t} of {owner}")


def pick_free_subnet(pool: str, prefixlen: int, taken: Iterable[str], start: int = 0) -> str:
    """A /prefixlen in pool that overlaps nothing in taken (networks, host routes), scanning from
    candidate number ``start`` (mod the count; callers hash their root in so roots spread out)."""
    used = [ip_network(t, strict=False) for t in taken]
    cands: list[IPv4Network | IPv6Network] = list(ip_network(pool).subnets(new_prefix=prefixlen))
    k = start % len(cands)
    for cand in cands[k:] + cands[:k]:
        if not any(cand.version == u.version and cand.overlaps(u) for u in used):
            return str(cand)
    raise ConfigError("subnet", f"no free /{prefixlen} left in the pool {pool}; pass --subnet")


def ula_subnet(seed: str) -> str:
    """A unique-local /64 (fdXX:XXXX:XXXX:XXXX::/64) derived from a network id."""
    h = int(seed[:14].ljust(14, "0"), 16)
    return str(IPv6Network(((0xFD << 120) | (h << 64), 64)))


class Leases:
    """{network name: {ip: owner}}; owners are container ids (or "vm-<id>")."""

    def __init__(self, data: dict[str, dict[str, str]], last: dict[str, str] | None = None) -> None:
        self.data = data
        #: {network: last address handed out}: the next search starts after it (Docker's serial
        #: allocation), so a freed address is not reused at once while peers' ARP caches still
        #: map it to the old owner's MAC
        self.last = dict(last or {})

    def owners(self) -> set[str]:
        return {o for ips in self.data.values() for o in ips.values()}

    def of(self, network: str, owner: str) -> list[str]:
        return [ip for ip, o in self.data.get(network, {}).items() if o == owner]

    def members(self, network: str) -> set[str]:
        return set(self.data.get(network, {}).values())

    def allocate(self, net: Network, owner: str, requested: Iterable[str] = ()) -> list[str]:
        """One address per subnet: the requested one (checked) or the first free in its range."""
        table = self.data.setdefault(net.name, {})
        want = check_requested(net, requested)
        subnets = [(ip_network(s.subnet), s) for s in net.subnets]
        got: list[str] = []
        for n, s in subnets:
            mine = [w for w in want if w.version == n.version and w in n]
            if mine:
                ip = mine[0]
                reserved = {n.network_address, s.gateway and ip_address(s.gateway)}
                if n.version == 4:
                    reserved.add(n.broadcast_address)
                if ip in reserved:
                    raise ConfigError("ip", f"{ip} is reserved in {n} "
                                            "(network, gateway or broadcast)")
                holder = table.get(str(ip))
                if holder is not None and holder != owner:
                    raise ConfigError("ip", f"{ip} is already taken on network {net.name} "
                                            f"by {holder[:12]}")
                got.append(str(ip))
            else:
                got.append(str(self._first_free(net.name, n, s, table,
                                                self.last.get(f"{net.name} {n}"))))
                self.last[f"{net.name} {n}"] = got[-1]
        for a in got:
            table[a] = owner
        return got

    @staticmethod
    def _first_free(name: str, n: IPNet, s: Subnet, table: dict[str, str],  # type: ignore[no-untyped-def]
                    after: str | None = None):
        rng = ip_network(s.ip_range) if s.ip_range else n
        skip = {n.network_address}
        if s.gateway:
            skip.add(ip_address(s.gateway))
        last = n.broadcast_address if n.version == 4 else None
        start = int(rng.network_address)
        end = int(rng.broadcast_address)
        first = start
        if after is not None:
            with contextlib.suppress(ValueError):
                a = int(ip_address(after))
                if start <= a < end:
                    first = a + 1
        for i in itertools.chain(range(first, min(end, first + 65536) + 1),
                                 range(start, min(first, start + 65536))):
            ip = ipaddress.ip_address(i) if n.version == 4 else ipaddress.IPv6Address(i)
            if ip in skip or ip == last or str(ip) in table:
                continue
            return ip
        raise ConfigError("ip", f"network {name} has no free address left in {rng}")

    def release(self, network: str, owner: str) -> list[str]:
        table = self.data.get(network, {})
        gone = [ip for ip, o in table.items() if o == owner]
        for ip in gone:
            del table[ip]
        if not table:
            self.data.pop(network, None)
        return gone

    def release_owner(self, owner: str) -> None:
        for net in list(self.data):
            self.release(net, owner)
