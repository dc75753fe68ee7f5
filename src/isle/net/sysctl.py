"""Host sysctls that netavark turns on for isle, given back when isle's last bridge goes.

netavark writes ``net.ipv4.ip_forward=1`` on every setup (``net.ipv6.conf.all.forwarding=1``
for IPv6 networks) and never restores them. They belong to the network namespace, not to one
isle root, so the record is per namespace and shared by every root on the host:

    /run/isle/net-sysctl/<netns inode>.json
        {"saved": {"net/ipv4/ip_forward": "0"},                 # the value before isle
         "holders": {"isle-1a2b3c4d": {"keys": [...], "since": 1700000000.0}}}

A holder is one isle bridge (a network with members). ``hold`` records the value a key had
before its first holder; ``release`` drops a holder, and once no live holder needs a key it
writes the saved value back, but only if the key still has the value netavark set and no other
container engine's bridge (one with veth ports) is on the host: such an engine may rely on it
(it is then retried at isle's next release). A holder whose bridge is gone counts as dead after
a grace period (a root deleted without teardown cannot pin the values forever).

``route_localnet`` is per bridge and handled by the NetworkManager (``localnet_*`` below).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from isle.sys.fs import atomic_write, flock

__all__ = ["HostSysctls", "IPV4_FORWARD", "IPV6_FORWARD", "read", "write", "localnet_path"]

IPV4_FORWARD = "net/ipv4/ip_forward"
IPV6_FORWARD = "net/ipv6/conf/all/forwarding"
STATE_DIR = "/run/isle/net-sysctl"
GRACE = 300.0      # seconds a holder counts as alive before its bridge exists (setup in flight)


def read(key: str, proc: str = "/proc/sys") -> str | None:
    try:
        with open(os.path.join(proc, key)) as f:
            return f.read().strip()
    except OSError:
        return None


def write(key: str, value: str, proc: str = "/proc/sys") -> bool:
    try:
        with open(os.path.join(proc, key), "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def localnet_path(bridge: str) -> str:
    return f"net/ipv4/conf/{bridge}/route_localnet"


class HostSysctls:
    def __init__(self, state_dir: str = STATE_DIR, proc: str = "/proc/sys",
                 sysfs: str = "/sys/class/net") -> None:
        self.proc = proc
        self.sysfs = sysfs
        try:
            ns = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            ns = 0
        self.path = os.path.join(state_dir, f"{ns}.json")

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path) as f:
                d = json.load(f)
        except (OSError, ValueError):
            d = {}
        return {"saved": dict(d.get("saved") or {}), "holders": dict(d.get("holders") or {})}

    def _save(self, d: dict[str, Any]) -> None:
        if d["saved"] or d["holders"]:
            atomic_write(self.path, json.dumps(d).encode(), durable=False)
        else:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _lock(self) -> flock:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        return flock(self.path + ".lock")

    def hold(self, bridge: str, ipv6: bool = False) -> None:
        """Before netavark sets up a network on ``bridge``: remember the values it will change."""
        keys = [IPV4_FORWARD] + ([IPV6_FORWARD] if ipv6 else [])
        with self._lock():
            d = self._load()
            for k in keys:
                if k not in d["saved"]:
                    v = read(k, self.proc)
                    if v is not None:
                        d["saved"][k] = v
            old = d["holders"].get(bridge, {}).get("keys", [])
            d["holders"][bridge] = {"keys": sorted(set(keys) | set(old)), "since": time.time()}
            self._save(d)

    def release(self, bridge: str | None = None) -> dict[str, str]:
        """After ``bridge``'s network lost its last member: give back what no holder needs.
        Returns the keys written back, with their values."""
        restored: dict[str, str] = {}
        with self._lock():
            d = self._load()
            if bridge is not None:
                d["holders"].pop(bridge, None)
            now = time.time()
            for b, h in list(d["holders"].items()):
                gone = not os.path.exists(os.path.join(self.sysfs, b))
                if gone and now - h.get("since", 0) > GRACE:
                    del d["holders"][b]
            needed = {k for h in d["holders"].values() for k in h.get("keys", [])}
            foreign = None
            for k, prev in list(d["saved"].items()):
                if k in needed:
                    continue
                cur = read(k, self.proc)
                if cur is not None and cur != prev and cur == "1":
                    if foreign is None:
                        foreign = self._foreign_bridges()
                    if foreign:
                        continue          # keep the saved value: retried at the next release
                    if write(k, prev, self.proc):
                        restored[k] = prev
                del d["saved"][k]
            self._save(d)
        return restored

    def _foreign_bridges(self) -> list[str]:
        """Bridges of other container engines (not isle's, with veth ports) on this host."""
        out: list[str] = []
        try:
            names = os.listdir(self.sysfs)
        except OSError:
            return out
        for n in names:
            if n.startswith("isle"):
                continue
            try:
                ports = os.listdir(os.path.join(self.sysfs, n, "brif"))
            except OSError:
                continue
            if any(p.startswith("veth") for p in ports):
                out.append(n)
        return out
