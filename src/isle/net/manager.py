"""NetworkManager: the one object the engine and the VM layer call for networks.

    nm = NetworkManager(root=settings.root + "/networks", runroot=settings.runroot + "/networks")
    nm.create("web", subnet="10.89.5.0/24")
    ns = nm.create_netns(cid)                        # the runtime joins this netns (OCI path)
    att = nm.connect(cid, ns, [("web", {"aliases": ["db"]})], ports=parse_publish("8080:80"))
    files = nm.render_etc(cid, hostname="c1")        # {"/etc/hosts": ..., ...}
    nm.teardown(cid)                                 # idempotent; also after a crash
    nm.gc(live_ids)                                  # undo everything of ids not in live_ids

It is the face of three collaborators: ``networks.Networks`` (definitions and their host
state), ``attach.Attacher`` (namespaces on networks, teardown, gc) and ``etc`` (the files).
Every change runs under one lock per root. A container's record is written before netavark runs,
so a crash at any point leaves something teardown/gc can undo; a failed connect undoes itself.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import Any

from isle.net import etc
from isle.net.attach import Attacher, NetSpec, hosts_ips_of
from isle.net.networks import (
    DEFAULT_BRIDGE,
    DEFAULT_SUBNET,
    NET_OPTIONS,
    SUBNET_POOL,
    Networks,
    check_options,
)
from isle.net.sysctl import HostSysctls
from isle.net.types import Attachment, Network, PortMapping, TapAttachment
from isle.sys.fs import read_text

__all__ = ["NetworkManager", "DEFAULT_SUBNET", "DEFAULT_BRIDGE", "SUBNET_POOL", "NET_OPTIONS",
           "check_options", "NetSpec"]


class NetworkManager:
    """Networks, attachments and /etc files of one root (see the module's example)."""

    def __init__(self, root: str, runroot: str, **options: Any) -> None:
        """options: Networks' (default_name, default_subnet, default_bridge, pool, netavark,
        aardvark)."""
        self.networks = Networks(root, runroot, **options)
        self.attacher = Attacher(self.networks)
        self.store = self.networks.store
        self.nv = self.networks.nv
        self.default_name = self.networks.default_name
        self._tap_prefix = self.networks.tap_prefix

    @property
    def sysctls(self) -> HostSysctls:
        """The host sysctls ledger (replaceable, e.g. a test's private state dir)."""
        return self.networks.sysctls

    @sysctls.setter
    def sysctls(self, value: HostSysctls) -> None:
        self.networks.sysctls = value

    # networks ------------------------------------------------------------------------------
    def create(self, name: str, *args: Any, **kw: Any) -> Network:
        """A new bridge network (``Networks.create``'s arguments: subnet, gateway, ip_range,
        internal, labels, ipv6, driver, options); bad or overlapping subnets are refused and
        nothing is written."""
        return self.networks.create(name, *args, **kw)

    def list(self) -> list[Network]:
        return self.networks.list()

    def inspect(self, name: str) -> dict[str, Any]:
        """The definition plus its members: {id: {name, interface, ips, mac, aliases}}."""
        return self.networks.inspect(name)

    def remove(self, name: str) -> None:
        """Delete a network; refused while containers or VMs are connected to it."""
        self.networks.remove(name)

    def prune(self) -> builtins.list[str]:
        """Remove every non-default network without members; returns their names."""
        return self.networks.prune()

    def _get(self, name: str) -> Network:
        return self.networks.get(name)

    # namespaces and connections ------------------------------------------------------------
    def create_netns(self, container_id: str) -> str | None:
        """A persistent netns for the container (see ``Attacher.create_netns``)."""
        return self.attacher.create_netns(container_id)

    def connect(self, container_id: str, ns_path: str, networks: Sequence[NetSpec] = ("bridge",),
                ports: Sequence[PortMapping] = (), *, name: str | None = None,
                hostname: str | None = None, dns: Sequence[str] = ()) -> Attachment:
        """Attach the namespace to networks (first = primary, which carries the ports)."""
        return self.attacher.connect(container_id, ns_path, networks, ports, name=name,
                                     hostname=hostname, dns=dns)

    def disconnect(self, container_id: str, network: str) -> None:
        self.attacher.disconnect(container_id, network)

    def teardown(self, container_id: str) -> None:
        """Undo every network, tap, lease and the netns isle made for the container. Idempotent."""
        self.attacher.teardown(container_id)

    def gc(self, live: Iterable[str]) -> dict[str, builtins.list[str]]:
        """Tear down every container/VM whose id is not in live; delete orphaned isle taps."""
        return self.attacher.gc(live)

    # reading back --------------------------------------------------------------------------
    def attachment(self, container_id: str) -> Attachment | None:
        return self.attacher.attachment(container_id)

    def hosts_ips(self, container_id: str) -> builtins.list[str]:
        """The addresses /etc/hosts names the container by (see ``render_etc``)."""
        return self.attacher.hosts_ips(container_id)

    def port(self, container_id: str) -> builtins.list[PortMapping]:
        return self.attacher.port(container_id)

    def _attachment(self, rec: dict[str, Any]) -> Attachment:
        return self.attacher.to_attachment(rec)

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
        att = self.attacher.to_attachment(rec) if rec else None
        hn = hostname or container_id[:12]
        ips: list[str] = []
        names = [rec["name"]] if rec else []
        net_dns: list[str] = []
        if att and att.networks:
            ips = hosts_ips_of(att)
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

