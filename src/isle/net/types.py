"""The network plan as data: networks, subnets, port mappings and what a connect produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Subnet", "Network", "PortMapping", "NetworkAttachment", "Attachment", "TapAttachment"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Subnet:
    subnet: str                      # "10.89.1.0/24" (a network address, strict)
    gateway: str | None = None       # None on a subnet of an internal network without gateway
    ip_range: str | None = None      # leases come from here ("10.89.1.128/25"), default: subnet

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": self.subnet, "gateway": self.gateway, "ip_range": self.ip_range}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Subnet:
        return cls(subnet=d["subnet"], gateway=d.get("gateway"), ip_range=d.get("ip_range"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    name: str
    id: str
    driver: str = "bridge"
    bridge: str = ""                 # host interface name, <= 15 chars
    subnets: tuple[Subnet, ...] = ()
    internal: bool = False
    ipv6: bool = False
    dns_enabled: bool = True         # Docker: no name resolution on the default network
    default: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""
    #: driver options (``--opt``): "isolate" ("true" unless "false"); see net/firewall.py
    options: dict[str, str] = field(default_factory=dict)

    @property
    def isolate(self) -> bool:
        """Cut off from every other isle network unless both say isolate=false (Docker's)."""
        return self.options.get("isolate", "true") != "false"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "id": self.id, "driver": self.driver, "bridge": self.bridge,
            "subnets": [s.to_dict() for s in self.subnets], "internal": self.internal,
            "ipv6": self.ipv6, "dns_enabled": self.dns_enabled, "default": self.default,
            "labels": dict(self.labels), "created": self.created, "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        return cls(
            name=d["name"], id=d["id"], driver=d.get("driver", "bridge"), bridge=d["bridge"],
            subnets=tuple(Subnet.from_dict(s) for s in d.get("subnets", [])),
            internal=bool(d.get("internal")), ipv6=bool(d.get("ipv6")),
            dns_enabled=bool(d.get("dns_enabled", True)), default=bool(d.get("default")),
            labels=dict(d.get("labels") or {}), created=d.get("created", ""),
            options={str(k): str(v) for k, v in (d.get("options") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class PortMapping:
    """host_ip:host_port -> container_port/proto, ``range`` consecutive ports;
    host_port 0 = random."""

    host_ip: str
    host_port: int
    container_port: int
    proto: str = "tcp"
    range: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "container_port": self.container_port, "proto": self.proto, "range": self.range}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortMapping:
        return cls(d.get("host_ip", ""), int(d["host_port"]), int(d["container_port"]),
                   d.get("proto", "tcp"), int(d.get("range", 1)))

    def __str__(self) -> str:
        def r(p: int) -> str:
            return f"{p}-{p + self.range - 1}" if self.range > 1 else str(p)
        host = f"{self.host_ip or '0.0.0.0'}:{r(self.host_port)}"
        return f"{r(self.container_port)}/{self.proto} -> {host}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkAttachment:
    network: str
    interface: str                   # inside the namespace: eth0, eth1, ...
    ips: tuple[str, ...]             # addresses, no prefix
    prefixlens: tuple[int, ...]
    gateways: tuple[str, ...]
    mac: str = ""
    aliases: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] = ()   # aardvark on the gateway when the network resolves names

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "interface": self.interface, "ips": list(self.ips),
                "prefixlens": list(self.prefixlens), "gateways": list(self.gateways),
                "mac": self.mac, "aliases": list(self.aliases),
                "dns_servers": list(self.dns_servers)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """What ``NetworkManager.connect`` set up for one container; the first network is primary."""

    container_id: str
    ns_path: str
    networks: dict[str, NetworkAttachment]
    ports: tuple[PortMapping, ...] = ()

    def _primary(self) -> NetworkAttachment | None:
        return next(iter(self.networks.values()), None)

    @property
    def ips(self) -> list[str]:
        return [ip for n in self.networks.values() for ip in n.ips]

    @property
    def ip(self) -> str | None:
        p = self._primary()
        return p.ips[0] if p and p.ips else None

    @property
    def gateway(self) -> str | None:
        p = self._primary()
        return p.gateways[0] if p and p.gateways else None

    @property
    def mac(self) -> str | None:
        p = self._primary()
        return p.mac if p else None

    def to_dict(self) -> dict[str, Any]:
        return {"container_id": self.container_id, "ns_path": self.ns_path,
                "networks": {k: v.to_dict() for k, v in self.networks.items()},
                "ports": [p.to_dict() for p in self.ports]}


@dataclass(frozen=True, slots=True, kw_only=True)
class TapAttachment:
    """A tap on a network's bridge for a VM: QEMU opens ``tap`` (``-netdev tap,ifname=...``)."""

    vm_id: str
    tap: str
    ip: str
    prefixlen: int
    mac: str
    gateway: str | None
    dns_servers: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Unpacks as (tap, ip, mac, gateway)."""
        return iter((self.tap, self.ip, self.mac, self.gateway))
