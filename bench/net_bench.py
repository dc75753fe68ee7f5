"""Network speed: isle's bridge and published ports against host loopback and podman's rootful
network (netavark), for the same pair of namespaces, in one run, with ratios.

    .venv/bin/python bench/net_bench.py [--seconds 3] [--reps 3] [--conns 400] [--out FILE]

Both sides get the same servers: iperf3 and a tiny accept-and-close server are started *inside*
each container's network namespace (nsenter), so only the network plumbing differs. Podman runs
with its own storage (/work/shared/peers/podman-env) and network config dir; nothing is left.
Traffic goes only to 127.0.0.1 and to addresses on the bridges created here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from isle.net import NetworkManager, parse_publish

PEERS = "/work/shared/peers"
SERVER = ("import socket\ns=socket.socket(); s.setsockopt(1,2,1); s.bind(('0.0.0.0',7000)); "
          "s.listen(512)\nwhile True:\n c,_=s.accept(); c.sendall(b'x'); c.close()\n")


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, **kw)


class Servers:
    """iperf3 -s and the connect server inside a namespace (None = host)."""

    def __init__(self, ns: str | None) -> None:
        pre = ["nsenter", f"--net={ns}", "--"] if ns else []
        self.procs = [subprocess.Popen(pre + ["iperf3", "-s", "-p", "5201"],
                                       stdout=subprocess.DEVNULL),
                      subprocess.Popen(pre + [sys.executable, "-c", SERVER])]
        time.sleep(0.5)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def iperf(ns: str | None, host: str, port: int, seconds: float) -> float:
    """Gbit/s received, one TCP stream, client in ns (None = host)."""
    pre = ["nsenter", f"--net={ns}", "--"] if ns else []
    out = sh(pre + ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"]).stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def connects(host: str, port: int, n: int) -> list[float]:
    """Seconds from connect() to the server's byte arriving, n fresh connections."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        with socket.create_connection((host, port), timeout=5) as s:
            s.recv(1)
        out.append(time.perf_counter() - t)
    return out


class IsleSide:
    name = "isle"

    def __init__(self, tmp: str) -> None:
        self.nm = NetworkManager(root=f"{tmp}/isle/networks", runroot=f"{tmp}/isle-run/networks",
                                 default_bridge="islebenchdef", default_subnet="10.207.9.0/24")
        self.net = f"isle-bench-{secrets.token_hex(3)}"
        self.ids = ["ba" * 32, "bb" * 32]

    def up(self) -> dict[str, Any]:
        self.nm.create(self.net, subnet="10.207.1.0/24")
        a, b = (self.nm.create_netns(i) for i in self.ids)
        att = self.nm.connect(self.ids[0], a, [self.net],
                              parse_publish("127.0.0.1::5201") + parse_publish("127.0.0.1::7000"))
        self.nm.connect(self.ids[1], b, [self.net])
        return {"ns_a": a, "ns_b": b, "ip_a": att.ip, "iperf_port": att.ports[0].host_port,
                "conn_port": att.ports[1].host_port}

    def down(self) -> None:
        for i in self.ids:
            self.nm.teardown(i)
        self.nm.remove(self.net)


class PodmanSide:
    name = "podman"

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.rootfs = sh([f"{PEERS}/busybox-rootfs", f"{tmp}/rootfs"]).stdout.strip()
        prefix = sh([f"{PEERS}/podman-env", f"{tmp}/podman"]).stdout.strip()
        os.makedirs(f"{tmp}/podman-net", exist_ok=True)
        self.podman = shlex.split(prefix) + ["--network-config-dir", f"{tmp}/podman-net"]
        self.net = f"isle-bench-pod-{secrets.token_hex(3)}"
        self.names = [f"isle-bench-a-{secrets.token_hex(3)}", f"isle-bench-b-{secrets.token_hex(3)}"]

    def p(self, *args: str) -> str:
        return sh(self.podman + list(args)).stdout.strip()

    def up(self) -> dict[str, Any]:
        self.p("network", "create", "--subnet", "10.207.2.0/24", self.net)
        for i, n in enumerate(self.names):
            pub = ["-p", "127.0.0.1::5201", "-p", "127.0.0.1::7000"] if i == 0 else []
            self.p("run", "-d", "--name", n, "--network", self.net, *pub, "--rootfs", self.rootfs,
                   "sleep", "100000")
        pid_a, ip_a = self.p("inspect", "--format",
                             "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             self.names[0]).split()
        pid_b = self.p("inspect", "--format", "{{.State.Pid}}", self.names[1])
        ports = {}
        for line in self.p("port", self.names[0]).splitlines():   # "5201/tcp -> 127.0.0.1:40123"
            ports[int(line.split("/")[0])] = int(line.rsplit(":", 1)[1])
        return {"ns_a": f"/proc/{pid_a}/ns/net", "ns_b": f"/proc/{pid_b}/ns/net", "ip_a": ip_a,
                "iperf_port": ports[5201], "conn_port": ports[7000]}

    def down(self) -> None:
        subprocess.run(self.podman + ["rm", "-f", "-t", "0", *self.names], capture_output=True)
        subprocess.run(self.podman + ["network", "rm", self.net], capture_output=True)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=400)
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "net.json"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="isle-bench-net-")
    sides: list[Any] = [IsleSide(tmp)]
    if not args.no_podman and shutil.which("podman") and os.geteuid() == 0:
        sides.append(PodmanSide(tmp))
    samples: dict[str, list[float]] = {}
    envs: dict[str, dict[str, Any]] = {}
    servers: list[Servers] = []
    try:
        for side in sides:
            envs[side.name] = side.up()
            servers.append(Servers(envs[side.name]["ns_a"]))
        lo_port = 15201 + secrets.randbelow(1000)
        lo = subprocess.Popen(["iperf3", "-s", "-p", str(lo_port), "-B", "127.0.0.1"],
                              stdout=subprocess.DEVNULL)
        lo_conn = subprocess.Popen([sys.executable, "-c", SERVER.replace("0.0.0.0", "127.0.0.1")
                                    .replace("7000", str(lo_port + 1))])
        time.sleep(0.5)
        try:
            for rep in range(args.reps):        # interleaved, order alternating: drift and
                samples.setdefault("loopback/tcp_gbps", []).append(   # neighbours hit all alike
                    iperf(None, "127.0.0.1", lo_port, args.seconds))
                for side in (sides if rep % 2 == 0 else sides[::-1]):
                    e = envs[side.name]
                    samples.setdefault(f"{side.name}/c2c_gbps", []).append(
                        iperf(e["ns_b"], e["ip_a"], 5201, args.seconds))
                    samples.setdefault(f"{side.name}/c2h_gbps", []).append(
                        iperf(None, "127.0.0.1", e["iperf_port"], args.seconds))
            for rep in range(4):
                samples.setdefault("loopback/connect_s", []).extend(
                    connects("127.0.0.1", lo_port + 1, args.conns // 4))
                for side in (sides if rep % 2 == 0 else sides[::-1]):
                    samples.setdefault(f"{side.name}/connect_s", []).extend(
                        connects("127.0.0.1", envs[side.name]["conn_port"], args.conns // 4))
        finally:
            for p in (lo, lo_conn):
                p.kill()
                p.wait()
    finally:
        for s in servers:
            s.stop()
        for side in sides:
            if side.name in envs:
                side.down()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for metric, unit in (("c2c_gbps", "Gbit/s"), ("c2h_gbps", "Gbit/s"), ("connect_s", "us")):
        for side in [s.name for s in sides]:
            k = f"{side}/{metric}"
            v = med[k] * (1e6 if unit == "us" else 1)
            lo_k = "loopback/tcp_gbps" if unit != "us" else "loopback/connect_s"
            vs_lo = med[k] / med[lo_k]
            vs_pod = med[k] / med[f"podman/{metric}"] if f"podman/{metric}" in med else None
            p90 = pct(samples[k], 0.9) * 1e6 if unit == "us" else None
            rows.append({"metric": metric, "side": side, "median": v, "unit": unit, "p90": p90,
                         "vs_loopback": vs_lo, "vs_podman": vs_pod})
    lo_row = {"tcp_gbps": med["loopback/tcp_gbps"], "connect_us": med["loopback/connect_s"] * 1e6}
    print(f"{'metric':<11}{'side':<8}{'median':>12}  {'p90':>8}  {'/loopback':>9}  {'/podman':>8}")
    print(f"{'tcp':<11}{'loopback':<8}{lo_row['tcp_gbps']:>9.2f} Gb{'':>10}")
    print(f"{'connect':<11}{'loopback':<8}{lo_row['connect_us']:>9.1f} us")
    for r in rows:
        p90 = f"{r['p90']:8.1f}" if r["p90"] is not None else " " * 8
        pod = f"{r['vs_podman']:8.3f}" if r["vs_podman"] is not None else "       -"
        u = "Gb" if r["unit"] == "Gbit/s" else "us"
        print(f"{r['metric']:<11}{r['side']:<8}{r['median']:>9.2f} {u}  {p90}  "
              f"{r['vs_loopback']:9.3f}  {pod}")
    result = {"bench": "net", "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                                       "loadavg": os.getloadavg()},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "params": vars(args), "loopback": lo_row, "rows": rows, "samples": samples}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
