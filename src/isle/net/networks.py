"""Networks: define, list, inspect and remove bridge networks, and isle's own host state per
network (its nft table, route_localnet, forwarding sysctls) while a network has members."""

from __future__ import annotations

import builtins
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from isle.errors import AlreadyExists, ConfigError, InvalidState, NotFound, Unsupported
from isle.net import firewall, ipam, links, sysctl
from isle.net.netavark import AARDVARK, NETAVARK, Netavark
from isle.net.store import Store, check_name
from isle.net.types import Network, Subnet

__all__ = ["Networks", "check_options", "NET_OPTIONS", "DEFAULT_SUBNET", "DEFAULT_BRIDGE",
           "SUBNET_POOL"]

#: off podman's 10.88/16, docker's 172.17/16 and this host's routes
DEFAULT_SUBNET = "10.77.0.0/16"
DEFAULT_BRIDGE = "isle0"
#: default networks of other roots (tests, --root): a free /16 each, as Docker's default bridge
#: (254 containers was a limit no Docker user expects); a /24 from the old pool if none is free
PRIVATE_DEFAULT_POOL = "10.128.0.0/9"
PRIVATE_DEFAULT_FALLBACK = "10.79.0.0/16"
SYSTEM_ROOTS = ("/var/lib/isle/networks",
                os.path.join(os.path.expanduser("~"), ".local", "share", "isle", "networks"))
SUBNET_POOL = "10.78.0.0/15"        # user networks without --subnet get a free /24 from here
#: ``isle network create --opt KEY=VALUE``: the options isle knows, with their values
NET_OPTIONS = {"isolate": ("true", "false")}


def check_options(options: dict[str, str] | None) -> dict[str, str]:
    """Validated network options; an unknown key or value is refused, naming it."""
    out: dict[str, str] = {}
    for k, v in (options or {}).items():
        if k not in NET_OPTIONS:
            known = ", ".join(f"{o}={'|'.join(vs)}" for o, vs in NET_OPTIONS.items())
            raise ConfigError("opt", f"unknown network option {k!r} (known: {known})")
        val = str(v).strip().lower()
        if val not in NET_OPTIONS[k]:
            raise ConfigError("opt", f"{k}={v!r}: want one of {', '.join(NET_OPTIONS[k])}")
        out[k] = val
    return out


class Networks:
    """The networks of one root (its Store), and their host state."""

    def __init__(self, root: str, runroot: str, *, default_name: str = "bridge",
                 default_subnet: str | None = None, default_bridge: str | None = None,
                 pool: str = SUBNET_POOL, netavark: str = NETAVARK,
                 aardvark: str = AARDVARK) -> None:
        self.store = Store(root, runroot)
        self.default_name = default_name
        # the system root's default network is isle0 on 10.77.0.0/16; any other root (tests,
        # --root) gets its own bridge and a free /24, so roots never share a bridge or addresses
        system = os.path.abspath(root) in SYSTEM_ROOTS
        root_tag = hashlib.sha256(self.store.root.encode()).hexdigest()
        self.default_subnet = default_subnet or (DEFAULT_SUBNET if system else None)
        self.default_bridge = default_bridge or (DEFAULT_BRIDGE if system
                                                 else f"isle{root_tag[:6]}d")
        self.pool = pool
        self.nv = Netavark(self.store.netavark_dir, netavark, aardvark)
        #: "isle" + 4 hex of this root + "t": taps of another root are never touched by gc
        self.tap_prefix = "isle" + root_tag[:4] + "t"
        self.sysctls = sysctl.HostSysctls()

    def create(self, name: str, subnet: str | Sequence[str] | None = None,
               gateway: str | Sequence[str] | None = None,
               ip_range: str | Sequence[str] | None = None,
               internal: bool = False, labels: dict[str, str] | None = None, ipv6: bool = False,
               driver: str = "bridge", options: dict[str, str] | None = None) -> Network:
        """A new bridge network; bad or overlapping subnets are refused and nothing is written.

        options: ``{"isolate": "false"}`` lets it reach the other networks that say so too."""
        check_name(name)
        opts = check_options(options)
        if name in ("none", "host", "default") or name.startswith("container:"):
            raise ConfigError("network", f"{name!r} is a reserved network mode name")
        if driver != "bridge":
            raise Unsupported(f"network driver {driver!r}: only 'bridge' is supported")
        with self.store.lock():
            self.ensure_default()
            if self.store.network(name):
                raise AlreadyExists(f"network {name} already exists")
            net = self.plan(name, _seq(subnet), _seq(gateway), _seq(ip_range), internal, ipv6,
                             labels or {}, options=opts)
            self.store.save_network(net)
            return net

    def plan(self, name: str, subnets: list[str], gateways: list[str], ranges: list[str],
              internal: bool, ipv6: bool, labels: dict[str, str], *, nid: str | None = None,
              bridge: str | None = None, default: bool = False,
              options: dict[str, str] | None = None) -> Network:
        nid = nid or secrets.token_hex(32)
        others = {f"network {n.name}": [s.subnet for s in n.subnets] for n in self.store.networks()}
        ours = {s for v in others.values() for s in v}
        others["a host route"] = [r for r in links.route_cidrs() if r not in ours
                                  and not r.startswith("fe80:")]
        if not any(":" not in s for s in subnets):     # IPv4 always, as Docker does
            taken = [s for v in others.values() for s in v]
            start = int(hashlib.sha256(f"{self.store.root}:{name}".encode()).hexdigest()[:8], 16)
            if default:
                try:
                    pick = ipam.pick_free_subnet(PRIVATE_DEFAULT_POOL, 16, taken, start=start)
                except ConfigError:
                    pick = ipam.pick_free_subnet(PRIVATE_DEFAULT_FALLBACK, 24, taken, start=start)
            else:
                pick = ipam.pick_free_subnet(self.pool, 24, taken, start=start)
            subnets = [pick] + subnets
        if ipv6 and not any(":" in s for s in subnets):
            subnets.append(ipam.ula_subnet(nid))
        if len(gateways) > len(subnets) or len(ranges) > len(subnets):
            raise ConfigError("gateway", "more --gateway/--ip-range values than subnets")
        planned: list[Subnet] = []
        for i, s in enumerate(subnets):
            planned.append(ipam.plan_subnet(s, gateways[i] if i < len(gateways) else None,
                                            ranges[i] if i < len(ranges) else None,
                                            internal=internal))
        cidrs = [p.subnet for p in planned]
        for i, c in enumerate(cidrs):
            ipam.check_overlap([c], {"another subnet of this network": cidrs[:i]})
        ipam.check_overlap(cidrs, others)
        return Network(name=name, id=nid, bridge=bridge or f"isle-{nid[:8]}",
                       subnets=tuple(planned),
                       internal=internal, ipv6=any(":" in c for c in cidrs),
                       dns_enabled=not default, default=default, labels=dict(labels),
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       options=dict(options or {}))

    def ensure_default(self) -> None:
        if self.store.network(self.default_name) is None:
            nid = hashlib.sha256(f"{self.store.root}:{self.default_name}".encode()).hexdigest()
            subnets = [self.default_subnet] if self.default_subnet else []
            try:
                net = self.plan(self.default_name, subnets, [], [], False, False, {}, nid=nid,
                                 bridge=self.default_bridge, default=True)
            except ConfigError:   # the usual subnet is taken (a host route): a free /24 instead
                net = self.plan(self.default_name, [], [], [], False, False, {}, nid=nid,
                                 bridge=self.default_bridge, default=True)
            self.store.save_network(net)

    def get(self, name: str) -> Network:
        if name == self.default_name:
            self.ensure_default()
        net = self.store.network(check_name(name))
        if net is None:
            raise NotFound(f"network {name} not found")
        return net

    def list(self) -> list[Network]:
        with self.store.lock():
            self.ensure_default()
            return self.store.networks()

    def inspect(self, name: str) -> dict[str, Any]:
        """The definition plus its members: {id: {name, interface, ips, mac, aliases}}."""
        with self.store.lock():
            net = self.get(name)
            members = {}
            for rec in self.store.records():
                n = rec["networks"].get(name)
                if n:
                    members[rec["id"]] = {"name": rec["name"], "interface": n["interface"],
                                          "ips": n["ips"], "mac": n.get("mac", ""),
                                          "aliases": n["aliases"], "tap": rec.get("tap")}
            return {**net.to_dict(), "containers": members}

    def remove(self, name: str) -> None:
        """Delete a network; refused while containers or VMs are connected to it."""
        with self.store.lock():
            net = self.get(name)
            if net.default:
                raise InvalidState(f"network {name} is the default network and cannot be removed")
            members = self.members(name)
            if members:
                raise InvalidState(f"network {name} has {len(members)} connected container(s): "
                                   + ", ".join(sorted(m[:12] for m in members)))
            self.deactivate(net)
            self.store.delete_network(name)

    def prune(self) -> builtins.list[str]:
        """Remove every non-default network without members; returns their names."""
        gone = []
        with self.store.lock():
            for net in self.store.networks():
                if not net.default and not self.members(net.name):
                    self.deactivate(net)
                    self.store.delete_network(net.name)
                    gone.append(net.name)
        return gone

    def members(self, name: str) -> set[str]:
        recs = {r["id"] for r in self.store.records() if name in r["networks"]}
        return recs | self.store.leases().members(name)

    def activate(self, net: Network) -> None:
        """Before netavark sets up a member of net: isle's nft table for its bridge (loopback
        guard, isolation) and the host sysctls netavark is about to change, recorded so they can
        be given back. Done once while the network has members (runroot/firewall/<bridge>.json);
        networks made before isle had these rules get them at their next connect."""
        st = self.store.fw_state(net.bridge)
        boot = sysctl.read("kernel/random/boot_id") or ""
        # applied in this boot and the bridge is up: the table is there (a stale record, from a
        # crash or a runroot that outlived a reboot, is applied again)
        if (st is not None and st.get("boot") == boot
                and os.path.exists(f"/sys/class/net/{net.bridge}")):
            return
        prev = (st or {}).get("route_localnet") or sysctl.read(
            "net/ipv4/conf/default/route_localnet") or "0"
        state = {"isolate": net.isolate, "route_localnet": prev, "boot": ""}
        # recorded before the table is made: a process killed in between leaves a record that
        # deactivate and gc find (a table made first and recorded after could be orphaned)
        self.store.save_fw_state(net.bridge, state)
        try:
            firewall.apply(net.bridge, net.isolate)
            self.sysctls.hold(net.bridge, net.ipv6)
            self.store.save_fw_state(net.bridge, dict(state, boot=boot))
        except BaseException:
            self.deactivate(net)
            raise

    def deactivate(self, net: Network) -> None:
        """After net's last member went (netavark then deletes the bridge): drop isle's table and
        give back the host sysctls no other isle network still needs. Idempotent."""
        st = self.store.fw_state(net.bridge)
        if st is None:
            return
        firewall.remove(net.bridge)
        key = sysctl.localnet_path(net.bridge)
        prev = str(st.get("route_localnet", "0"))
        if sysctl.read(key) not in (None, prev):      # the bridge outlived its members
            sysctl.write(key, prev)
        self.store.delete_fw_state(net.bridge)
        self.sysctls.release(net.bridge)

    def deactivate_unused(self) -> builtins.list[str]:
        """Drop isle's host state (``deactivate``) of every bridge whose network has no member
        left, or is gone; the caller holds the store lock. -> those bridges.

        A member's teardown cannot always know it was the last one: a CLI killed inside
        ``activate`` or before its record was written leaves a table and a lease but no record,
        and teardown then releases the lease alone (the table stayed, with no member to drop
        it). So every teardown and gc ends here, and decides from what is recorded."""
        bridges = self.store.fw_bridges()
        if not bridges:
            return []
        by_bridge = {n.bridge: n for n in self.store.networks()}
        used = {n for r in self.store.records() for n in r["networks"]}
        leases = self.store.leases()
        gone = []
        for b in bridges:
            net = by_bridge.get(b)
            if net is None or (net.name not in used and not leases.members(net.name)):
                self.deactivate(net or Network(name="-", id="-", bridge=b))
                gone.append(b)
        return gone

    def sync_localnet(self, net: Network, exclude: str | None = None) -> None:
        """route_localnet back to its value before netavark once no member of net publishes a
        port the host reaches on 127.0.0.1 (netavark sets it for any published port)."""
        st = self.store.fw_state(net.bridge)
        if st is None:
            return
        for r in self.store.records():
            if r["id"] == exclude:
                continue
            ent = r["networks"].get(net.name) or {}
            pms = (ent.get("options") or {}).get("port_mappings") or ()
            if any(_needs_localnet(p) for p in pms):
                return
        key = sysctl.localnet_path(net.bridge)
        prev = str(st.get("route_localnet", "0"))
        if sysctl.read(key) not in (None, prev):
            sysctl.write(key, prev)


def _seq(v: str | Sequence[str] | None) -> list[str]:
    if v is None or v == "":
        return []
    return [v] if isinstance(v, str) else list(v)


def _needs_localnet(pm: dict[str, Any]) -> bool:
    """A port the host reaches on 127.0.0.1 (published there, or on every address)."""
    host = pm.get("host_ip") or ""
    if not host:
        return True
    ip = ipaddress.ip_address(host)
    return ip.version == 4 and (ip.is_loopback or ip.is_unspecified)
