"""Review finding 8, network isolation: a container root (CAP_NET_RAW, granted by default) must
not reach a host service bound only to loopback, whether or not some container published a
port on 127.0.0.1 (netavark then sets route_localnet=1 on the bridge); containers on different
networks must not reach each other by address unless both networks opt out (isolate=false);
every rule and sysctl isle adds goes with the network's last member.

The attacker is net_inject.c, built static here: it hands the host's bridge an Ethernet frame
whose IPv4 destination is 127.x (UDP datagram, or TCP SYN then ACK + data if answered). The
canaries are this test's own sockets: servers bound to 127.x addresses, and raw sockets that see
every TCP/UDP segment the host stack delivers to the canary ports. A datagram to a server on the
bridge's gateway address, sent the same way, proves the injector works (the positive control)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
pytestmark = [pytest.mark.root, pytest.mark.netns]

LOOPBACKS = ("127.0.0.1", "127.3.4.5")


@pytest.fixture(scope="module")
def injector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory (bind-mounted at /inj) with the static injector."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the injector")
    d = tmp_path_factory.mktemp("inj")
    os.chmod(d, 0o755)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "net_inject"), str(HERE / "net_inject.c")],
                   check=True, capture_output=True, timeout=120)
    return d


class Canary:
    """Host sockets for one attack: a TCP listener and a UDP socket on each address, all on one
    port, and raw sockets recording every TCP/UDP packet the host delivers to that port."""

    def __init__(self, addrs: tuple[str, ...]) -> None:
        self.events: list[str] = []
        self.socks: list[socket.socket] = []
        for _ in range(50):
            probe = socket.socket()
            probe.bind((addrs[0], 0))
            self.port = probe.getsockname()[1]
            probe.close()
            try:
                for a in addrs:
                    t = socket.socket()
                    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    self.socks.append(t)
                    t.bind((a, self.port))
                    t.listen(8)
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.socks.append(u)
                    u.bind((a, self.port))
                break
            except OSError:
                self.close()
                self.socks = []
        for proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            self.socks.append(socket.socket(socket.AF_INET, socket.SOCK_RAW, proto))
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            ready, _, _ = select.select(self.socks, [], [], 0.1)
            for s in ready:
                try:
                    if s.type == socket.SOCK_RAW:
                        pkt, _ = s.recvfrom(65535)
                        ihl = (pkt[0] & 15) * 4
                        dport = struct.unpack("!H", pkt[ihl + 2:ihl + 4])[0]
                        if dport == self.port:
                            self.events.append(f"raw proto {pkt[9]} {socket.inet_ntoa(pkt[12:16])}"
                                               f" -> {socket.inet_ntoa(pkt[16:20])}:{dport}")
                    elif s.type == socket.SOCK_DGRAM:
                        data, peer = s.recvfrom(65535)
                        self.events.append(f"udp {peer} {data!r}")
                    else:
                        c, peer = s.accept()
                        c.settimeout(1)
                        try:
                            data = c.recv(100)
                        except OSError:
                            data = b""
                        c.close()
                        self.events.append(f"tcp {peer} {data!r}")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        if hasattr(self, "_thread"):
            self._thread.join(2)
        for s in self.socks:
            s.close()


class UdpSink:
    """A UDP server on one address (the positive control, and a spoofing target)."""

    def __init__(self, addr: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)

    def drain(self, wait: float = 0.5) -> list[bytes]:
        out, end = [], time.time() + wait
        while time.time() < end:
            try:
                out.append(self.sock.recvfrom(65535)[0])
            except TimeoutError:
                pass
        return out

    def close(self) -> None:
        self.sock.close()


def _net(isle, name: str) -> dict:
    return json.loads(isle("network", "inspect", name).stdout)[0]


def _ip(isle, ctr: str, net: str) -> str:
    return isle.inspect(ctr)["NetworkSettings"]["Networks"][net]["IPAddress"]


def _sysctl(path: str) -> str | None:
    try:
        return Path("/proc/sys", path).read_text().strip()
    except OSError:
        return None


def _attack(isle, ctr: str, mac: str, canary: Canary, ctl: UdpSink, gateway: str) -> list[str]:
    """Every injection from ctr; returns what the injector printed (the canaries say the rest)."""
    script = ["cp /inj/net_inject /tmp/i"]
    for dst in LOOPBACKS:
        script.append(f"/tmp/i udp eth0 {mac} {dst} {canary.port} LOOPBACK-UDP")
        script.append(f"/tmp/i tcp eth0 {mac} {dst} {canary.port} LOOPBACK-TCP")
    # a loopback source towards the host's bridge address (a service trusting 127.0.0.1 peers)
    script.append(f"/tmp/i udp eth0 {mac} {gateway} {ctl.port} SPOOFED 127.0.0.1")
    script.append(f"/tmp/i udp eth0 {mac} {gateway} {ctl.port} CONTROL")
    r = isle("exec", ctr, "sh", "-c", "; ".join(script) + "; true", timeout=60)
    return r.stdout.splitlines()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("publisher", ["none", "same-network", "attacker-itself", "gone"])
def test_container_cannot_inject_into_host_loopback(isle, injector, publisher):
    pub_port = []
    attacker_ports: list[str] = []
    if publisher == "attacker-itself":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            q = s.getsockname()[1]
        attacker_ports = ["-p", f"127.0.0.1:{q}:80", "-p", "0.0.0.0::81"]
    isle("run", "-d", "--name", "att", "-v", f"{injector}:/inj:ro", *attacker_ports,
         "busybox", "sleep", "600")
    net = _net(isle, "bridge")
    bridge, gateway = net["Bridge"], net["Subnets"][0]["gateway"]
    mac = Path(f"/sys/class/net/{bridge}/address").read_text().strip()
    localnet = f"net/ipv4/conf/{bridge}/route_localnet"
    before = _sysctl("net/ipv4/conf/default/route_localnet")
    if publisher in ("same-network", "gone"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            q = s.getsockname()[1]
        isle("run", "-d", "--name", "pub", "-p", f"127.0.0.1:{q}:80", "busybox", "sh", "-c",
             "mkdir /w && echo published > /w/index.html && exec httpd -f -p 80 -h /w")
        pub_port.append(q)
        # the publish works from the host (netavark's route_localnet is what the attack rides on)
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", q), timeout=2) as c:
                    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    assert b"published" in c.recv(4096)
                break
            except (OSError, AssertionError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        assert _sysctl(localnet) == "1"
        if publisher == "gone":
            isle("rm", "-f", "pub")
            assert _sysctl(localnet) == before, "route_localnet was not given back"
    canary, ctl = Canary(LOOPBACKS), UdpSink(gateway)
    try:
        out = _attack(isle, "att", mac, canary, ctl, gateway)
        time.sleep(0.5)
        got = ctl.drain()
    finally:
        canary.close()
        ctl.close()
    assert b"CONTROL" in got, f"the injector does not work (positive control): {out}"
    assert b"SPOOFED" not in got, "a packet with a 127.0.0.1 source from a container was accepted"
    assert canary.events == [], f"host loopback services reached from a container: {canary.events}"
    assert "synack" not in out


def _reach(isle, src: str, ip: str, port: int) -> dict[str, bool]:
    """ICMP, TCP (httpd) and UDP (a fresh nc listener per probe) from src to ip."""
    ping = isle("exec", src, "ping", "-c1", "-W1", ip, check=False).returncode == 0
    tcp = isle("exec", src, "timeout", "3", "wget", "-q", "-O", "-", f"http://{ip}:{port}/",
               check=False).stdout.strip() != ""     # (busybox's wget -T crashes)
    return {"icmp": ping, "tcp": tcp}


def _udp(isle, src: str, dst: str, ip: str, port: int) -> bool:
    """A datagram from src reaches a listener in dst (plain sockets: busybox's nc has no -u)."""
    rx = subprocess.Popen(isle.argv("exec", dst, "/tmp/i", "udprecv", str(port), "3"),
                          stdout=subprocess.PIPE, text=True, env=isle.env)
    time.sleep(0.5)
    isle("exec", src, "/tmp/i", "udpsend", ip, str(port), "hello", check=False)
    out, _ = rx.communicate(timeout=30)
    return "got hello" in out


SERVE = ["-v", "{inj}:/inj:ro", "busybox", "sh", "-c",
         "cp /inj/net_inject /tmp/i && mkdir /w && hostname > /w/index.html && "
         "exec httpd -f -p 7000 -h /w"]


@pytest.mark.timeout(300)
def test_networks_are_isolated_unless_both_opt_out(isle, injector):
    serve = [a.replace("{inj}", str(injector)) for a in SERVE]
    for n in ("n1", "n2"):
        isle("network", "create", n)
    # n2 as a network made before isolation existed: no options in its record
    rec = isle.root / "networks" / "n2.json"
    d = json.loads(rec.read_text())
    d.pop("options", None)
    rec.write_text(json.dumps(d))
    isle("network", "create", "-o", "isolate=false", "o3")
    isle("network", "create", "--opt", "isolate=false", "o4")
    bad = isle("network", "create", "-o", "isolate=maybe", "n9", check=False)
    assert bad.returncode != 0 and "isolate" in bad.stderr
    bad = isle("network", "create", "-o", "icc=false", "n9", check=False)
    assert bad.returncode != 0 and "icc" in bad.stderr
    assert "n9" not in isle("network", "ls", "-q").stdout.split()
    assert _net(isle, "o3")["Isolated"] is False and _net(isle, "n1")["Isolated"] is True
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        q = s.getsockname()[1]
    isle("run", "-d", "--name", "ca", "--network", "n1", *serve)
    isle("run", "-d", "--name", "cb", "--network", "n2", "-p", f"{q}:7000", *serve)
    isle("run", "-d", "--name", "both", "--network", "n1,n2", *serve)
    isle("run", "-d", "--name", "c3", "--network", "o3", *serve)
    isle("run", "-d", "--name", "c4", "--network", "o4", *serve)
    ip = {c[-1] if c in ("ca", "cb") else c: _ip(isle, c, n) for c, n in (("ca", "n1"), ("cb", "n2"), ("c3", "o3"), ("c4", "o4"))}
    ip["both@n1"], ip["both@n2"] = _ip(isle, "both", "n1"), _ip(isle, "both", "n2")
    time.sleep(0.5)
    no = {"icmp": False, "tcp": False}
    yes = {"icmp": True, "tcp": True}
    # the reference: the same network works
    assert _reach(isle, "ca", ip["both@n1"], 7000) == yes
    # isolated networks: nothing either way, whatever the protocol
    assert _reach(isle, "ca", ip["b"], 7000) == no
    assert _reach(isle, "cb", ip["a"], 7000) == no
    assert not _udp(isle, "ca", "cb", ip["b"], 7101)
    assert not _udp(isle, "cb", "ca", ip["a"], 7102)
    # ...nor through the other network's address of a container on both
    assert _reach(isle, "ca", ip["both@n2"], 7000) == no
    # a container on both networks reaches both
    assert _reach(isle, "both", ip["a"], 7000) == yes
    assert _reach(isle, "both", ip["b"], 7000) == yes
    # open networks (isolate=false) reach each other, never an isolated one
    assert _reach(isle, "c3", ip["c4"], 7000) == yes
    assert _udp(isle, "c3", "c4", ip["c4"], 7103)
    assert _reach(isle, "c3", ip["a"], 7000) == no
    assert _reach(isle, "ca", ip["c3"], 7000) == no
    # a published port stays reachable from another network (through the host, DNAT)
    gw1 = _net(isle, "n1")["Subnets"][0]["gateway"]
    assert isle("exec", "ca", "timeout", "3", "wget", "-q", "-O", "-", f"http://{gw1}:{q}/",
                check=False).stdout.strip() != ""
    bridges = [_net(isle, n)["Bridge"] for n in ("bridge", "n1", "n2", "o3", "o4")]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert all(f"isle-{b}" in tables for b in bridges[1:]), tables
    # everything isle added goes with the containers
    isle("rm", "-f", "ca", "cb", "both", "c3", "c4")
    for n in ("n1", "n2", "o3", "o4"):
        isle("network", "rm", n)
    _assert_no_trace(bridges)


def _assert_no_trace(bridges: list[str]) -> None:
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    left = [b for b in bridges if f"isle-{b}" in tables.split()]
    assert not left, f"isle nft tables left behind: {left}"
    for tool in ("iptables-save", "ip6tables-save"):
        text = subprocess.run([tool], capture_output=True, text=True).stdout
        assert not [ln for ln in text.splitlines() if any(b in ln for b in bridges)], tool
    for f in Path("/run/isle/net-sysctl").glob("*.json"):
        holders = json.loads(f.read_text()).get("holders", {})
        assert not set(holders) & set(bridges), f"sysctl holders left: {holders}"


@pytest.mark.timeout(120)
def test_teardown_leaves_no_rule_or_sysctl(isle):
    isle("run", "-d", "--name", "pp", "-p", "127.0.0.1::80", "busybox", "sleep", "600")
    bridge = _net(isle, "bridge")["Bridge"]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"isle-{bridge}" in tables.split()
    isle("rm", "-f", "pp")
    assert not Path(f"/sys/class/net/{bridge}").exists()
    _assert_no_trace([bridge])


# forwarding sysctls: netavark turns them on for the whole network namespace; isle gives them
# back when its last bridge goes. Run in a private network (and mount, for sysfs) namespace so
# the host's own ip_forward, which other engines rely on, is never touched.
PRIVATE = r"""
import json, os, subprocess, sys
subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
from isle.net import NetworkManager, parse_publish
from isle.net.sysctl import HostSysctls
tmp = sys.argv[1]
def rd(k):
    return open("/proc/sys/" + k).read().strip()
def wr(k, v):
    open("/proc/sys/" + k, "w").write(v)
wr("net/ipv4/ip_forward", "0")
wr("net/ipv6/conf/all/forwarding", "0")
nm = NetworkManager(root=tmp + "/root", runroot=tmp + "/run", default_subnet="10.211.7.0/24",
                    default_bridge="isletstfwd")
nm.sysctls = HostSysctls(state_dir=tmp + "/state")
nm.create("v6", ipv6=True)
out = {}
ns1, ns2 = nm.create_netns("c1"), nm.create_netns("c2")
nm.connect("c1", ns1, ["bridge"], ports=parse_publish("127.0.0.1:18080:80"))
out["up"] = [rd("net/ipv4/ip_forward"), rd("net/ipv4/conf/isletstfwd/route_localnet")]
nm.connect("c2", ns2, ["v6"])
out["v6up"] = rd("net/ipv6/conf/all/forwarding")
nm.teardown("c1")
out["one_left"] = [rd("net/ipv4/ip_forward"), rd("net/ipv6/conf/all/forwarding")]
nm.teardown("c2")
out["down"] = [rd("net/ipv4/ip_forward"), rd("net/ipv6/conf/all/forwarding")]
out["state"] = os.listdir(tmp + "/state")
out["tables"] = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
nm.remove("v6")
print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_forwarding_sysctls_given_back(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cp = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", sys.executable,
                         "-c", PRIVATE, str(tmp_path)], capture_output=True, text=True, timeout=100,
                        env=env)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout.splitlines()[-1])
    assert out["up"] == ["1", "1"]
    assert out["v6up"] == "1"
    assert out["one_left"] == ["1", "1"]          # the IPv6 network still holds forwarding
    assert out["down"] == ["0", "0"]
    assert out["state"] in ([], ["*.lock"]) or all(f.endswith(".lock") for f in out["state"])
    assert "isle-" not in out["tables"]
