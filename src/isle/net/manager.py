"""NetworkManager: the one object the engine and the VM layer call for networks.

    nm = NetworkManager(root=settings.root + "/networks", runroot=settings.runroot + "/networks")
    nm.create("web", subnet="10.89.5.0/24")
    ns = nm.create_netns(cid)                        # the runtime joins this netns (OCI path)
    att = nm.connect(cid, ns, [("web", {"aliases": ["db"]})], ports=parse_publish("8080:80"))
    files = nm.render_etc(cid, hostname="c1")        # {"/etc/hosts": ..., ...}
    nm.teardown(cid)                                 # idempotent; also after a crash
    nm.gc(live_ids)                                  # undo everything of ids not in live_ids

Every change runs under one lock per root. A container's record is written before netavark runs,
so a crash at any point leaves something teardown/gc can undo; a failed connect undoes itself.
"""

from __future__ import annotations

import builtins
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from isle.errors import (
    AlreadyExists,
    CommandError,
    ConfigError,
    InvalidState,
    IsleError,
    NotFound,
    Unsupported,
)
from isle.net import etc, firewall, ipam, links, netns, slirp, sysctl
from isle.net import ports as portlib
from isle.net.netavark import AARDVARK, NETAVARK, Netavark
from isle.net.store import Store, check_name
from isle.net.types import (
    Attachment,
    Network,
    NetworkAttachment,
    PortMapping,
    Subnet,
    TapAttachment,
)
from isle.sys import proc
from isle.sys.fs import read_text

__all__ = ["NetworkManager", "DEFAULT_SUBNET", "DEFAULT_BRIDGE", "SUBNET_POOL"]

#: off podman's 10.88/16, docker's 172.17/16 and this host's routes
DEFAULT_SUBNET = "10.77.0.0/16"
DEFAULT_BRIDGE = "isle0"
PRIVATE_DEFAULT_POOL = "10.79.0.0/16"   # default networks of other roots (tests): a /24 each
SYSTEM_ROOTS = ("/var/lib/isle/networks",
                os.path.join(os.path.expanduser("~"), ".local", "share", "isle", "networks"))
SUBNET_POOL = "10.78.0.0/15"        # user networks without --subnet get a free /24 from here
NetSpec = str | tuple[str, dict[str, Any]]
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


class NetworkManager:
    def __init__(self, root: str, runroot: str, *, default_name: str = "bridge",
                 default_subnet: str | None = None, default_bridge: str | None = None,
                 pool: str = SUBNET_POOL, netavark: str = NETAVARK,
                 aardvark: str = AARDVARK) -> None:
        self.store = Store(root, runroot)
        self.default_name = default_name
        # the system root's default network is isle0 on 10.77.0.0/16; any other root (tests,
        # --root) gets its own bridge and a free /24, so roots never share a bridge or addresses
        system = os.path.abspath(root) in SYSTEM_ROOTS
        self._root_tag = hashlib.sha256(self.store.root.encode()).hexdigest()
        self.default_subnet = default_subnet or (DEFAULT_SUBNET if system else None)
        self.default_bridge = default_bridge or (DEFAULT_BRIDGE if system
                                                 else f"isle{self._root_tag[:6]}d")
        self.pool = pool
        self.nv = Netavark(self.store.netavark_dir, netavark, aardvark)
        #: "isle" + 4 hex of this root + "t": taps of another root are never touched by gc
        self._tap_prefix = "isle" + hashlib.sha256(self.store.root.encode()).hexdigest()[:4] + "t"
        self.sysctls = sysctl.HostSysctls()

    # networks ------------------------------------------------------------------------------
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
            self._ensure_default()
            if self.store.network(name):
                raise AlreadyExists(f"network {name} already exists")
            net = self._plan(name, _seq(subnet), _seq(gateway), _seq(ip_range), internal, ipv6,
                             labels or {}, options=opts)
            self.store.save_network(net)
            return net

    def _plan(self, name: str, subnets: list[str], gateways: list[str], ranges: list[str],
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
            pool = PRIVATE_DEFAULT_POOL if default else self.pool
            start = int(hashlib.sha256(f"{self.store.root}:{name}".encode()).hexdigest()[:8], 16)
            subnets = [ipam.pick_free_subnet(pool, 24, taken, start=start)] + subnets
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

    def _ensure_default(self) -> None:
        if self.store.network(self.default_name) is None:
            nid = hashlib.sha256(f"{self.store.root}:{self.default_name}".encode()).hexdigest()
            subnets = [self.default_subnet] if self.default_subnet else []
            try:
                net = self._plan(self.default_name, subnets, [], [], False, False, {}, nid=nid,
                                 bridge=self.default_bridge, default=True)
            except ConfigError:   # the usual subnet is taken (a host route): a free /24 instead
                net = self._plan(self.default_name, [], [], [], False, False, {}, nid=nid,
                                 bridge=self.default_bridge, default=True)
            self.store.save_network(net)

    def _get(self, name: str) -> Network:
        if name == self.default_name:
            self._ensure_default()
        net = self.store.network(check_name(name))
        if net is None:
            raise NotFound(f"network {name} not found")
        return net

    def list(self) -> list[Network]:
        with self.store.lock():
            self._ensure_default()
            return self.store.networks()

    def inspect(self, name: str) -> dict[str, Any]:
        """The definition plus its members: {id: {name, interface, ips, mac, aliases}}."""
        with self.store.lock():
            net = self._get(name)
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
            net = self._get(name)
            if net.default:
                raise InvalidState(f"network {name} is the default network and cannot be removed")
            members = self._members(name)
            if members:
                raise InvalidState(f"network {name} has {len(members)} connected container(s): "
                                   + ", ".join(sorted(m[:12] for m in members)))
            self._deactivate(net)
            self.store.delete_network(name)

    def prune(self) -> builtins.list[str]:
        """Remove every non-default network without members; returns their names."""
        gone = []
        with self.store.lock():
            for net in self.store.networks():
                if not net.default and not self._members(net.name):
                    self._deactivate(net)
                    self.store.delete_network(net.name)
                    gone.append(net.name)
        return gone

    def _members(self, name: str) -> set[str]:
        recs = {r["id"] for r in self.store.records() if name in r["networks"]}
        return recs | self.store.leases().members(name)

    # namespaces and connections ----------------------------------------------------------------
    def create_netns(self, container_id: str) -> str | None:
        """A persistent netns for the container (loopback up), under runroot; reused if present.

        None when not root: a rootless container's netns must belong to its user namespace, so
        the runtime makes it and the engine then calls ``connect_slirp(id, pid_of_init)``.
        """
        if os.geteuid() != 0:
            return None
        path = self.store.netns_path(container_id)
        if netns.is_netns(path):
            return path
        if os.path.exists(path):
            netns.remove(path)
        return netns.create(path)

    def connect(self, container_id: str, ns_path: str, networks: Sequence[NetSpec] = ("bridge",),
                ports: Sequence[PortMapping] = (), *, name: str | None = None,
                hostname: str | None = None, dns: Sequence[str] = ()) -> Attachment:
        """Attach the namespace to networks (first = primary, which carries the ports).

        networks: names or (name, {"ip": "10.89.0.5" | [..], "aliases": [..], "mac": ".."}).
        ports with host_port 0 get a random free host port; the result says which.
        """
        specs = [(n, {}) if isinstance(n, str) else (n[0], dict(n[1] or {})) for n in networks]
        if not specs:
            raise ConfigError("network", "no network given")
        if not self.nv.available():
            raise Unsupported(f"{self.nv.binary} is missing: apt-get install netavark aardvark-dns "
                              "(or use connect_slirp)")
        for d in dns:
            etc.render_resolv(host_resolv="", dns=[d])     # validates the address
        with self.store.lock():
            rec = self.store.record(container_id) or {
                "id": container_id, "name": name or hostname or container_id[:12],
                "ns_path": ns_path, "networks": {}, "ports": [], "dns": list(dns)}
            if rec["networks"] and rec["ns_path"] != ns_path:
                raise InvalidState(
                    f"container {container_id[:12]} is attached via {rec['ns_path']}")
            rec["ns_path"] = ns_path
            nets = [(self._get(n), o) for n, o in specs]
            seen: set[str] = set()
            for net, _ in nets:
                if net.name in rec["networks"] or net.name in seen:
                    raise AlreadyExists(f"container {container_id[:12]} is already connected "
                                        f"to network {net.name}")
                seen.add(net.name)
            resolved = self._plan_ports(container_id, rec, nets[0][0], ports)
            return self._connect(rec, nets, resolved)

    def _plan_ports(self, cid: str, rec: dict[str, Any], primary: Network,
                    ports: Sequence[PortMapping]) -> builtins.list[PortMapping]:
        if not ports:
            return []
        if rec["networks"]:
            raise InvalidState("ports can only be published when the container is first connected")
        if primary.internal:
            raise ConfigError("publish",
                              f"network {primary.name} is internal: ports cannot be published")
        for pm in ports:
            if pm.host_ip and ipaddress.ip_address(pm.host_ip) == ipaddress.IPv6Address("::1"):
                raise ConfigError("publish", f"host address [::1] ({pm}): the kernel does not "
                                  "forward IPv6 loopback traffic to another namespace (there is no "
                                  "route_localnet for IPv6); publish on 127.0.0.1, or on the "
                                  "host's IPv6 addresses ('' or '[::]')")
            if pm.host_ip and ":" in pm.host_ip and not primary.ipv6:
                raise ConfigError("publish", f"host address [{pm.host_ip}] is IPv6 but network "
                                  f"{primary.name} has no IPv6 subnet (create it with --ipv6)")
        taken = [PortMapping.from_dict(p) for r in self.store.records() if r["id"] != cid
                 for p in r.get("ports", [])]
        return portlib.claim(list(ports), taken)

    def _connect(self, rec: dict[str, Any], nets: builtins.list[tuple[Network, dict[str, Any]]],
                 ports: builtins.list[PortMapping]) -> Attachment:
        cid = rec["id"]
        added: list[str] = []
        try:
            for i, (net, o) in enumerate(nets):
                leases = self.store.leases()
                want = o.get("ip") or o.get("ips") or []
                ips = leases.allocate(net, cid, [want] if isinstance(want, str) else want)
                self.store.save_leases(leases)
                self._activate(net)                  # isle's rules before the first veth
                iface = _next_iface(rec["networks"])
                aliases = list(o.get("aliases") or [])
                if net.dns_enabled and cid[:12] not in aliases and cid[:12] != rec["name"]:
                    aliases.append(cid[:12])
                pm = ports if i == 0 else []
                opts = self.nv.options(container_id=cid, name=rec["name"], net=net, interface=iface,
                                       ips=ips, aliases=aliases, mac=o.get("mac"), ports=pm,
                                       dns_servers=rec.get("dns") or [])
                rec["networks"][net.name] = {"interface": iface, "ips": ips, "aliases": aliases,
                                             "options": opts, "state": "setting-up"}
                if pm:
                    rec["ports"] = [p.to_dict() for p in pm]
                added.append(net.name)
                self.store.save_record(rec)          # before netavark: a crash stays undoable
                status = self.nv.setup(rec["ns_path"], opts)
                if pm:
                    self._sync_localnet(net)
                rec["networks"][net.name].update(_from_status(status, iface))
                rec["networks"][net.name]["host_veth"] = _host_peer(rec["ns_path"], iface)
                rec["networks"][net.name]["state"] = "ready"
                self.store.save_record(rec)
        except BaseException:
            for n in reversed(added):
                self._teardown_one(rec, n, strict=False)
            leases = self.store.leases()             # a lease taken just before the failure
            for net, _ in nets:
                if net.name not in rec["networks"]:
                    leases.release(net.name, cid)
            self.store.save_leases(leases)
            if rec["networks"]:
                self.store.save_record(rec)
            else:
                self.store.delete_record(cid)
            raise
        return self._attachment(rec)

    def _teardown_one(self, rec: dict[str, Any], name: str, strict: bool = True) -> None:
        """Undo one network of a record (netavark teardown), release its leases, drop the entry.

        If netavark cannot finish, the entry and its leases stay so a later teardown/gc retries.
        """
        ent = rec["networks"][name]
        try:
            self._nv_teardown(rec["ns_path"], ent["options"], ent["interface"],
                              ent.get("host_veth"))
        except CommandError:
            ent["state"] = "teardown-failed"
            if strict:
                raise
            return
        leases = self.store.leases()
        leases.release(name, rec["id"])
        self.store.save_leases(leases)
        del rec["networks"][name]
        net = self.store.network(name)
        if net is not None and not leases.members(name):
            self.nv.drop_empty_chains(net)
            self._deactivate(net)
        elif net is not None and ent["options"].get("port_mappings"):
            self._sync_localnet(net, exclude=rec["id"])
        if ent["options"].get("port_mappings"):
            rec["ports"] = []

    def _nv_teardown(self, ns_path: str, opts: dict[str, Any], iface: str,
                     peer: str | None = None) -> None:
        """netavark teardown, converging from any half-made state.

        A gone netns is replaced by a temporary one with a stand-in interface. If netavark cannot
        undo (a setup killed half-way leaves rules it cannot find), redo the setup completely and
        undo that: netavark's setup is additive, so this reaches a state its teardown fully undoes.
        """
        tmp = None
        if not netns.is_netns(ns_path):
            # the kernel destroys a dead netns (and the veth into it) asynchronously: delete the
            # host end now, or netavark still sees a member and keeps the bridge and its rules
            (info,) = opts["network_info"].values()
            if peer and links.master_of(peer) == info["network_interface"]:
                links.delete_link(peer)
            tmp = os.path.join(self.store.netns_dir,
                               f".teardown-{os.getpid()}-{secrets.token_hex(4)}")
            netns.create(tmp)
            _stand_in(tmp, iface)
        ns = tmp or ns_path
        try:
            try:
                self.nv.teardown(ns, opts)
            except CommandError:
                listing = netns.run_in(ns, [proc.IP, "-o", "link"]).decode().replace("@", ":")
                if f" {iface}:" in listing:
                    netns.run_in(ns, [proc.IP, "link", "del", iface])
                self.nv.setup(ns, opts)
                self.nv.teardown(ns, opts)
        finally:
            if tmp:
                netns.remove(tmp)

    def disconnect(self, container_id: str, network: str) -> None:
        """Detach from one network (its published ports go with it if it was the primary)."""
        with self.store.lock():
            rec = self.store.record(container_id)
            if rec is None or network not in rec["networks"]:
                raise NotFound(
                    f"container {container_id[:12]} is not connected to network {network}")
            if network == "slirp4netns" and rec.get("slirp"):
                slirp.stop_for(rec)
                rec["ports"] = []
            else:
                self._teardown_one(rec, network)
            if rec["networks"]:
                self.store.save_record(rec)
            else:
                self.store.delete_record(container_id)

    def teardown(self, container_id: str) -> None:
        """Undo every network, tap, lease and the netns isle made for the container. Idempotent."""
        with self.store.lock():
            errors = self._teardown_all(container_id)
        if errors:
            raise IsleError("network teardown incomplete (gc retries): " + "; ".join(errors))

    def _teardown_all(self, cid: str) -> builtins.list[str]:
        errors: list[str] = []
        rec = self.store.record(cid)
        if rec is not None:
            if rec.get("tap"):
                links.delete_link(rec["tap"])
            if rec.get("slirp"):
                slirp.stop_for(rec)
            for name in list(rec["networks"]):
                try:
                    self._teardown_one(rec, name)
                except CommandError as exc:
                    errors.append(f"{cid[:12]} on {name}: {exc}")
                self.store.save_record(rec)
            if errors:        # keep what could not be undone (record, leases, netns) for a retry
                return errors
            self.store.delete_record(cid)
        leases = self.store.leases()
        leases.release_owner(cid)
        self.store.save_leases(leases)
        path = self.store.netns_path(cid)
        if os.path.lexists(path):
            netns.remove(path)
        return errors

    def gc(self, live: Iterable[str]) -> dict[str, builtins.list[str]]:
        """Tear down every container/VM whose id is not in live; delete orphaned isle taps."""
        alive = set(live)
        removed: list[str] = []
        errors: list[str] = []
        with self.store.lock():
            ids = ({r["id"] for r in self.store.records()} | self.store.leases().owners()
                   | {i for i in self.store.netns_ids() if not i.startswith(".")})
            for cid in sorted(ids):
                if cid in alive or (cid.startswith("vm-") and cid[3:] in alive):
                    continue
                errors += self._teardown_all(cid)
                removed.append(cid)
            for i in self.store.netns_ids():
                if i.startswith(".teardown-"):
                    netns.remove(os.path.join(self.store.netns_dir, i))
            taps = {r.get("tap") for r in self.store.records()}
            for n in links.link_names():       # tap names carry this root's tag
                if n.startswith(self._tap_prefix) and n not in taps:
                    links.delete_link(n)
                    removed.append(n)
            # isle's nft tables of networks left without members (a crash between setup steps)
            by_bridge = {n.bridge: n for n in self.store.networks()}
            for b in self.store.fw_bridges():
                net = by_bridge.get(b)
                if net is None or not self._members(net.name):
                    self._deactivate(net or Network(name="-", id="-", bridge=b))
            self.sysctls.release(None)
        return {"removed": removed, "errors": errors}

    # isle's own host state per network: nft table, route_localnet, forwarding sysctls ---------
    def _activate(self, net: Network) -> None:
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
        firewall.apply(net.bridge, net.isolate)
        try:
            self.sysctls.hold(net.bridge, net.ipv6)
            prev = (st or {}).get("route_localnet") or sysctl.read(
                "net/ipv4/conf/default/route_localnet") or "0"
            self.store.save_fw_state(net.bridge, {"isolate": net.isolate, "route_localnet": prev,
                                                  "boot": boot})
        except BaseException:
            firewall.remove(net.bridge)
            raise

    def _deactivate(self, net: Network) -> None:
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

    def _sync_localnet(self, net: Network, exclude: str | None = None) -> None:
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

    # reading back ----------------------------------------------------------------------------
    def attachment(self, container_id: str) -> Attachment | None:
        rec = self.store.record(container_id)
        return self._attachment(rec) if rec else None

    def hosts_ips(self, container_id: str) -> builtins.list[str]:
        """The addresses /etc/hosts names the container by (see ``render_etc``)."""
        att = self.attachment(container_id)
        return _hosts_ips(att) if att else []

    def port(self, container_id: str) -> builtins.list[PortMapping]:
        rec = self.store.record(container_id)
        return [PortMapping.from_dict(p) for p in (rec or {}).get("ports", [])]

    def _attachment(self, rec: dict[str, Any]) -> Attachment:
        nets = {k: NetworkAttachment(network=k, interface=v["interface"], ips=tuple(v["ips"]),
                                     prefixlens=tuple(v.get("prefixlens", ())),
                                     gateways=tuple(v.get("gateways", ())), mac=v.get("mac", ""),
                                     aliases=tuple(v["aliases"]),
                                     dns_servers=tuple(v.get("dns_servers", ())))
                for k, v in rec["networks"].items()}
        return Attachment(container_id=rec["id"], ns_path=rec["ns_path"], networks=nets,
                          ports=tuple(PortMapping.from_dict(p) for p in rec.get("ports", [])))

    def render_etc(self, container_id: str, *, hostname: str | None = None, dns: Sequence[str] = (),
                   dns_search: Sequence[str] = (), dns_options: Sequence[str] = (),
                   add_hosts: Sequence[str] = (), mode: str = "bridge",
                   host_resolv: str | None = None, host_hosts: str | None = None) -> dict[str, str]:
        """/etc/hosts, /etc/resolv.conf, /etc/hostname text for the container (writes nothing).

        mode: "bridge" (its networks), "none", or "host" (the host's files plus extras).
        """
        if host_resolv is None:
            host_resolv = read_text("/etc/resolv.conf")
        rec = self.store.record(container_id) if mode == "bridge" else None
        att = self._attachment(rec) if rec else None
        hn = hostname or container_id[:12]
        ips: list[str] = []
        names = [rec["name"]] if rec else []
        net_dns: list[str] = []
        if att and att.networks:
            ips = _hosts_ips(att)
            for n in att.networks.values():
                net_dns += [d for d in n.dns_servers if d not in net_dns]
        gw = att.gateway if att else None
        extra = [etc.parse_add_host(h, gw) for h in add_hosts]
        if mode != "host":
            base: str | None = None
        else:
            base = host_hosts if host_hosts is not None else read_text("/etc/hosts")
        hosts = etc.render_hosts(hostname=hn, ips=ips, names=names, add_hosts=extra, base=base)
        resolv = etc.render_resolv(host_resolv=host_resolv, network_dns=net_dns, dns=dns,
                                   dns_search=dns_search, dns_options=dns_options,
                                   host_network=mode == "host")
        return {"/etc/hosts": hosts, "/etc/resolv.conf": resolv, "/etc/hostname": hn + "\n"}

    # rootless and VMs (bodies in rootless.py and vmtap.py) ------------------------------------
    def connect_slirp(self, container_id: str, target: str | int, ports: Sequence[PortMapping] = (),
                      *, userns_path: str | None = None, name: str | None = None) -> Attachment:
        """User-mode networking (slirp4netns) for a netns path or a pid in it (rootless)."""
        from isle.net import rootless

        return rootless.connect_slirp(self, container_id, target, ports, userns_path=userns_path,
                                      name=name)

    def attach_tap(self, vm_id: str, network: str = "bridge", *, ip: str | None = None,
                   ports: Sequence[PortMapping] = (), name: str | None = None,
                   aliases: Sequence[str] = ()) -> TapAttachment:
        """A tap on the network's bridge with an address lease, DNS name and published ports."""
        from isle.net import vmtap

        return vmtap.attach_tap(self, vm_id, network, ip=ip, ports=ports, name=name,
                                aliases=aliases)

    def detach_tap(self, vm_id: str) -> None:
        self.teardown(f"vm-{vm_id}")


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


def _next_iface(nets: dict[str, Any]) -> str:
    used = {v["interface"] for v in nets.values()}
    i = 0
    while f"eth{i}" in used:
        i += 1
    return f"eth{i}"


def _hosts_ips(att: Attachment) -> list[str]:
    """Each network's IPv4 addresses (its IPv6 ones if it has none), the primary network first:
    Docker's /etc/hosts names the container once per network it is on."""
    out: list[str] = []
    for n in att.networks.values():
        v4 = [i for i in n.ips if ipaddress.ip_address(i).version == 4]
        out += [i for i in (v4 or n.ips) if i not in out]
    return out


def _from_status(status: dict[str, Any], iface: str) -> dict[str, Any]:
    inf = (status.get("interfaces") or {}).get(iface) or {}
    subs = inf.get("subnets") or []
    return {"mac": inf.get("mac_address", ""),
            "prefixlens": [int(s["ipnet"].split("/")[1]) for s in subs],
            "gateways": [s["gateway"] for s in subs if s.get("gateway")],
            "dns_servers": [str(d) for d in status.get("dns_server_ips") or []]}


def _stand_in(ns_path: str, iface: str) -> None:
    """An interface named iface for netavark to delete (a veth pair: no dummy driver everywhere)."""
    netns.run_in(ns_path, [proc.IP, "link", "add", iface, "type", "veth", "peer", "name",
                           "isle-standin"])


def _host_peer(ns_path: str, iface: str) -> str | None:
    """Name of the host end of the veth whose namespace end is iface ("eth0@if12" -> ifindex 12)."""
    try:
        out = netns.run_in(ns_path, [proc.IP, "-o", "link", "show", "dev", iface]).decode()
        idx = int(out.split("@if", 1)[1].split(":", 1)[0])
    except (CommandError, IndexError, ValueError):
        return None
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifindex") as f:
                if int(f.read()) == idx:
                    return name
        except (OSError, ValueError):
            continue
    return None
