"""VM networking: a tap on a network's bridge, with the same lease, DNS name and ports a container
gets. netavark sets the network up for an anchor netns whose own interface is then emptied and
downed; pyroute2 makes the tap and enslaves it to the bridge; QEMU opens the tap by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from isle.errors import Unsupported
from isle.net import links, netns
from isle.net.types import PortMapping, TapAttachment

if TYPE_CHECKING:
    from isle.net.manager import NetworkManager

__all__ = ["attach_tap"]


def attach_tap(nm: NetworkManager, vm_id: str, network: str = "bridge", *, ip: str | None = None,
               ports: Sequence[PortMapping] = (), name: str | None = None,
               aliases: Sequence[str] = ()) -> TapAttachment:
    """A tap on the network's bridge with an address lease, DNS name and published ports.

    netavark sets the network up (bridge, NAT, DNS, port forwards) for an anchor netns whose
    own interface is then emptied and downed; the VM's tap answers for the leased address.
    """
    owner = f"vm-{vm_id}"
    tap = nm._tap_prefix + hashlib.sha256(owner.encode()).hexdigest()[:6]
    ns = nm.create_netns(owner)
    if ns is None:
        raise Unsupported("VM taps on bridge networks need root "
                          "(rootless VMs use QEMU user networking)")
    try:
        att = nm.connect(owner, ns, [(network, {"ip": ip, "aliases": list(aliases)})],
                         ports, name=name or vm_id[:12])
        (na,) = att.networks.values()
        netns.run_in(ns, ["ip", "addr", "flush", "dev", na.interface])
        netns.run_in(ns, ["ip", "link", "set", na.interface, "down"])
        with nm.store.lock():
            rec = nm.store.record(owner)
            assert rec is not None
            rec["tap"] = tap
            nm.store.save_record(rec)
            links.create_tap(tap, nm._get(network).bridge)
    except BaseException:
        nm.teardown(owner)
        raise
    v4 = next((i for i, a in enumerate(na.ips) if ":" not in a), 0)
    mac = "02:" + ":".join(f"{b:02x}" for b in hashlib.sha256(tap.encode()).digest()[:5])
    return TapAttachment(vm_id=vm_id, tap=tap, ip=na.ips[v4], prefixlen=na.prefixlens[v4],
                         mac=mac, gateway=na.gateways[0] if na.gateways else None,
                         dns_servers=na.dns_servers, ports=att.ports)

