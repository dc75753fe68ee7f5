"""Pod start to ready through containerd's CRI, per runtime handler, interleaved.

    .venv/bin/python bench/kube_bench.py [--rounds 5] [--handlers runc,isle,isle-vm] [--out DIR]

One round per handler in turn (runc, isle, isle-vm, runc, ...): crictl runp + create + start of
one busybox container, timed until crictl start returns (the container is running), then the pod
is removed untimed. A private containerd (`isle kube up`) with a busybox image made offline by
isle; crictl from PATH or scripts/critest's build. Reports the median per handler and the
median of per-round ratios against runc (target: isle <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

ISLE = str(REPO / ".venv" / "bin" / "isle")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--handlers", default="runc,isle")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = ap.parse_args()
    from isle.kube import node as kn

    crictl = kn.crictl_path()
    if crictl is None:
        sys.exit("kube_bench: needs crictl (scripts/critest build)")
    handlers = a.handlers.split(",")
    top = Path(tempfile.mkdtemp(prefix="isle-kb-", dir="/var/tmp"))
    d = top / "n"
    img = top / "busybox.tar"
    subprocess.run([ISLE, "--root", str(top / "r"), "--runroot", str(top / "rr"), "save", "-o",
                    str(img), "busybox"], check=True, capture_output=True)
    kn.up(str(d))
    sock = "unix://" + str(d / "containerd.sock")
    cri = [crictl, "-r", sock, "-i", sock, "--timeout", "60s"]
    times: dict[str, list[float]] = {h: [] for h in handlers}
    phases: dict[str, list[tuple[float, float, float]]] = {h: [] for h in handlers}
    try:
        subprocess.run(["ctr", "-a", str(d / "containerd.sock"), "-n", "k8s.io", "images",
                        "import", str(img)], check=True, capture_output=True)
        ccfg = top / "c.json"
        ccfg.write_text(json.dumps({"metadata": {"name": "c"}, "command": ["sleep", "300"],
                                    "image": {"image": "docker.io/library/busybox:latest"},
                                    "log_path": "c.log", "linux": {}}))
        n = 0
        for r in range(a.rounds + 1):  # round 0 warms up (snapshot unpack, caches)
            for h in handlers:
                n += 1
                pcfg = top / f"p{n}.json"
                pcfg.write_text(json.dumps({
                    "metadata": {"name": f"b{n}", "namespace": "bench", "uid": f"u{n}",
                                 "attempt": 1}, "log_directory": str(top / "logs" / str(n)),
                    "linux": {}}))
                t = time.perf_counter()
                pod = subprocess.run(cri + ["runp", "--runtime", h, str(pcfg)], check=True,
                                     capture_output=True, text=True).stdout.strip()
                t1 = time.perf_counter()
                cid = subprocess.run(cri + ["create", pod, str(ccfg), str(pcfg)], check=True,
                                     capture_output=True, text=True).stdout.strip()
                t2 = time.perf_counter()
                subprocess.run(cri + ["start", cid], check=True, capture_output=True)
                dt = time.perf_counter() - t
                if r:
                    phases[h].append((t1 - t, t2 - t1, t + dt - t2))
                subprocess.run(cri + ["rmp", "-f", pod], check=True, capture_output=True)
                if r:
                    times[h].append(dt)
                    ph = phases[h][-1]
                    print(f"round {r} {h:8} {dt * 1000:7.0f} ms  (runp {ph[0] * 1000:.0f}, "
                          f"create {ph[1] * 1000:.0f}, start {ph[2] * 1000:.0f})", flush=True)
    finally:
        kn.down(str(d), purge=True)
        import shutil

        shutil.rmtree(top, ignore_errors=True)
    res = {"bench": "kube pod start to ready (runp+create+start)", "host": platform.node(),
           "rounds": a.rounds, "median_ms": {h: round(statistics.median(v) * 1000, 1)
                                             for h, v in times.items() if v},
           "median_phase_ms": {h: {k: round(statistics.median(x[i] for x in v) * 1000, 1)
                                   for i, k in enumerate(("runp", "create", "start"))}
                               for h, v in phases.items() if v}}
    if "runc" in times:
        base = times["runc"]
        res["ratio_vs_runc"] = {
            h: round(statistics.median(x / y for x, y in zip(v, base, strict=True)), 3)
            for h, v in times.items() if h != "runc" and v}
    print(json.dumps(res, indent=2))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, time.strftime("kube-%Y%m%dT%H%M%SZ.json", time.gmtime())),
              "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
