"""Attachments: a container's (or VM's) network namespace on its networks through netavark,
with address leases, published ports and DNS names; teardown and gc undo them from any state."""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
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
from isle.net import etc, links, netns, slirp
from isle.net import ports as portlib
from isle.net.networks import Networks
from isle.net.types import Attachment, Network, NetworkAttachment, PortMapping
from isle.sys import proc

__all__ = ["Attacher", "NetSpec"]

NetSpec = str | tuple[str, dict[str, Any]]


class Attacher:
    """Connects namespaces to the networks of ``networks`` (its store holds the records)."""

    def __init__(self, networks: Networks) -> None:
        self.networks = networks
        self.store = networks.store
        self.nv = networks.nv

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
            nets = [(self.networks.get(n), o) for n, o in specs]
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
                self.networks.activate(net)                  # isle's rules before the first veth
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
                    self.networks.sync_localnet(net)
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
            with contextlib.suppress(Exception):  # a network activated for it, now unused
                self.networks.deactivate_unused()
            raise
        return self.to_attachment(rec)

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
            self.networks.deactivate(net)
        elif net is not None and ent["options"].get("port_mappings"):
            self.networks.sync_localnet(net, exclude=rec["id"])
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
        # a lease without a record (a connect killed in activate, before its record was saved)
        # was its network's last member: its table goes now, not with the next member's teardown
        self.networks.deactivate_unused()
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
                if n.startswith(self.networks.tap_prefix) and n not in taps:
                    links.delete_link(n)
                    removed.append(n)
            # isle's nft tables of networks left without members (a crash between setup steps)
            self.networks.deactivate_unused()
            self.networks.sysctls.release(None)
        return {"removed": removed, "errors": errors}

    def attachment(self, container_id: str) -> Attachment | None:
        rec = self.store.record(container_id)
        return self.to_attachment(rec) if rec else None

    def hosts_ips(self, container_id: str) -> builtins.list[str]:
        """The addresses /etc/hosts names the container by (see ``render_etc``)."""
        att = self.attachment(container_id)
        return hosts_ips_of(att) if att else []

    def port(self, container_id: str) -> builtins.list[PortMapping]:
        rec = self.store.record(container_id)
        return [PortMapping.from_dict(p) for p in (rec or {}).get("ports", [])]

    def to_attachment(self, rec: dict[str, Any]) -> Attachment:
        nets = {k: NetworkAttachment(network=k, interface=v["interface"], ips=tuple(v["ips"]),
                                     prefixlens=tuple(v.get("prefixlens", ())),
                                     gateways=tuple(v.get("gateways", ())), mac=v.get("mac", ""),
                                     aliases=tuple(v["aliases"]),
                                     dns_servers=tuple(v.get("dns_servers", ())))
                for k, v in rec["networks"].items()}
        return Attachment(container_id=rec["id"], ns_path=rec["ns_path"], networks=nets,
                          ports=tuple(PortMapping.from_dict(p) for p in rec.get("ports", [])))


def _next_iface(nets: dict[str, Any]) -> str:
    used = {v["interface"] for v in nets.values()}
    i = 0
    while f"eth{i}" in used:
        i += 1
    return f"eth{i}"


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


def hosts_ips_of(att: Attachment) -> list[str]:
    """Each network's IPv4 addresses (its IPv6 ones if it has none), the primary network first:
    Docker's /etc/hosts names the container once per network it is on."""
    out: list[str] = []
    for n in att.networks.values():
        v4 = [i for i in n.ips if ipaddress.ip_address(i).version == 4]
        out += [i for i in (v4 or n.ips) if i not in out]
    return out
