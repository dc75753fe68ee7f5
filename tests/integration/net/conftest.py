"""Fixtures for network tests: a NetworkManager on a private root, namespaces as containers."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from isle.net import Network, NetworkManager, netns
from isle.net.netavark import chain_hash

FW_SHARED = re.compile(r"^(:NETAVARK-HOSTPORT-|:NETAVARK_FORWARD|:[A-Z]+ [A-Z]+|-P |-N NETAVARK-HOSTPORT-|-N NETAVARK_FORWARD|-A (PREROUTING|OUTPUT) -m "
                       r"addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT|-A POSTROUTING -j "
                       r"NETAVARK-HOSTPORT-MASQ|-A NETAVARK-HOSTPORT-(MASQ|SETMARK) |-A FORWARD -m "
                       r"comment --comment \"netavark firewall plugin rules\"|#|\*|COMMIT)")


def _needles(nm: NetworkManager) -> list[str]:
    """Text that marks a rule or link as this test's: subnets, chain hashes, bridges, taps."""
    out: list[str] = []
    for net in nm.seen_nets.values():   # type: ignore[attr-defined]
        out += [chain_hash(net), net.bridge]
        for s in net.subnets:
            n = ipaddress.ip_network(s.subnet)
            out.append(str(n.network_address).rsplit(".", 1)[0] + "." if n.version == 4
                       else str(n.network_address).rstrip(":"))
    return out + [nm._tap_prefix]


def firewall(nm: NetworkManager | None = None) -> set[str]:
    """iptables/ip6tables rules (nft backend) minus netavark's shared base chains and counters;
    with nm, only the rules of that manager's networks (other engineers run containers too)."""
    out: set[str] = set()
    needles = _needles(nm) if nm is not None else None
    for tool in ("iptables-save", "ip6tables-save"):
        text = subprocess.run([tool], capture_output=True, text=True, timeout=30).stdout
        out |= {f"{tool[:3]} {ln.split(' [')[0]}" for ln in text.splitlines()
                if not FW_SHARED.match(ln) and (needles is None or any(x in ln for x in needles))}
    return out


def links(nm: NetworkManager | None = None) -> set[str]:
    """Host links; with nm, only its bridges, their ports and its taps."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {ln.split(": ")[1].split("@")[0] for ln in out.splitlines()}
    if nm is None:
        return names
    mine = set(_needles(nm))
    return {n for n in names if n in mine or n.startswith(nm._tap_prefix)
            or os.path.basename(os.path.realpath(f"/sys/class/net/{n}/master")) in mine}


def aardvark_pids(path: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if "aardvark-dns" in cmd and path in cmd and "(defunct)" not in cmd:
                try:
                    state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
                if state != "Z":
                    pids.append(int(d))
    return pids


def run_in(ns: str, *argv: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={ns}", "--", *argv], capture_output=True, text=True,
                          timeout=timeout, check=check)


class Procs:
    """Processes standing in for containers; all killed at the end of the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, ns: str, *argv: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["nsenter", f"--net={ns}", "--", *argv], **kw)
        self.procs.append(p)
        return p

    def py_server(self, ns: str, port: int, reply: str = "peer") -> subprocess.Popen:
        """A TCP server that answers each connection with the peer's address (or a fixed text)."""
        code = ("import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else 2)\n"
                "s.setsockopt(1,2,1); s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(8)\n"
                "print('ready',flush=True)\n"
                "while True:\n c,a=s.accept(); c.sendall((a[0] if sys.argv[3]=='peer' else sys.argv[3]).encode()); c.close()\n")
        p = self.spawn(ns, sys.executable, "-c", code, "0.0.0.0", str(port), reply,
                       stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.close()


class TrackingNM(NetworkManager):
    """A NetworkManager that remembers every network it planned (for scoped leak checks)."""

    def __init__(self, *a, **kw) -> None:
        self.seen_nets: dict[str, Network] = {}
        super().__init__(*a, **kw)
        plan = self.networks.plan

        def tracking(*a, **kw) -> Network:
            net = plan(*a, **kw)
            self.seen_nets[net.name] = net
            return net

        self.networks.plan = tracking  # type: ignore[method-assign]


@pytest.fixture
def nm(tmp_path) -> Iterator[NetworkManager]:
    tag = secrets.token_hex(3)
    m = TrackingNM(root=str(tmp_path / "isle-test-root" / "networks"),
                       runroot=str(tmp_path / "isle-test-run" / "networks"),
                       default_subnet=f"10.209.{secrets.randbelow(250)}.0/24",
                       default_bridge=f"isletst{tag}")
    yield m
    m.gc(set())       # a failing test must not leave its containers behind either


class Kit:
    """Helpers handed to tests as a fixture (test modules cannot import conftest under importlib)."""

    firewall = staticmethod(firewall)
    links = staticmethod(links)
    aardvark_pids = staticmethod(aardvark_pids)
    run_in = staticmethod(run_in)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def outside(tmp_path):
    """A namespace at 198.51.100.2 reachable from the host over isle-test veth (198.51.100.1/30)."""
    path = str(tmp_path / "outside-ns")
    netns.create(path)
    host_end = f"isletsto{secrets.token_hex(3)}"
    try:
        subprocess.run(["nsenter", f"--net={path}", "ip", "link", "add", "eth9", "type", "veth",
                        "peer", "name", host_end, "netns", "1"], check=True, timeout=10)
        subprocess.run(["nsenter", f"--net={path}", "sh", "-c",
                        "ip addr add 198.51.100.2/30 dev eth9 && ip link set eth9 up"],
                       check=True, timeout=10)
        subprocess.run(["ip", "addr", "add", "198.51.100.1/30", "dev", host_end], check=True)
        subprocess.run(["ip", "link", "set", host_end, "up"], check=True)
        yield path
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        netns.remove(path)
