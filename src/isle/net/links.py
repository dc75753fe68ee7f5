"""Links isle makes or checks itself, over netlink (pyroute2): taps for VMs, bridge ports,
routes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from isle.errors import NotFound, Unsupported

__all__ = ["create_tap", "master_of", "delete_link", "link_names", "bridge_ports", "route_cidrs",
           "link_exists"]


def _ipr() -> Any:
    from pyroute2 import IPRoute  # lazy: pyroute2 costs ~100 ms to import

    return IPRoute()


_T = TypeVar("_T")


def _redumped(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run a netlink read again when the kernel says its dump was interrupted (NLM_F_DUMP_INTR:
    another process changed the table meanwhile, e.g. a container's veth came or went); reads
    only, so trying again is safe."""
    import functools

    @functools.wraps(fn)
    def again(*args: Any, **kw: Any) -> _T:
        from pyroute2.netlink.exceptions import NetlinkDumpInterrupted

        for _ in range(9):
            try:
                return fn(*args, **kw)
            except NetlinkDumpInterrupted:
                continue
        return fn(*args, **kw)

    return again


@_redumped
def link_names() -> list[str]:
    with _ipr() as ipr:
        return [ln.get_attr("IFLA_IFNAME") for ln in ipr.get_links()]


@_redumped
def link_exists(name: str) -> bool:
    with _ipr() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def create_tap(name: str, bridge: str, mtu: int | None = None) -> None:
    """A persistent tap enslaved to bridge and up (QEMU opens it by name, vnet_hdr allowed)."""
    with _ipr() as ipr:
        br = ipr.link_lookup(ifname=bridge)
        if not br:
            raise NotFound(f"bridge {bridge} does not exist")
        try:
            ipr.link("add", ifname=name, kind="tuntap", mode="tap", vnet_hdr=True)
        except Exception as exc:  # pyroute2's NetlinkError, or OSError
            if not os.path.exists("/dev/net/tun"):
                raise Unsupported(f"cannot make tap {name} for a VM: /dev/net/tun is missing "
                                  "(load the tun module, or use --network none)") from None
            raise Unsupported(f"cannot make tap {name} for a VM: {exc}") from None
        try:
            (idx,) = ipr.link_lookup(ifname=name)
            kw: dict[str, Any] = {"master": br[0], "state": "up"}
            if mtu:
                kw["mtu"] = mtu
            ipr.link("set", index=idx, **kw)
        except BaseException:
            ipr.link("del", ifname=name)
            raise


def master_of(name: str) -> str | None:
    """The bridge a link is enslaved to (from sysfs), or None."""
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
    except OSError:
        return None


def delete_link(name: str) -> bool:
    """Delete a host link by name; False if it was not there."""
    with _ipr() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return False
        ipr.link("del", index=idx[0])
        return True


@_redumped
def bridge_ports(bridge: str) -> list[str]:
    with _ipr() as ipr:
        br = ipr.link_lookup(ifname=bridge)
        if not br:
            return []
        return [ln.get_attr("IFLA_IFNAME") for ln in ipr.get_links()
                if ln.get_attr("IFLA_MASTER") == br[0]]


@_redumped
def route_cidrs() -> list[str]:
    """Destinations of the host's routes (main table), to keep new subnets off them."""
    out: list[str] = []
    with _ipr() as ipr:
        for fam in (2, 10):
            for r in ipr.get_routes(family=fam, table=254):
                dst = r.get_attr("RTA_DST")
                if dst and r["dst_len"]:
                    out.append(f"{dst}/{r['dst_len']}")
    return out
