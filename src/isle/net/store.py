"""isle's record of its networks: definitions under root, leases and attachments under runroot.

    root/<name>.json             one network definition (survives reboots)
    root/.lock                   serialises every change below
    runroot/leases.json          {network: {ip: owner}}
    runroot/containers/<id>.json what was set up for one container or VM, written *before* setup
                                 so teardown/gc can undo a setup that crashed half-way
    runroot/netns/<id>           persistent network namespaces isle made
    runroot/netavark/            netavark's --config dir (aardvark-dns state)
    runroot/firewall/<bridge>.json  a network with members: isle's nft table is in place and
                                 route_localnet's value before netavark (see net/firewall.py)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from isle.errors import ConfigError
from isle.net.ipam import Leases
from isle.net.types import Network
from isle.sys.fs import atomic_write, flock, private_dir

__all__ = ["Store", "check_name"]

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")


def check_name(name: str, what: str = "network") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # `$` allows a trailing newline
        raise ConfigError(what, f"{name!r} is not a valid name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, <= 64)")
    return name


class Store:
    def __init__(self, root: str, runroot: str) -> None:
        self.root = root
        self.runroot = runroot
        self.containers_dir = os.path.join(runroot, "containers")
        self.netns_dir = os.path.join(runroot, "netns")
        self.netavark_dir = os.path.join(runroot, "netavark")
        self.firewall_dir = os.path.join(runroot, "firewall")
        private_dir(root)  # 0700 (made or tightened): records of networks and their containers
        private_dir(runroot)
        for d in (self.containers_dir, self.netns_dir, self.netavark_dir, self.firewall_dir):
            os.makedirs(d, mode=0o755, exist_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        with flock(os.path.join(self.root, ".lock")):
            yield

    # networks ----------------------------------------------------------------------------
    def _net_path(self, name: str) -> str:
        return os.path.join(self.root, check_name(name) + ".json")

    def network(self, name: str) -> Network | None:
        try:
            with open(self._net_path(name)) as f:
                return Network.from_dict(json.load(f))
        except FileNotFoundError:
            return None

    def networks(self) -> list[Network]:
        out = []
        for fn in sorted(os.listdir(self.root)):
            if fn.endswith(".json") and not fn.startswith("."):
                with open(os.path.join(self.root, fn)) as f:
                    out.append(Network.from_dict(json.load(f)))
        return out

    def save_network(self, net: Network) -> None:
        atomic_write(self._net_path(net.name), json.dumps(net.to_dict(), indent=1).encode())

    def delete_network(self, name: str) -> None:
        os.unlink(self._net_path(name))

    # leases ------------------------------------------------------------------------------
    def leases(self) -> Leases:
        try:
            with open(os.path.join(self.runroot, "leases.json")) as f:
                d = json.load(f)
            last = d.pop("\0last", None) if isinstance(d.get("\0last"), dict) else None
            return Leases(d, last)
        except FileNotFoundError:
            return Leases({})

    def save_leases(self, leases: Leases) -> None:
        d = {**leases.data, "\0last": leases.last} if leases.last else leases.data
        atomic_write(os.path.join(self.runroot, "leases.json"), json.dumps(d).encode())

    # attachment records ------------------------------------------------------------------
    def _rec_path(self, cid: str) -> str:
        if "/" in cid or cid.startswith("."):
            raise ConfigError("container", f"{cid!r} is not a valid id")
        return os.path.join(self.containers_dir, cid + ".json")

    def record(self, cid: str) -> dict[str, Any] | None:
        try:
            with open(self._rec_path(cid)) as f:
                return dict(json.load(f))
        except FileNotFoundError:
            return None

    def records(self) -> list[dict[str, Any]]:
        out = []
        for fn in sorted(os.listdir(self.containers_dir)):
            if fn.endswith(".json"):
                rec = self.record(fn[:-5])
                if rec is not None:
                    out.append(rec)
        return out

    def save_record(self, rec: dict[str, Any]) -> None:
        atomic_write(self._rec_path(rec["id"]), json.dumps(rec, indent=1).encode())

    def delete_record(self, cid: str) -> None:
        try:
            os.unlink(self._rec_path(cid))
        except FileNotFoundError:
            pass

    # per-bridge host state (isle's nft table, route_localnet) ----------------------------
    def _fw_path(self, bridge: str) -> str:
        if "/" in bridge or bridge.startswith("."):
            raise ConfigError("bridge", f"{bridge!r} is not a valid interface name")
        return os.path.join(self.firewall_dir, bridge + ".json")

    def fw_state(self, bridge: str) -> dict[str, Any] | None:
        try:
            with open(self._fw_path(bridge)) as f:
                return dict(json.load(f))
        except (FileNotFoundError, ValueError):
            return None

    def save_fw_state(self, bridge: str, state: dict[str, Any]) -> None:
        atomic_write(self._fw_path(bridge), json.dumps(state).encode())

    def delete_fw_state(self, bridge: str) -> None:
        try:
            os.unlink(self._fw_path(bridge))
        except FileNotFoundError:
            pass

    def fw_bridges(self) -> list[str]:
        return sorted(f[:-5] for f in os.listdir(self.firewall_dir) if f.endswith(".json"))

    def netns_path(self, cid: str) -> str:
        self._rec_path(cid)
        return os.path.join(self.netns_dir, cid)

    def netns_ids(self) -> list[str]:
        return sorted(os.listdir(self.netns_dir))
