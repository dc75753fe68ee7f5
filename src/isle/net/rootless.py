"""Rootless networking for a container: slirp4netns planned, recorded and undone like a network.

The record is written before slirp4netns starts, so teardown/gc stop it after any crash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from isle.errors import AlreadyExists
from isle.net import ports as portlib
from isle.net import slirp
from isle.net.types import Attachment, PortMapping

if TYPE_CHECKING:
    from isle.net.manager import NetworkManager

__all__ = ["connect_slirp"]


def connect_slirp(nm: NetworkManager, container_id: str, target: str | int,
                  ports: Sequence[PortMapping] = (),
                  *, userns_path: str | None = None, name: str | None = None,
                  host_loopback: bool = False) -> Attachment:
    """User-mode networking (slirp4netns) for a netns path or a pid in it: what rootless
    containers get. The namespace sees tap0 10.0.2.100/24, gateway .2, DNS .3; ports are
    host sockets of slirp4netns, so a busy host port fails right here."""
    with nm.store.lock():
        if nm.store.record(container_id):
            raise AlreadyExists(f"container {container_id[:12]} already has a network")
        ns_path = target if isinstance(target, str) else f"/proc/{target}/ns/net"
        rec: dict[str, Any] = {"id": container_id, "name": name or container_id[:12],
                               "ns_path": ns_path, "networks": {}, "ports": [], "dns": []}
        taken = [PortMapping.from_dict(p) for r in nm.store.records() for p in r["ports"]]
        resolved = portlib.claim(list(ports), taken)
        sockdir = os.path.join(nm.store.runroot, "slirp")
        os.makedirs(sockdir, exist_ok=True)
        api = os.path.join(sockdir, hashlib.sha256(container_id.encode()).hexdigest()[:16])
        rec["slirp"] = {"pid": 0, "api": api}
        nm.store.save_record(rec)
        try:
            rec["slirp"]["pid"] = slirp.start(target, api, userns_path=userns_path,
                                              host_loopback=host_loopback)
            nm.store.save_record(rec)
            for pm in resolved:
                slirp.add_hostfwd(api, pm)
        except BaseException:
            slirp.stop_for(rec)
            nm.store.delete_record(container_id)
            raise
        rec["ports"] = [p.to_dict() for p in resolved]
        rec["networks"]["slirp4netns"] = {
            "interface": "tap0", "ips": [slirp.GUEST_IP], "prefixlens": [slirp.PREFIX],
            "gateways": [slirp.GATEWAY], "dns_servers": [slirp.DNS], "aliases": [],
            "mac": "", "options": {}, "state": "ready"}
        nm.store.save_record(rec)
        return nm._attachment(rec)

