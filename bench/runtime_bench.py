"""isle-runtime vs runc: `run` of /bin/true in one busybox bundle, interleaved A B A B.

    .venv/bin/python bench/runtime_bench.py [--rounds 30] [--out bench/results]

Two scenarios: runc's default spec, and the same with Docker's default seccomp profile (from
isle.runtime.seccomp). Reports per runtime the median wall time, the median of per-round
ratios isle/runc, peak RSS of the runtime process tree, and the create / start / delete split.
Needs root, runc and busybox (the peers' busybox-rootfs script builds the rootfs).
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

ISLE = str(REPO / ".venv" / "bin" / "isle-runtime")
RUNC = shutil.which("runc") or "runc"


def timed(argv: list[str]) -> tuple[float, int, int]:
    """-> (seconds, exit code, peak RSS KiB of the process tree it waited for)."""
    with tempfile.TemporaryFile() as err:  # a file: a created init keeps the runtime's stdio
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv)} -> {code}: {err.read().decode().strip()}")
    return dt, code, ru.ru_maxrss


def peak_rss_kib(argv: list[str]) -> int:
    """Max RSS of argv's process tree via GNU time, which forks from a small process (a fork of
    this Python would report this Python's size)."""
    with tempfile.TemporaryFile() as err:
        subprocess.run(["/usr/bin/time", "-f", "%M", *argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=err, check=True)
        err.seek(0)
        return int(err.read().decode().strip().splitlines()[-1])


def make_bundle(d: Path, seccomp: bool) -> Path:
    from isle.oci.runtime_spec import default_spec

    rootfs = d / "rootfs"
    if not rootfs.exists():
        from isle.runtime.demo import make_rootfs

        make_rootfs(str(rootfs))
    b = d / ("bundle-seccomp" if seccomp else "bundle")
    b.mkdir(exist_ok=True)
    cfg = default_spec()
    cfg["root"]["path"] = str(rootfs)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    if seccomp:
        from isle.runtime.seccomp import default_profile

        cfg["linux"]["seccomp"] = default_profile()
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def scenario(name: str, bundle: Path, rounds: int, work: Path,
             alone_rounds: int = 0) -> dict[str, Any]:
    rt = {"isle-runtime": (ISLE, work / "isle-root"), "runc": (RUNC, work / "runc-root")}
    runs: dict[str, list[float]] = {k: [] for k in rt}
    rss: dict[str, list[int]] = {k: [] for k in rt}
    split: dict[str, dict[str, list[float]]] = {k: {"create": [], "start": [], "delete": []}
                                                for k in rt}
    for i in range(rounds + 2):  # two warm-up rounds (page cache, pyc, compiled filter)
        for k, (exe, root) in rt.items():
            cid = f"bench-{i}"
            dt, _, _ = timed([exe, "--root", str(root), "run", "--bundle", str(bundle), cid])
            if i >= 2:
                runs[k].append(dt)
            if i >= 2 and i % 5 == 0 and os.path.exists("/usr/bin/time"):
                rss[k].append(peak_rss_kib([exe, "--root", str(root), "run", "--bundle",
                                            str(bundle), cid + "r"]))
            if i >= 2 and i % 3 == 0:  # split measured on a third of the rounds
                c, _, _ = timed([exe, "--root", str(root), "create", "--bundle", str(bundle),
                                 cid + "s"])
                s, _, _ = timed([exe, "--root", str(root), "start", cid + "s"])
                time.sleep(0.01)
                de, _, _ = timed([exe, "--root", str(root), "delete", "--force", cid + "s"])
                split[k]["create"].append(c)
                split[k]["start"].append(s)
                split[k]["delete"].append(de)
    ratios = [a / b for a, b in zip(runs["isle-runtime"], runs["runc"], strict=True)]
    ms = lambda xs: round(statistics.median(xs) * 1000, 2)  # noqa: E731
    alone: dict[str, float] = {}
    if alone_rounds:  # each runtime back to back: neither pays (or warms) the other's kernel state
        for k, (exe, root) in rt.items():
            alone[k] = ms([timed([exe, "--root", str(root), "run", "--bundle", str(bundle),
                                  f"alone-{i}"])[0] for i in range(alone_rounds)])
    return {
        "scenario": name,
        "rounds": rounds,
        "median_ms": {k: ms(v) for k, v in runs.items()},
        "p90_ms": {k: round(sorted(v)[int(len(v) * 0.9) - 1] * 1000, 2) for k, v in runs.items()},
        "median_ratio_isle_over_runc": round(statistics.median(ratios), 3),
        "peak_rss_kib": {k: max(v) if v else 0 for k, v in rss.items()},
        "split_median_ms": {k: {p: ms(v) for p, v in d.items() if v} for k, d in split.items()},
        "samples_ms": {k: [round(x * 1000, 2) for x in v] for k, v in runs.items()},
        "alone_median_ms": alone,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--no-seccomp", action="store_true", help="skip the seccomp scenario")
    ap.add_argument("--alone", type=int, default=0, metavar="N",
                    help="also time N runs of each runtime back to back, not interleaved (the "
                         "first cgroup.procs write after a quiet spell waits an RCU grace "
                         "period; interleaved, one runtime's write can pay it for the other)")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="isle-rt-bench-"))
    os.chmod(work, 0o755)
    results = []
    try:
        results.append(scenario("runc default spec", make_bundle(work, False), a.rounds, work,
                                a.alone))
        if not a.no_seccomp:
            try:
                b = make_bundle(work, True)
            except ImportError:
                print("seccomp scenario skipped: isle.runtime.seccomp not available")
            else:
                results.append(scenario("+ Docker default seccomp", b, a.rounds, work,
                                        a.alone))
    finally:
        for root in ("isle-root", "runc-root"):
            for exe in (ISLE, RUNC):
                d = work / root
                if d.exists():
                    for cid in os.listdir(d):
                        subprocess.run([exe, "--root", str(d), "delete", "--force", cid],
                                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    host = {"kernel": platform.release(), "cpus": os.cpu_count(),
            "runc": subprocess.run([RUNC, "--version"], capture_output=True,
                                   text=True).stdout.split("\n")[0],
            "python": platform.python_version(), "load": os.getloadavg()}
    print(f"{'scenario':28} {'isle ms':>8} {'runc ms':>8} {'ratio':>6} {'isle RSS':>9} "
          f"{'runc RSS':>9}  isle create/start/delete | runc create/start/delete")
    for r in results:
        m, rs, sp = r["median_ms"], r["peak_rss_kib"], r["split_median_ms"]
        fmt = lambda d: "/".join(f"{d.get(p, 0):.1f}" for p in ("create", "start", "delete"))  # noqa: E731
        print(f"{r['scenario']:28} {m['isle-runtime']:8.1f} {m['runc']:8.1f} "
              f"{r['median_ratio_isle_over_runc']:6.2f} {rs['isle-runtime']:7d}Ki "
              f"{rs['runc']:7d}Ki  {fmt(sp['isle-runtime'])} | {fmt(sp['runc'])}")
        if r["alone_median_ms"]:
            al = r["alone_median_ms"]
            print(f"{'  alone (not interleaved)':28} {al['isle-runtime']:8.1f} {al['runc']:8.1f}")
    os.makedirs(a.out, exist_ok=True)
    out = Path(a.out) / f"runtime-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"host": host, "results": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
