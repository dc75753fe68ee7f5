"""Engine speed and density: isle against podman, Docker (and bare runc) side by side, in one run.

    .venv/bin/python bench/engine_bench.py [--rounds 20] [--idle 200] [--peers isle,podman,docker,runc]
                                           [--out bench/results] [--quick]

1. `run --rm busybox true` (--network none), interleaved round by round: isle, podman, docker,
   and a bare `runc run` of the same rootfs as the floor. Median and p90 wall time, ratios.
2. Idle density: N x `run -d busybox sleep 1d` per engine, one engine at a time: creation rate,
   host memory per idle container beyond the containers' own processes (MemAvailable delta minus
   the PSS of the `sleep`s; also the monitor's own PSS), time of `ps -a`, time to remove them all.
Every peer gets private storage under a temp dir (bench/peers.py); all is removed after.
The same busybox-static rootfs is imported into podman and Docker, isle makes its own from it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers import Dockerd, busybox_rootfs, podman_prefix

REPO = Path(__file__).resolve().parents[1]
ISLE = str(REPO / ".venv" / "bin" / "isle")


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(argv, capture_output=True, text=True, **kw)
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {cp.returncode}: {cp.stderr.strip()[-500:]}")
    return cp


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {cp.returncode}: {cp.stderr.decode()[-500:]}")
    return dt


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def pids_named(comm: str, under: str = "") -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != comm:
                    continue
            if under:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if under.encode() not in f.read():
                        continue
            out.append(int(d))
        except OSError:
            continue
    return out


class Engine:
    name = ""
    monitor = "conmon"

    def cli(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def run_rm(self) -> list[str]:
        return self.cli() + ["run", "--rm", "--network", "none", "busybox", "true"]

    def run_d(self, name: str) -> list[str]:
        return self.cli() + ["run", "-d", "--network", "none", "--name", name, "busybox",
                             "sleep", "86400"]

    def ps(self) -> list[str]:
        return self.cli() + ["ps", "-a"]

    def rm_all(self, names: list[str]) -> list[str]:
        return self.cli() + ["rm", "-f", *names]

    def close(self) -> None:
        pass


class Isle(Engine):
    name = "isle"

    def __init__(self, tmp: str, runtime: str) -> None:
        self.root, self.runroot = f"{tmp}/isle/root", f"{tmp}/isle/run"
        self.runtime = runtime
        sh([ISLE, *self.cli()[1:], "run", "--rm", "--network", "none", "busybox", "true"])  # makes the image

    def cli(self) -> list[str]:
        c = [ISLE, "--root", self.root, "--runroot", self.runroot]
        return c

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        if self.runtime:
            e["ISLE_RUNTIME"] = self.runtime
        return e

    def close(self) -> None:
        ids = subprocess.run(self.cli() + ["ps", "-aq"], capture_output=True, text=True,
                             env=self.env()).stdout.split()
        if ids:
            subprocess.run(self.cli() + ["rm", "-f", *ids], capture_output=True, env=self.env())


class Podman(Engine):
    name = "podman"

    def __init__(self, tmp: str, tar: str) -> None:
        self.prefix = podman_prefix(f"{tmp}/podman")
        sh(self.prefix + ["import", tar, "busybox:latest"])

    def cli(self) -> list[str]:
        return self.prefix

    def rm_all(self, names: list[str]) -> list[str]:
        return self.prefix + ["rm", "-f", "-t", "0", *names]

    def close(self) -> None:
        subprocess.run(self.prefix + ["rm", "-af", "-t", "0"], capture_output=True)
        subprocess.run(self.prefix + ["rmi", "-af"], capture_output=True)
        subprocess.run(self.prefix + ["system", "reset", "-f"], capture_output=True)


class Docker(Engine):
    name = "docker"
    monitor = "containerd-shim-runc-v2"

    def __init__(self, tmp: str, tar: str) -> None:
        self.dir = f"{tmp}/docker"
        self.dockerd = Dockerd(self.dir).start()
        self.host = self.dockerd.host
        sh(["docker", "-H", self.host, "import", tar, "busybox:latest"])

    def cli(self) -> list[str]:
        return ["docker", "-H", self.host]

    def rm_all(self, names: list[str]) -> list[str]:
        return self.cli() + ["rm", "-f", *names]

    def close(self) -> None:
        ids = subprocess.run(self.cli() + ["ps", "-aq"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(self.cli() + ["rm", "-f", *ids], capture_output=True)
        self.dockerd.stop()
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mp = line.split()[4]
            if mp.startswith(self.dir):
                subprocess.run(["umount", "-l", mp], capture_output=True)


class Runc(Engine):
    name = "runc"

    def __init__(self, tmp: str, rootfs: str) -> None:
        self.b = f"{tmp}/runc-bundle"
        os.makedirs(self.b, exist_ok=True)
        sh(["runc", "spec", "-b", self.b])
        cfg = json.loads(Path(self.b, "config.json").read_text())
        cfg["root"]["path"] = rootfs
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["true"]
        Path(self.b, "config.json").write_text(json.dumps(cfg))
        self.n = 0

    def run_rm(self) -> list[str]:
        self.n += 1
        return ["runc", "--root", f"{self.b}/state", "run", "-b", self.b, f"bench-{os.getpid()}-{self.n}"]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_run_rm(engines: list[Engine], rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {e.name: [] for e in engines}
    for e in engines:  # warm-up
        timed(e.run_rm(), e.env())
    for _ in range(rounds):
        for e in engines:
            samples[e.name].append(timed(e.run_rm(), e.env()))
    med = {k: statistics.median(v) for k, v in samples.items()}
    out: dict[str, Any] = {}
    for k, v in samples.items():
        out[k] = {"median_ms": med[k] * 1000, "p90_ms": pct(v, 0.9) * 1000,
                  "samples_ms": [round(x * 1000, 2) for x in v]}
        for other in ("podman", "docker", "runc"):
            if other in med and other != k:
                out[k][f"vs_{other}"] = med[k] / med[other]
    return out


def bench_idle(e: Engine, n: int) -> dict[str, Any]:
    names = [f"idle-{os.getpid()}-{i}" for i in range(n)]
    before = mem_available_kib()
    t = time.perf_counter()
    for nm in names:
        timed(e.run_d(nm), e.env())
    create_s = time.perf_counter() - t
    time.sleep(2)
    after = mem_available_kib()
    sleeps = [p for p in pids_named("sleep") if _cmd(p) == ["sleep", "86400"]]
    sleep_pss = sum(pss_kib(p) for p in sleeps)
    mons = pids_named(e.monitor)
    mon_pss = [pss_kib(p) for p in mons]
    t = time.perf_counter()
    timed(e.ps(), e.env())
    ps_s = time.perf_counter() - t
    t = time.perf_counter()
    timed(e.rm_all(names), e.env())
    rm_s = time.perf_counter() - t
    used = before - after
    return {"containers": n, "create_per_s": n / create_s, "create_total_s": create_s,
            "host_mem_per_container_mib": (used - sleep_pss) / n / 1024,
            "monitor_pss_mib": statistics.median(mon_pss) / 1024 if mon_pss else None,
            "monitors_seen": len(mons), "sleeps_seen": len(sleeps), "ps_s": ps_s, "rm_all_s": rm_s}


def _cmd(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [x.decode() for x in f.read().split(b"\0") if x]
    except OSError:
        return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--peers", default="isle,podman,docker,runc")
    ap.add_argument("--runtime", default="", help="isle's runtime (default: its own default)")
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 20 idle containers")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.idle = 5, 20
    if os.geteuid() != 0:
        print("engine_bench needs root", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "isle")],
                   capture_output=True)
    want = a.peers.split(",")
    tmp = tempfile.mkdtemp(prefix="isle-engine-bench-")
    engines: list[Engine] = []
    try:
        rootfs = f"{tmp}/rootfs"
        busybox_rootfs(rootfs)
        tar = f"{tmp}/busybox.tar"
        sh(["tar", "-C", rootfs, "-cf", tar, "."])
        if "isle" in want:
            engines.append(Isle(tmp, a.runtime))
        if "podman" in want and shutil.which("podman"):
            engines.append(Podman(tmp, tar))
        if "docker" in want and shutil.which("dockerd"):
            engines.append(Docker(tmp, tar))
        if "runc" in want and shutil.which("runc"):
            engines.append(Runc(tmp, rootfs))
        res: dict[str, Any] = {"host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                                        "load": os.getloadavg()},
                               "run_rm": bench_run_rm(engines, a.rounds), "idle": {}}
        print(f"\nrun --rm busybox true ({a.rounds} interleaved rounds)")
        print(f"{'engine':<8}{'median ms':>10}{'p90 ms':>9}{'/podman':>9}{'/docker':>9}{'/runc':>8}")
        for k, v in res["run_rm"].items():
            f = lambda x: f"{v[x]:>{9 if x != 'vs_runc' else 8}.2f}" if x in v else "        -"  # noqa: E731
            print(f"{k:<8}{v['median_ms']:>10.1f}{v['p90_ms']:>9.1f}{f('vs_podman')}{f('vs_docker')}"
                  f"{f('vs_runc')}")
        if not a.skip_idle:
            print(f"\n{a.idle} idle containers (sleep 86400, -d)")
            print(f"{'engine':<8}{'create/s':>9}{'MiB/ctr':>9}{'monitor':>9}{'ps s':>7}{'rm all s':>9}")
            for e in engines:
                if isinstance(e, Runc):
                    continue
                r = bench_idle(e, a.idle)
                res["idle"][e.name] = r
                mon = f"{r['monitor_pss_mib']:.2f}" if r["monitor_pss_mib"] is not None else "-"
                print(f"{e.name:<8}{r['create_per_s']:>9.1f}{r['host_mem_per_container_mib']:>9.2f}"
                      f"{mon:>9}{r['ps_s']:>7.2f}{r['rm_all_s']:>9.2f}", flush=True)
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, "engine.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        print(f"\nresults: {path}")
    finally:
        for e in engines:
            with contextlib.suppress(Exception):
                e.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
