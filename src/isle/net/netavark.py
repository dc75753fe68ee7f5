"""The plugin boundary: podman's netavark (bridges, firewall, port forwards) and aardvark-dns.

isle plans (network, addresses, ports) and hands netavark one network at a time:
``netavark --config DIR setup NETNS < options.json``; ``teardown`` takes the same JSON. Debian 12
ships netavark 1.4 (iptables-nft firewall driver); the JSON schema is its ``src/network/types.rs``.
IPAM stays with isle: every address is passed as a ``static_ips`` entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from isle.errors import CommandError
from isle.net.types import Network, PortMapping
from isle.sys import proc

__all__ = ["Netavark", "NETAVARK", "AARDVARK", "nv_name", "chain_hash"]

NETAVARK = proc.NETAVARK
AARDVARK = proc.AARDVARK


def nv_name(net: Network) -> str:
    """The name netavark knows a network by. netavark derives its iptables chains from the name
    alone (NETAVARK-<sha512(name)[:13]>), so isle's names ("bridge" in every root) would share
    chains across roots, and the last teardown in one root would flush another's: use the id."""
    return "isle-" + _nid(net)[:12]


def _nid(net: Network) -> str:
    return net.id if len(net.id) == 64 else hashlib.sha256(net.id.encode()).hexdigest()


def chain_hash(net: Network) -> str:
    """netavark's per-network chain suffix for this network (for checks and gc)."""
    return hashlib.sha512(nv_name(net).encode()).hexdigest().upper()[:13]


def network_json(net: Network) -> dict[str, Any]:
    """A Network as netavark's ``network_info`` entry."""
    nid = _nid(net)
    return {
        "name": nv_name(net),
        "id": nid,
        "driver": net.driver,
        "network_interface": net.bridge,
        "subnets": [{"subnet": s.subnet, "gateway": s.gateway} for s in net.subnets],
        "ipv6_enabled": net.ipv6,
        "internal": net.internal,
        "dns_enabled": net.dns_enabled,
        "ipam_options": {"driver": "host-local"},
        "options": {},
    }


def port_json(pm: PortMapping) -> dict[str, Any]:
    return {"host_ip": pm.host_ip, "host_port": pm.host_port, "container_port": pm.container_port,
            "protocol": pm.proto, "range": pm.range}


class Netavark:
    """Runs netavark for one isle root; aardvark-dns state lives under ``config_dir``."""

    def __init__(self, config_dir: str, binary: str = NETAVARK, aardvark: str = AARDVARK,
                 rootless: bool = False) -> None:
        self.config_dir = config_dir
        self.binary = binary
        self.aardvark = aardvark
        self.rootless = rootless

    def available(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def options(self, *, container_id: str, name: str, net: Network, interface: str,
                ips: Sequence[str], aliases: Sequence[str] = (), mac: str | None = None,
                ports: Sequence[PortMapping] = (), dns_servers: Sequence[str] = ()
                ) -> dict[str, Any]:
        """The setup/teardown JSON for one container on one network."""
        per: dict[str, Any] = {"interface_name": interface, "static_ips": list(ips),
                               "aliases": list(aliases)}
        if mac:
            per["static_mac"] = mac
        opts: dict[str, Any] = {
            "container_id": container_id,
            "container_name": name,
            "networks": {nv_name(net): per},
            "network_info": {nv_name(net): network_json(net)},
            "port_mappings": [port_json(p) for p in ports] or None,
        }
        if dns_servers:
            opts["dns_servers"] = list(dns_servers)
        return opts

    def _run(self, verb: str, ns_path: str, options: dict[str, Any]) -> bytes:
        os.makedirs(os.path.join(self.config_dir, "aardvark-dns"), exist_ok=True)
        argv = [self.binary, "--config", self.config_dir, "--aardvark-binary", self.aardvark,
                "--rootless", "true" if self.rootless else "false", verb, ns_path]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "RUST_LOG": "error"}
        cp = proc.run(argv, input=json.dumps(options).encode(), timeout=60, check=False, env=env)
        if cp.returncode != 0:
            out = (cp.stdout or b"").decode(errors="replace")
            err = (cp.stderr or b"").decode(errors="replace")
            try:
                msg = json.loads(out)["error"]
            except (ValueError, KeyError, TypeError):
                msg = (out + err).strip()
            raise CommandError(argv, cp.returncode, msg)
        return cp.stdout or b""

    def setup(self, ns_path: str, options: dict[str, Any]) -> dict[str, Any]:
        """Configure the namespace; returns netavark's status block for the one network."""
        out = json.loads(self._run("setup", ns_path, options) or b"{}")
        (name,) = options["networks"].keys()
        return dict(out.get(name) or {})

    def teardown(self, ns_path: str, options: dict[str, Any]) -> None:
        """Undo setup. A missing aardvark-dns entry (setup never got that far) is not an error."""
        try:
            self._run("teardown", ns_path, options)
        except CommandError as exc:
            errs = [e.strip().lstrip("- ").strip() for e in exc.stderr.split("\n\t")]
            errs = [e for e in errs if e and not e.startswith("netavark encountered multiple")]
            if not all(e == _NO_DNS_ENTRY for e in errs):
                raise


    def drop_empty_chains(self, net: Network) -> None:
        """Delete the network's port-forward chain that netavark 1.4 leaves behind, empty, after
        the last member's teardown. ``-X`` refuses a chain that has rules or is referenced."""
        for tool in ("iptables", "ip6tables"):
            for chain in (f"NETAVARK-DN-{chain_hash(net)}", f"NETAVARK-{chain_hash(net)}"):
                proc.run([tool, "-w", "-t", "nat", "-X", chain], timeout=30, check=False)


_NO_DNS_ENTRY = "IO error: No such file or directory (os error 2)"
