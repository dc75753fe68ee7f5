"""Soak: N x `isle run -d` then `rm -f` of them all, in a private root; nothing may be left.

    .venv/bin/python bench/soak_bench.py [--count 1000] [--batch 50] [--network bridge|none]
                                         [--out bench/results]

Containers are made in batches (`run -d` one after another, as a script would), the host's
MemAvailable and the monitors' PSS are sampled after each batch, then all are removed with one
`rm -f` per batch. Printed: per-phase time (total, per container, p50/p90 of `run -d`), host
memory per running container, `ps -a` time at the peak, and a leak check afterwards, printed
item by item: records, container directories, mounts under the root and runroot (overlays, netns
bind mounts), netns files, conmon processes, cgroups (every hierarchy), the bridge's ports
(veths), nftables rules naming the bridge or its subnet beyond those before the first container.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ISLE = str(REPO / ".venv" / "bin" / "isle")


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def monitors(runroot: str) -> list[int]:
    """conmon pids of this root (their argv names its runroot)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"conmon") and any(runroot.encode() in a for a in argv):
            out.append(int(d))
    return out


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(path)]


def cgroups_of(ids: set[str]) -> list[str]:
    """The containers' cgroups (cgroupsPath isle-<id>) in every hierarchy, and under /isle (the
    hierarchies of the host's setup: v1, v2 or hybrid)."""
    from isle.kube.node import cgroup_hierarchies

    found = []
    for h in cgroup_hierarchies():
        for base in (h, f"{h}/isle"):
            if not os.path.isdir(base):
                continue
            found += [f"{base}/{e}" for e in os.listdir(base)
                      if e.removeprefix("isle-") in ids]
    return found


def nft_lines(words: list[str]) -> set[str]:
    """The nftables ruleset's lines that name any of words (the bridge, its subnet)."""
    cp = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    return {ln.strip() for ln in cp.stdout.splitlines() if any(w in ln for w in words)}


def _prefix(subnet: str) -> str:
    """"10.77.0.0/16" -> "10.77." (the octets its mask fixes: what its addresses start with)."""
    addr, _, bits = subnet.partition("/")
    return ".".join(addr.split(".")[:max(int(bits or 32) // 8, 1)]) + "."


def bridge_ports(bridge: str) -> list[str]:
    try:
        return os.listdir(f"/sys/class/net/{bridge}/brif")
    except OSError:
        return []


def cgroup_mem_kib(ids: list[str]) -> int:
    """The containers' own memory (cgroup v1 memory.usage_in_bytes, else v2 memory.current)."""
    total = 0
    for cid in ids:
        for p in (f"/sys/fs/cgroup/memory/isle-{cid}/memory.usage_in_bytes",
                  f"/sys/fs/cgroup/isle-{cid}/memory.current"):
            try:
                with open(p) as f:
                    total += int(f.read()) // 1024
                break
            except OSError:
                continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--network", default="bridge")
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="isle-soak-", dir="/var/tmp")
    root, runroot = os.path.join(tmp, "root"), os.path.join(tmp, "run")
    base = [ISLE, "--root", root, "--runroot", runroot]

    def isle(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(base + list(args), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
        if check and cp.returncode:
            raise RuntimeError(f"isle {' '.join(args)} -> {cp.returncode}: {cp.stderr[-400:]}")
        return cp

    isle("run", "--rm", "--network", a.network, "busybox", "true")  # image + network made
    bridge, words = "", []
    if a.network not in ("none", "host"):
        net = json.loads(isle("network", "inspect", a.network).stdout)[0]
        bridge = net.get("Bridge") or ""
        words = [w for w in [bridge] + [_prefix(s["subnet"]) for s in net.get("Subnets") or []
                                        if "." in s["subnet"]] if w]
    nft0 = nft_lines(words) if words else set()
    mem0 = mem_available_kib()
    ids: list[str] = []
    run_times: list[float] = []
    samples: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    try:
        while len(ids) < a.count:
            for _ in range(min(a.batch, a.count - len(ids))):
                t = time.perf_counter()
                cp = isle("run", "-d", "--network", a.network, "busybox", "sleep", "1d")
                run_times.append(time.perf_counter() - t)
                ids.append(cp.stdout.strip())
            mons = monitors(runroot)
            samples.append({"n": len(ids), "mem_used_kib": mem0 - mem_available_kib(),
                            "monitor_pss_kib": sum(pss_kib(p) for p in mons),
                            "cgroup_kib": cgroup_mem_kib(ids)})
            # host-wide MemAvailable moves with everything else on the host: the monitors' PSS
            # and the containers' cgroups are this soak's own numbers
            print(f"{len(ids):5d} running  host mem +{samples[-1]['mem_used_kib'] / 1024:7.1f} MiB"
                  f"  monitors' PSS {samples[-1]['monitor_pss_kib'] / 1024:6.1f} MiB"
                  f"  containers' cgroups {samples[-1]['cgroup_kib'] / 1024:6.1f} MiB"
                  f"  last run -d {run_times[-1] * 1000:6.0f} ms", flush=True)
        t_create = time.perf_counter() - t_all
        t = time.perf_counter()
        n_ps = len(isle("ps", "-aq").stdout.split())
        t_ps = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        for i in range(0, len(ids), a.batch):
            isle("rm", "-f", *ids[i:i + a.batch], check=False)
        t_rm = time.perf_counter() - t
    left = {
        "records": isle("ps", "-aq", check=False).stdout.split(),
        "container_dirs": os.listdir(os.path.join(root, "containers"))
        if os.path.isdir(os.path.join(root, "containers")) else [],
        "mounts": mounts_under(tmp),
        "netns": os.listdir(os.path.join(runroot, "networks", "netns"))
        if os.path.isdir(os.path.join(runroot, "networks", "netns")) else [],
        "monitors": monitors(runroot),
        "cgroups": cgroups_of(set(ids)),
        "veths": bridge_ports(bridge) if bridge else [],
        "nft_rules": sorted(nft_lines(words) - nft0) if words else [],
    }
    for k, v in left.items():
        print(f"left after rm -f: {k:15s} {len(v):5d}  {'ok' if not v else v[:3]}")
    n = len(ids)
    per = (samples[-1]["mem_used_kib"] / n) if n else 0
    res = {
        "count": n, "network": a.network,
        "create_s": round(t_create, 2),
        "run_d_ms_p50": round(statistics.median(run_times) * 1000, 1),
        "run_d_ms_p90": round(sorted(run_times)[int(0.9 * (n - 1))] * 1000, 1),
        "ps_a_s": round(t_ps, 3), "ps_count": n_ps, "rm_f_s": round(t_rm, 2),
        "rm_f_ms_per": round(t_rm / n * 1000, 1) if n else 0,
        "host_mem_kib_per_container": round(per, 1),
        "monitor_pss_kib_per_container": round(samples[-1]["monitor_pss_kib"] / n, 1) if n else 0,
        "cgroup_kib_per_container": round(samples[-1]["cgroup_kib"] / n, 1) if n else 0,
        "left": {k: v[:5] for k, v in left.items() if v},
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, f"soak-{int(time.time())}.json"), "w") as f:
            json.dump(res, f, indent=1)
    isle("network", "prune", "-f", check=False)
    subprocess.run(["rm", "-rf", tmp], check=False)
    if res["left"]:
        print("LEAKED:", res["left"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
