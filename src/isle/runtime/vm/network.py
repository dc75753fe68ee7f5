"""The VM runtime's own networking, the way Kata's tcfilter mode does it.

The caller (isle's engine, podman/netavark, containerd/CNI) hands the runtime the network
namespace it would hand a container (config.json linux.namespaces, type network, with a path),
already holding a veth with addresses and routes. The runtime:

- reads that interface's addresses, routes, MAC and MTU (``discover``);
- creates a tap in the same namespace, opened here (TUNSETIFF, IFF_VNET_HDR) so QEMU, jailed in a
  namespace of its own, gets it as an fd and never needs /dev/net/tun; the tap is not persistent:
  it vanishes with the last fd (QEMU's), so a crashed runtime leaves no link behind;
- joins veth and tap with an ingress qdisc and a u32 match-all filter whose action is a mirred
  redirect, both ways: every frame the veth receives leaves through the tap into the guest, and
  every frame the guest sends leaves through the veth, as if the guest's NIC were the veth;
- gives the guest the veth's MAC, addresses (IPv4), routes and MTU (the job script applies them),
  so ARP entries, leases, DNS names and port forwards the caller set up for that address reach
  the guest unchanged.

Only the ingress qdiscs are ours to undo (``disconnect``); the veth and the namespace are the
caller's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from isle.errors import ConfigError, IsleError, VMError
from isle.vm.job import GuestNet

__all__ = ["Plan", "netns_of", "discover", "connect", "disconnect", "TAP"]

#: the tap's name inside the container's network namespace (one VM per namespace)
TAP = "isle-tap0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    netns: str
    veth: str
    guest: GuestNet


def netns_of(cfg: dict[str, Any]) -> str:
    """The path of the network namespace config.json joins ("" when none is given: a new, empty
    namespace or the host's, neither of which has anything to give a guest)."""
    for ns in (cfg.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network":
            path = ns.get("path") or ""
            if path and not os.path.exists(path):
                raise ConfigError("linux.namespaces[network].path", f"{path} does not exist")
            return path
    return ""


@contextmanager
def _inside(path: str) -> Iterator[None]:
    """This thread (and what it spawns) in the network namespace at path, then back."""
    from isle.sys.libc import CLONE_NEWNET, LinuxSyscalls

    sc = LinuxSyscalls()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            sc.setns(home, CLONE_NEWNET)
    finally:
        os.close(home)


def _ip_json(*args: str) -> Any:
    from isle.sys import proc

    return json.loads(proc.run(["ip", "-j", *args], timeout=10).stdout or b"[]")


def discover(path: str) -> Plan | None:
    """The interface of the namespace at path the guest takes over: the first non-loopback
    Ethernet link with an IPv4 address (None when there is none: --network none)."""
    try:
        with _inside(path):
            links = _ip_json("addr", "show")
            routes = _ip_json("-4", "route", "show", "table", "main")
    except (OSError, IsleError) as exc:
        raise VMError(f"cannot read network namespace {path}: {exc}") from exc
    for ln in links:
        if ln.get("link_type") != "ether" or ln.get("ifname") == TAP:
            continue
        v4 = [a for a in ln.get("addr_info") or []
              if a.get("family") == "inet" and a.get("scope") == "global"]
        if not v4:
            continue
        dev = ln["ifname"]
        gw = ""
        extra: list[tuple[str, str]] = []
        for r in routes:
            if r.get("dev") != dev or r.get("protocol") == "kernel":
                continue
            if r.get("dst") == "default" and r.get("gateway") and not gw:
                gw = r["gateway"]
            elif r.get("dst") and r.get("dst") != "default":
                extra.append((r["dst"], r.get("gateway", "")))
        return Plan(netns=path, veth=dev, guest=GuestNet(
            address=f"{v4[0]['local']}/{v4[0]['prefixlen']}",
            extra_addresses=tuple(f"{a['local']}/{a['prefixlen']}" for a in v4[1:]),
            gateway=gw, mac=ln.get("address", ""), mtu=int(ln.get("mtu") or 0),
            routes=tuple(extra)))
    return None


_REDIRECT = "parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev {}"


def connect(plan: Plan) -> int:
    """Make the tap in plan.netns, mirror it with the veth; the tap's fd, for QEMU.

    Undone by closing every copy of the fd (the tap goes) and disconnect() (the veth's qdisc)."""
    from isle.sys import proc
    from isle.vm import jail

    fd = -1
    try:
        with _inside(plan.netns):
            fd = jail.open_tap(TAP)
            mtu = ["mtu", str(plan.guest.mtu)] if plan.guest.mtu else []
            proc.run(["ip", "link", "set", TAP, *mtu, "up"], timeout=10)
            batch = "".join(
                f"qdisc add dev {dev} ingress\nfilter add dev {dev} {_REDIRECT.format(to)}\n"
                for dev, to in ((plan.veth, TAP), (TAP, plan.veth)))
            proc.run(["tc", "-batch", "-"], input=batch.encode(), timeout=10)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        disconnect(plan.netns, plan.veth)
        if isinstance(exc, (OSError, IsleError)):
            raise VMError(f"cannot connect the VM to network namespace {plan.netns} "
                          f"({plan.veth}): {exc}") from exc
        raise
    return fd


def disconnect(path: str, veth: str) -> None:
    """Remove the veth's ingress qdisc (and with it the redirect); best effort: the namespace
    may be gone already, which undoes everything."""
    from isle.sys import proc

    if not path or not veth or not os.path.exists(path):
        return
    try:
        with _inside(path):
            proc.run(["tc", "qdisc", "del", "dev", veth, "ingress"], timeout=10, check=False)
    except OSError:
        pass
