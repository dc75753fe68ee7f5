"""Pod start to ready through containerd's CRI, per runtime handler, interleaved.

    .venv/bin/python bench/kube_bench.py [--rounds 5] [--handlers runc,isle,isle-vm] [--out DIR]

One round per handler in turn (runc, isle, isle-vm, runc, ...): crictl runp + create + start of
one busybox container, timed until crictl start returns (the container is running), then the pod
is removed untimed. A private containerd (`isle kube up`) with a busybox image made offline by
isle; crictl from PATH or scripts/critest's build. Reports the median per handler and the
median of per-round ratios against runc (target: isle <= 1.0).

    .venv/bin/python bench/kube_bench.py --replay [--rounds 20]

The runtime's share alone, without containerd (whose own ~150-250 ms per pod on this host drowns
the runtimes' difference in noise): the four calls the runc shim makes per pod, replayed with
bundles shaped like containerd's (a pause in new pid/ipc/uts/mount/net namespaces under
/k8s.io/<id> with cpu shares 2; a container joining the pause's pid, ipc, uts and net namespaces
by path): create + start of the pause, create + start of the container, runc and isle-runtime
interleaved; then kill and delete, untimed.
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
    ap.add_argument("--replay", action="store_true",
                    help="the runtimes' share only: the shim's calls per pod, no containerd")
    a = ap.parse_args()
    if a.replay:
        return replay(a.rounds, a.out)
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


def _pod_bundles(top: Path) -> tuple[Path, Path]:
    """(pause bundle, container bundle) shaped like containerd's CRI ones (see the doc)."""
    sys.path.insert(0, str(REPO / "bench"))
    from peers import busybox_rootfs

    from isle.oci.runtime_spec import default_spec

    rootfs = top / "rootfs"
    busybox_rootfs(rootfs)
    out = []
    for name, args in (("pause", ["sleep", "3000"]), ("ctr", ["sleep", "3001"])):
        cfg = default_spec()
        cfg["root"] = {"path": str(rootfs), "readonly": True}
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = args
        cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
        if name == "pause":
            cfg["linux"]["resources"]["cpu"] = {"shares": 2}
            cfg["linux"]["namespaces"] = [{"type": t} for t in
                                          ("pid", "ipc", "uts", "mount", "network")]
        b = top / name
        b.mkdir()
        (b / "config.json").write_text(json.dumps(cfg))
        out.append(b)
    return out[0], out[1]


def replay(rounds: int, out_dir: str) -> int:
    import shutil

    runc = shutil.which("runc")
    if runc is None:
        sys.exit("kube_bench --replay: needs runc")
    rts = {"runc": [runc], "isle": [str(REPO / ".venv" / "bin" / "isle-runtime")]}
    top = Path(tempfile.mkdtemp(prefix="isle-kbr-", dir="/var/tmp"))
    times: dict[str, list[float]] = {h: [] for h in rts}
    steps: dict[str, list[list[float]]] = {h: [] for h in rts}  # per round: the four calls
    try:
        pause, ctr = _pod_bundles(top)
        n = 0
        for r in range(rounds + 1):  # round 0 warms up
            for h, exe in rts.items():
                n += 1
                rt = exe + ["--root", str(top / ("root-" + h))]
                p_id, c_id = f"{n:03d}" + "a" * 61, f"{n:03d}" + "b" * 61
                dt, step = 0.0, []
                try:
                    for cid, b in ((p_id, pause), (c_id, ctr)):
                        bc = json.loads((b / "config.json").read_text())
                        bc["linux"]["cgroupsPath"] = f"/k8s.io/{cid}"
                        if cid == c_id:  # the pause's namespaces by path (untimed lookup)
                            pid = json.loads(subprocess.run(rt + ["state", p_id], check=True,
                                                            capture_output=True).stdout)["pid"]
                            bc["linux"]["namespaces"] = [
                                {"type": ty, "path": f"/proc/{pid}/ns/{ns}"} for ty, ns in
                                (("pid", "pid"), ("ipc", "ipc"), ("uts", "uts"),
                                 ("network", "net"))] + [{"type": "mount"}]
                        bd = top / f"b-{cid[:4]}-{h}"
                        bd.mkdir()
                        (bd / "config.json").write_text(json.dumps(bc))
                        t = time.perf_counter()
                        subprocess.run(rt + ["create", "--bundle", str(bd), "--pid-file",
                                             str(bd / "pid"), cid], check=True,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                        t1 = time.perf_counter()
                        subprocess.run(rt + ["start", cid], check=True)
                        t2 = time.perf_counter()
                        dt += t2 - t
                        step += [t1 - t, t2 - t1]
                finally:
                    for cid in (c_id, p_id):
                        subprocess.run(rt + ["kill", "--all", cid, "9"], capture_output=True)
                        subprocess.run(rt + ["delete", "--force", cid], capture_output=True)
                if r:
                    times[h].append(dt)
                    steps[h].append(step)
                    print(f"round {r} {h:5} {dt * 1000:7.1f} ms  (pause create/start, container "
                          f"create/start: {' '.join(f'{x * 1000:.0f}' for x in step)})",
                          flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        from isle.kube.node import cgroup_hierarchies

        for h in cgroup_hierarchies():  # v1, v2 or hybrid
            try:
                os.rmdir(os.path.join(h, "k8s.io"))  # only when empty (no other node's pods)
            except OSError:
                pass
    res = {"bench": "pod start, the runtimes' share (shim calls replayed: pause create+start, "
                    "container create+start)", "host": platform.node(), "rounds": rounds,
           "load": os.getloadavg(),
           "median_ms": {h: round(statistics.median(v) * 1000, 1) for h, v in times.items()},
           "median_step_ms": {h: {k: round(statistics.median(x[i] for x in v) * 1000, 1)
                                  for i, k in enumerate(("pause create", "pause start",
                                                         "container create", "container start"))}
                              for h, v in steps.items()},
           "ratio_vs_runc": round(statistics.median(
               x / y for x, y in zip(times["isle"], times["runc"], strict=True)), 3)}
    print(json.dumps(res, indent=2))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, time.strftime("kube-replay-%Y%m%dT%H%M%SZ.json",
                                                  time.gmtime())), "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
