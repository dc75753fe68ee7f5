"""VM taps: a tap on a network's bridge with a lease, a DNS name and ports; a tiny responder
behind the tap (ARP + ICMP echo) stands in for the guest."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess
import threading

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.root]

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def guest(tap: str, mac: str, ip: str, stop: threading.Event) -> None:
    """Answer ARP for ip and ICMP echo to ip on the tap, until stop is set."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
        me, myip = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)
        while not stop.is_set():
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            f = os.read(fd, 65536)
            dst, src, typ = f[:6], f[6:12], f[12:14]
            if typ == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == myip:
                arp = f[14:20] + b"\x00\x02" + me + myip + f[22:28] + f[28:32]
                os.write(fd, src + me + typ + arp)
            elif typ == b"\x08\x00" and dst == me and f[23] == 1 and f[30:34] == myip:
                ihl = (f[14] & 0xF) * 4
                iph = f[14:26] + f[30:34] + f[26:30] + f[34:14 + ihl]
                icmp = b"\x00\x00\x00\x00" + f[14 + ihl + 4:]
                icmp = icmp[:2] + struct.pack("!H", _csum(icmp)) + icmp[4:]
                if f[14 + ihl] == 8:
                    os.write(fd, src + me + typ + iph + icmp)
    finally:
        os.close(fd)


@pytest.mark.timeout(60)
def test_tap_gets_lease_name_and_traffic_then_goes_away(nm, kit):
    nm.create("isle-test-vm", subnet="10.204.3.0/24")
    t = nm.attach_tap("vm0test", "isle-test-vm", ip="10.204.3.40", name="vmzero", aliases=["guest"])
    tap, ip, mac, gw = t
    assert (ip, gw, t.prefixlen) == ("10.204.3.40", "10.204.3.1", 24) and len(tap) <= 15
    bridge = nm.inspect("isle-test-vm")["bridge"]
    out = subprocess.run(["ip", "-o", "link", "show", tap], capture_output=True, text=True).stdout
    assert f"master {bridge}" in out
    info = nm.inspect("isle-test-vm")["containers"]
    assert [(m["tap"], m["ips"]) for m in info.values()] == [(tap, ["10.204.3.40"])]

    ns = nm.create_netns("d" * 64)
    nm.connect("d" * 64, ns, ["isle-test-vm"])
    stop = threading.Event()
    th = threading.Thread(target=guest, args=(tap, mac, ip, stop), daemon=True)
    th.start()
    try:
        for name in ("guest", "vmzero"):
            assert "10.204.3.40" in kit.run_in(ns, "busybox", "nslookup", name, gw).stdout
        assert kit.run_in(ns, "busybox", "ping", "-c2", "-W3", ip).returncode == 0
    finally:
        stop.set()
        th.join()
    nm.teardown("d" * 64)
    assert bridge in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    nm.detach_tap("vm0test")
    nm.detach_tap("vm0test")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert tap not in links and bridge not in links
    assert nm.store.leases().data == {} and nm.store.records() == []
    with pytest.raises(Exception, match="outside"):
        nm.attach_tap("vm1test", "isle-test-vm", ip="10.9.9.9")
    assert nm.store.records() == [] and os.listdir(nm.store.netns_dir) == []
