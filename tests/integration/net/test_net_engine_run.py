"""`isle run` networking end to end through the real CLI (own --root/--runroot): the default
bridge, --network none/host/container:, user networks with names and aliases, /etc files,
connect/disconnect of a running container, published ports, masquerade, and clean teardown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.networks import network_manager

pytestmark = [pytest.mark.root, pytest.mark.netns]
ISLE = os.path.join(os.path.dirname(sys.executable), "isle")


class Isle:
    def __init__(self, tmp: Path) -> None:
        self.root, self.run = str(tmp / "root"), str(tmp / "run")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
        self.nm = network_manager(Settings(root=self.root, runroot=self.run))

    def __call__(self, *args: str, check: bool = True, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([ISLE, "--root", self.root, "--runroot", self.run, *args],
                            capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and cp.returncode != 0:
            raise AssertionError(f"isle {' '.join(args)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
        return cp

    def inspect(self, ref: str) -> dict:
        return json.loads(self("inspect", ref).stdout)[0]

    def leftovers(self) -> dict[str, object]:
        """What isle's networking holds on the host: records, leases, netns files, bridge ports."""
        st = self.nm.store
        ports = []
        for net in st.networks():
            d = f"/sys/class/net/{net.bridge}/brif"
            ports += os.listdir(d) if os.path.isdir(d) else []
        return {"records": [r["id"] for r in st.records()], "leases": sorted(st.leases().owners()),
                "netns": st.netns_ids(), "bridge_ports": ports}

    def cleanup(self) -> None:
        ids = self("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self("rm", "-f", *ids, check=False)
        self.nm.gc(set())
        for n in self.nm.store.networks():
            if not n.default:
                self.nm.remove(n.name)


CLEAN = {"records": [], "leases": [], "netns": [], "bridge_ports": []}


@pytest.fixture
def isle(tmp_path: Path):
    i = Isle(tmp_path)
    try:
        yield i
    finally:
        i.cleanup()


def _pings(isle: Isle, src: str, dst: str) -> bool:
    """ping by name, retried briefly: aardvark-dns reloads its records on SIGHUP, asynchronously."""
    for _ in range(20):
        if isle("exec", src, "ping", "-c1", "-W1", dst, check=False).returncode == 0:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(120)
def test_default_bridge_none_host_and_etc_files(isle):
    out = isle("run", "--rm", "--hostname", "h1", "--dns", "192.0.2.53", "--dns-search", "corp.example",
               "--add-host", "db.example:192.0.2.9", "busybox", "sh", "-c",
               "ip -o -4 addr show eth0; cat /etc/hostname /etc/hosts /etc/resolv.conf").stdout
    (net,) = [n for n in isle.nm.store.networks() if n.default]
    assert net.name == "bridge"
    sub = net.subnets[0].subnet.rsplit(".", 1)[0]
    assert f"inet {sub}." in out                       # on the default bridge, as in Docker
    assert "h1\n" in out and "192.0.2.9\tdb.example" in out and "\th1" in out
    assert "nameserver 192.0.2.53" in out and "search corp.example" in out
    assert isle.leftovers() == CLEAN                   # --rm undid veth, lease and netns
    # the default subnet collides with no host route (e.g. this host's 192.0.2.0/24)
    import ipaddress
    routes = subprocess.run(["ip", "-o", "route"], capture_output=True, text=True).stdout
    mine = ipaddress.ip_network(net.subnets[0].subnet)
    for ln in routes.splitlines():
        dst = ln.split()[0]
        if dst != "default" and "/" in dst and net.bridge not in ln:
            assert not mine.overlaps(ipaddress.ip_network(dst, strict=False)), ln
    out = isle("run", "--rm", "--network", "none", "--dns-search", "x.example", "busybox", "sh", "-c",
               "ip -o link; cat /etc/resolv.conf").stdout
    assert "lo:" in out and "eth0" not in out and "search x.example" in out
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    out = isle("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link").stdout
    assert len(out.splitlines()) >= len(host_links.splitlines()) - 2   # links come and go
    r = isle("run", "--rm", "--network", "none", "-p", "8080:80", "busybox", "true", check=False)
    assert r.returncode != 0 and "--publish" in r.stderr


@pytest.mark.timeout(180)
def test_names_aliases_on_user_network_not_on_default_and_connect(isle):
    isle("network", "create", "--subnet", "10.206.1.0/24", "isle-test-web")
    isle("run", "-d", "--name", "ca", "--network", "isle-test-web", "--network-alias", "api",
         "busybox", "sleep", "300")
    isle("run", "-d", "--name", "cb", "--network", "isle-test-web", "--ip", "10.206.1.50",
         "busybox", "sleep", "300")
    assert isle.inspect("cb")["NetworkSettings"]["Networks"]["isle-test-web"]["IPAddress"] == "10.206.1.50"
    assert _pings(isle, "ca", "cb")
    ns = isle("exec", "cb", "nslookup", "api").stdout
    a_ip = isle.inspect("ca")["NetworkSettings"]["Networks"]["isle-test-web"]["IPAddress"]
    assert a_ip in ns
    # container:NAME shares a's network namespace
    assert a_ip in isle("run", "--rm", "--network", "container:ca", "busybox", "ip", "-o", "addr").stdout
    # the default network has no name resolution between containers (Docker's)
    isle("run", "-d", "--name", "cc", "busybox", "sleep", "300")
    isle("run", "-d", "--name", "cd", "busybox", "sleep", "300")
    r = isle("exec", "cc", "ping", "-c1", "-W1", "cd", check=False)
    assert r.returncode != 0 and "bad address" in (r.stdout + r.stderr)
    # connect the running c to the user network: a real second interface, names resolve
    hosts0 = isle("exec", "cc", "cat", "/etc/hosts").stdout
    cc_ip = isle.inspect("cc")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    isle("network", "connect", "--alias", "cee", "isle-test-web", "cc")
    assert "eth1" in isle("exec", "cc", "ip", "-o", "link").stdout
    nets = isle.inspect("cc")["NetworkSettings"]["Networks"]
    assert set(nets) == {"bridge", "isle-test-web"}
    # /etc/hosts names the container on the new network too (Docker's), the rest unchanged
    cc_web = nets["isle-test-web"]["IPAddress"]
    own = f"{cc_ip}\t{isle.inspect('cc')['Config']['Hostname']} cc\n"
    assert own in hosts0
    assert isle("exec", "cc", "cat", "/etc/hosts").stdout == hosts0.replace(
        own, own + own.replace(cc_ip, cc_web))
    isle("restart", "-t", "0", "cc")                  # connections survive a restart (Docker's)
    assert "eth1" in isle("exec", "cc", "ip", "-o", "link").stdout
    hosts = isle("exec", "cc", "cat", "/etc/hosts").stdout      # rendered anew at the start
    assert [ln.split("\t")[0] for ln in hosts.splitlines() if ln.endswith(" cc")] == [
        v["IPAddress"] for v in isle.inspect("cc")["NetworkSettings"]["Networks"].values()]
    assert _pings(isle, "cc", "api") and _pings(isle, "ca", "cee")
    r = isle("network", "rm", "isle-test-web", check=False)
    assert r.returncode != 0 and "connected" in r.stderr
    isle("network", "disconnect", "isle-test-web", "cc")
    assert "eth1" not in isle("exec", "cc", "ip", "-o", "link").stdout
    ip_now = isle.inspect("cc")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert isle("exec", "cc", "cat", "/etc/hosts").stdout == hosts0.replace(cc_ip, ip_now)
    assert set(isle.inspect("cc")["NetworkSettings"]["Networks"]) == {"bridge"}
    assert isle("exec", "ca", "ping", "-c1", "-W1", "cee", check=False).returncode != 0
    isle("rm", "-f", "ca", "cb", "cc", "cd")
    assert isle.leftovers() == CLEAN
    isle("network", "rm", "isle-test-web")


def _http(host: str, port: int, tries: int = 50) -> bytes:
    for _ in range(tries):
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                if data:
                    return data
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on {host}:{port}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WEB = ["sh", "-c", "mkdir -p /www && echo hello-$0 > /www/index.html && exec httpd -f -p 80 -h /www"]


@pytest.mark.timeout(180)
def test_published_ports_ranges_publish_all_and_port_verb(isle, tmp_path, outside, procs):
    hp = _free_port()
    isle("run", "-d", "--name", "pw", "-p", f"127.0.0.1:{hp}:80", "-p", "0.0.0.0::81/udp",
         "busybox", *WEB, "one")
    assert b"hello-one" in _http("127.0.0.1", hp)
    lines = isle("port", "pw").stdout.splitlines()
    assert f"80/tcp -> 127.0.0.1:{hp}" in lines and any(ln.startswith("81/udp -> 0.0.0.0:") for ln in lines)
    # a busy host port: clear error, non-zero, nothing left on the network
    before = isle.leftovers()
    r = isle("run", "-d", "--name", "pw2", "-p", f"127.0.0.1:{hp}:80", "busybox", "sleep", "30",
             check=False)
    assert r.returncode != 0 and str(hp) in r.stderr
    isle("rm", "-f", "pw2", check=False)
    assert isle.leftovers() == before
    with socket.socket() as busy:                      # a port some other program holds
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        bp = busy.getsockname()[1]
        r = isle("run", "--rm", "-p", f"127.0.0.1:{bp}:80", "busybox", "true", check=False)
        assert r.returncode != 0 and f"host port {bp}/tcp is already in use" in r.stderr
    assert isle.leftovers() == before
    # a range, reached from another namespace over the host's address there (198.51.100.1)
    lo = _free_port()
    isle("run", "-d", "--name", "pr", "-p", f"{lo}-{lo + 1}:80-81", "busybox", "sh", "-c",
         "mkdir /w && echo ranged > /w/index.html && (httpd -p 81 -h /w) && exec httpd -f -p 80 -h /w")
    assert b"ranged" in _http("127.0.0.1", lo + 1)
    got = subprocess.run(["nsenter", f"--net={outside}", "wget", "-qO-", "-T", "5",
                          f"http://198.51.100.1:{lo}/"], capture_output=True, text=True, timeout=20)
    assert got.stdout.strip() == "ranged", got.stderr
    # outbound is masqueraded: the outside namespace sees the host's address, not the container's
    procs.py_server(outside, 7007)
    seen = isle("run", "--rm", "busybox", "nc", "198.51.100.2", "7007").stdout.strip()
    assert seen == "198.51.100.1"
    # -P publishes the image's EXPOSEd ports on random host ports
    isle("commit", "-c", "EXPOSE 80", "pw", "isle-test-exposed:1")
    isle("run", "-d", "--name", "pe", "-P", "isle-test-exposed:1", *WEB, "exposed")
    (line,) = isle("port", "pe").stdout.splitlines()
    assert line.startswith("80/tcp -> 0.0.0.0:")
    assert b"hello-exposed" in _http("127.0.0.1", int(line.rsplit(":", 1)[1]))
    isle("rm", "-f", "pw", "pr", "pe")
    assert isle.leftovers() == CLEAN


@pytest.mark.timeout(120)
def test_bad_network_input_fails_clearly_and_leaves_nothing(isle):
    isle("network", "create", "--subnet", "10.206.2.0/29", "--ip-range", "10.206.2.0/30",
         "isle-test-small")
    for args, needle in (
            (["network", "create", "--subnet", "10.206.2.0/24", "isle-test-x"], "overlaps 10.206.2.0/29"),
            (["network", "create", "--subnet", "10.206.300.0/24", "isle-test-x"], "10.206.300.0/24"),
            (["network", "create", "--subnet", "10.206.3.0/24", "--gateway", "10.206.4.1",
              "isle-test-x"], "10.206.4.1"),
            (["run", "--rm", "--network", "isle-test-small", "--ip", "10.206.9.9", "busybox",
              "true"], "10.206.9.9 is outside the subnets"),
            (["run", "--rm", "--network", "isle-test-nope", "busybox", "true"], "isle-test-nope"),
            (["run", "--rm", "--dns", "not-an-ip", "busybox", "true"], "not-an-ip"),
            (["run", "--rm", "-p", "99999:80", "busybox", "true"], "99999")):
        r = isle(*args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    assert [n.name for n in isle.nm.store.networks()] == ["bridge", "isle-test-small"]
    isle("run", "-d", "--name", "ps1", "--network", "isle-test-small", "--ip", "10.206.2.2",
         "busybox", "sleep", "300")
    before = isle.leftovers()
    r = isle("run", "-d", "--name", "ps2", "--network", "isle-test-small", "--ip", "10.206.2.2",
             "busybox", "sleep", "300", check=False)
    assert r.returncode != 0 and "10.206.2.2 is already taken" in r.stderr
    isle("run", "-d", "--name", "ps3", "--network", "isle-test-small", "busybox", "sleep", "300")
    r = isle("run", "-d", "--name", "ps4", "--network", "isle-test-small", "busybox", "sleep", "300",
             check=False)      # the /30 range holds .1 (gateway), .2 and .3
    assert r.returncode != 0 and "isle-test-small has no free address" in r.stderr
    isle("rm", "-f", "ps2", "ps4")
    assert len(isle.leftovers()["records"]) == 2      # s1 and s3 only: s2, s4 left nothing
    isle("rm", "-f", "ps1", "ps3")
    assert isle.leftovers() == CLEAN


@pytest.mark.timeout(120)
def test_ipv6_internal_labels_and_container_mode_errors(isle):
    isle("network", "create", "--ipv6", "--internal", "--label", "team=net", "--subnet",
         "10.206.6.0/24", "isle-test-v6")
    (info,) = json.loads(isle("network", "inspect", "isle-test-v6").stdout)
    assert info["IPv6"] and info["Internal"] and info["Labels"] == {"team": "net"}
    v6 = [s["subnet"] for s in info["Subnets"] if ":" in s["subnet"]]
    assert v6 and v6[0].startswith("fd")
    out = isle("run", "--rm", "--network", "isle-test-v6", "busybox", "sh", "-c",
               "ip -o addr show eth0; echo ROUTES; ip route").stdout
    addrs, routes = out.split("ROUTES")
    assert "inet 10.206.6." in addrs and "inet6 " + v6[0].split("::")[0] in addrs
    assert "default" not in routes                        # --internal: no way out
    for args, needle in ((["--network", "container:isle-nosuch"], "isle-nosuch"),
                         (["--network", "container:"], "container"),
                         (["--network", "host", "--ip", "10.1.1.1"], "--ip")):
        r = isle("run", "--rm", *args, "busybox", "true", check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    isle("network", "rm", "isle-test-v6")
    assert isle.leftovers() == CLEAN


def test_default_network_avoids_host_routes(tmp_path):
    """The default subnet never collides with a host route (this host has 192.0.2.0/24): if the
    usual one is taken, a free /24 is picked instead of failing every `run`."""
    import ipaddress

    from isle.net import NetworkManager

    routes = subprocess.run(["ip", "-o", "route"], capture_output=True, text=True).stdout
    taken = [ln.split()[0] for ln in routes.splitlines() if "/" in ln.split()[0]]
    assert taken
    nm = NetworkManager(str(tmp_path / "n"), str(tmp_path / "r"), default_subnet=taken[0])
    (net,) = [n for n in nm.list() if n.default]
    mine = ipaddress.ip_network(net.subnets[0].subnet)
    assert not any(mine.overlaps(ipaddress.ip_network(t, strict=False)) for t in taken)


@pytest.mark.timeout(180)
def test_connect_and_disconnect_a_stopped_container_take_effect_at_start(isle):
    """Docker's: `network connect` on a created or stopped container joins at its next start,
    with its --ip and --alias; a static --ip given to a running container survives a restart."""
    isle("network", "create", "--subnet", "10.206.11.0/24", "isle-test-nx")
    isle("network", "create", "--subnet", "10.206.12.0/24", "isle-test-ny")
    isle("create", "--name", "s1", "--network", "isle-test-nx", "busybox", "sleep", "300")
    isle("network", "connect", "--ip", "10.206.12.40", "--alias", "why", "isle-test-ny", "s1")
    assert isle.leftovers() == CLEAN                  # nothing on the host until it starts
    assert isle.inspect("s1")["HostConfig"]["NetworkMode"] == "isle-test-nx,isle-test-ny"
    for args, needle in ((["isle-test-ny", "s1"], "already connected to network isle-test-ny"),
                         (["isle-test-nope", "s1"], "isle-test-nope"),
                         (["isle-test-nx", "nosuch"], "nosuch")):
        r = isle("network", "connect", *args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    isle("start", "s1")
    out = isle("exec", "s1", "ip", "-o", "-4", "addr").stdout
    assert "eth0    inet 10.206.11." in out and "eth1    inet 10.206.12.40/24" in out, out
    found = isle("run", "--rm", "--network", "isle-test-ny", "busybox", "nslookup", "why").stdout
    assert "10.206.12.40" in found
    isle("stop", "-t", "0", "s1")
    isle("network", "disconnect", "isle-test-nx", "s1")
    r = isle("network", "disconnect", "isle-test-nx", "s1", check=False)
    assert r.returncode != 0 and "not connected to network isle-test-nx" in r.stderr
    isle("start", "s1")
    out = isle("exec", "s1", "ip", "-o", "-4", "addr").stdout
    assert "eth0    inet 10.206.12.40/24" in out and "10.206.11." not in out, out
    # running: connect with a static address, which the next start keeps
    isle("network", "connect", "--ip", "10.206.11.77", "isle-test-nx", "s1")
    isle("restart", "-t", "0", "s1")
    out = isle("exec", "s1", "ip", "-o", "-4", "addr").stdout
    assert "10.206.12.40/24" in out and "10.206.11.77/24" in out, out
    isle("run", "-d", "--name", "n1", "--network", "none", "busybox", "sleep", "300")
    r = isle("network", "connect", "isle-test-nx", "n1", check=False)
    assert r.returncode != 0 and "--network none" in r.stderr
    isle("rm", "-f", "s1", "n1")
    assert isle.leftovers() == CLEAN
