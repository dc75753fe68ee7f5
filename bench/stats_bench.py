"""`isle stats --no-stream` over many running containers (issue: 300 containers took 2.55 s).

    .venv/bin/python bench/stats_bench.py [--containers 300] [--rounds 3] [--profile]

Starts N `busybox sleep` containers (--network none) in a private root, times
`isle stats --no-stream` (and `isle ps`, for scale) a few times, then removes every container
and the root. --profile also prints where one in-process sample spends its time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISLE = str(REPO / ".venv" / "bin" / "isle")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="isle-stats-bench-")
    env = dict(os.environ, ISLE_ROOT=f"{tmp}/root", ISLE_RUNROOT=f"{tmp}/run")

    def isle(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ISLE, *args], env=env, capture_output=True, text=True, check=True)

    try:
        t = time.perf_counter()
        for i in range(a.containers):
            isle("run", "-d", "--network", "none", "--name", f"s{i}", "busybox", "sleep", "1d")
        print(f"started {a.containers} containers in {time.perf_counter() - t:.1f} s")
        for what in (["stats", "--no-stream"], ["ps"]):
            times = []
            for _ in range(a.rounds):
                t = time.perf_counter()
                out = isle(*what).stdout
                times.append(time.perf_counter() - t)
            rows = len(out.splitlines()) - 1
            print(f"isle {' '.join(what):<18} {rows} rows: median {statistics.median(times):.3f} s"
                  f"  (min {min(times):.3f}, max {max(times):.3f})")
        if a.profile:
            code = ("import cProfile, pstats, os\n"
                    "from isle.config import Settings\nfrom isle.engine.engine import Engine\n"
                    "s = Settings(); s.root = os.environ['ISLE_ROOT']; "
                    "s.runroot = os.environ['ISLE_RUNROOT']\n"
                    "e = Engine(s)\ncProfile.run('e.stats()', '/tmp/isle-stats.prof')\n"
                    "pstats.Stats('/tmp/isle-stats.prof').sort_stats('cumtime').print_stats(25)\n")
            subprocess.run([sys.executable, "-c", code], env=env, check=False)
    finally:
        ids = subprocess.run([ISLE, "ps", "-aq"], env=env, capture_output=True,
                             text=True).stdout.split()
        for i in range(0, len(ids), 50):
            subprocess.run([ISLE, "rm", "-f", *ids[i:i + 50]], env=env, capture_output=True)
        subprocess.run(["umount", "-R", tmp], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
