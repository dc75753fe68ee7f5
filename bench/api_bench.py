"""The Docker Engine API of `isle system service` against dockerd and `podman system service`.

1. `docker run --rm --network none busybox true` through the docker CLI on PATH against each
   service's socket, interleaved round by round (targets: isle <= 0.5x dockerd, <= 0.6x podman's).
2. API request latency with N containers made: GET /containers/json?all=1 and
   GET /containers/{id}/json (isle; --latency-peers adds the others).
3. C concurrent clients (threads, one connection each) doing create/start/wait/rm: every request
   must succeed.
4. The isle service's RSS when idle (target <= 40 MiB) and after the load.

The same busybox-static rootfs is imported into dockerd and podman; isle makes busybox itself.
Everything lives under one temp dir; each service is stopped by its pid.

    .venv/bin/python bench/api_bench.py --rounds 10 --containers 200 --clients 50
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import Dockerd, busybox_rootfs, podman_prefix  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ISLE = str(REPO / ".venv" / "bin" / "isle")
DOCKER = shutil.which("docker") or "docker"


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def wait_sock(path: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the service on {path} did not start") from None
            time.sleep(0.05)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def call(c: UnixHTTP, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, url, body=data, headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse()
    return r.status, r.read()


class Service:
    name = ""
    sock = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class IsleService(Service):
    name = "isle"

    def __init__(self, tmp: str) -> None:
        self.root, self.run = f"{tmp}/isle/root", f"{tmp}/isle/run"
        self.sock = f"{tmp}/isle.sock"
        self.log = open(f"{tmp}/isle-service.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
        self.proc = subprocess.Popen([ISLE, "--root", self.root, "--runroot", self.run, "system",
                                      "service", "--time", "0", self.host], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_sock(self.sock, self.proc)

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        ids = subprocess.run([ISLE, "--root", self.root, "--runroot", self.run, "ps", "-aq"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([ISLE, "--root", self.root, "--runroot", self.run, "rm", "-f", *ids],
                           capture_output=True)
        super().stop()
        self.log.close()
        shutil.rmtree(self.run, ignore_errors=True)


class DockerdService(Service):
    name = "dockerd"

    def __init__(self, tmp: str, tar: str) -> None:
        self.dir = f"{tmp}/docker"
        self.d = Dockerd(self.dir).start()
        self.sock = str(self.d.sock)
        sh([DOCKER, "-H", self.host, "import", tar, "busybox:latest"])

    def stop(self) -> None:
        ids = subprocess.run([DOCKER, "-H", self.host, "ps", "-aq"], capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run([DOCKER, "-H", self.host, "rm", "-f", *ids], capture_output=True)
        self.d.stop()
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mp = line.split()[4]
            if mp.startswith(self.dir):
                subprocess.run(["umount", "-l", mp], capture_output=True)


class PodmanService(Service):
    name = "podman"

    def __init__(self, tmp: str, tar: str) -> None:
        self.prefix = podman_prefix(f"{tmp}/podman")
        sh(self.prefix + ["import", tar, "busybox:latest"])
        self.sock = f"{tmp}/podman.sock"
        self.log = open(f"{tmp}/podman-service.log", "wb")
        self.proc = subprocess.Popen(self.prefix + ["system", "service", "--time", "0",
                                                    self.host], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_sock(self.sock, self.proc)

    def stop(self) -> None:
        subprocess.run(self.prefix + ["rm", "-af", "-t", "0"], capture_output=True)
        super().stop()
        self.log.close()
        subprocess.run(self.prefix + ["system", "reset", "-f"], capture_output=True)


def run_rm(svc: Service) -> float:
    t = time.perf_counter()
    sh([DOCKER, "-H", svc.host, "run", "--rm", "--network", "none", "busybox", "true"])
    return time.perf_counter() - t


def latency(svc: Service, n: int, reps: int) -> dict[str, float]:
    c = UnixHTTP(svc.sock)
    ids = []
    for i in range(n):
        st, body = call(c, "POST", f"/v1.41/containers/create?name=lat{i}",
                        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})
        if st != 201:
            raise RuntimeError(f"{svc.name}: create -> {st} {body[:200]!r}")
        ids.append(json.loads(body)["Id"])
    out: dict[str, list[float]] = {"ps": [], "inspect": []}
    for r in range(reps):
        t = time.perf_counter()
        st, body = call(c, "GET", "/v1.41/containers/json?all=1")
        out["ps"].append(time.perf_counter() - t)
        assert st == 200 and len(json.loads(body)) >= n, st
        t = time.perf_counter()
        st, _ = call(c, "GET", f"/v1.41/containers/{ids[r % n]}/json")
        out["inspect"].append(time.perf_counter() - t)
        assert st == 200, st
    for cid in ids:
        call(c, "DELETE", f"/v1.41/containers/{cid}?force=1")
    c.close()
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


def concurrent(svc: Service, clients: int) -> dict[str, Any]:
    errors: list[str] = []
    times: list[float] = []
    lock = threading.Lock()
    go = threading.Event()

    def one(i: int) -> None:
        c = UnixHTTP(svc.sock, timeout=600)
        go.wait()
        t = time.perf_counter()
        try:
            steps = [("POST", f"/v1.41/containers/create?name=cc{i}",
                      {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}},
                      (201,))]
            st, body = call(c, *steps[0][:3])
            if st not in steps[0][3]:
                raise RuntimeError(f"create -> {st} {body[:200]!r}")
            cid = json.loads(body)["Id"]
            for m, u, want in (("POST", f"/v1.41/containers/{cid}/start", (204,)),
                               ("POST", f"/v1.41/containers/{cid}/wait", (200,)),
                               ("DELETE", f"/v1.41/containers/{cid}", (204,))):
                st, body = call(c, m, u)
                if st not in want:
                    raise RuntimeError(f"{m} {u} -> {st} {body[:200]!r}")
            with lock:
                times.append(time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001 -- counted
            with lock:
                errors.append(f"client {i}: {exc}")
        finally:
            c.close()

    ths = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for th in ths:
        th.start()
    t0 = time.perf_counter()
    go.set()
    for th in ths:
        th.join()
    return {"clients": clients, "errors": errors, "wall_s": time.perf_counter() - t0,
            "median_s": statistics.median(times) if times else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--peers", default="dockerd,podman")
    ap.add_argument("--latency-peers", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("api_bench needs root", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="isle-api-bench-")
    svcs: list[Service] = []
    res: dict[str, Any] = {"host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                                    "load": os.getloadavg()}}
    try:
        rootfs = f"{tmp}/rootfs"
        busybox_rootfs(rootfs)
        tar = f"{tmp}/busybox.tar"
        sh(["tar", "-C", rootfs, "-cf", tar, "."])
        isle = IsleService(tmp)
        svcs.append(isle)
        time.sleep(1)
        res["isle_idle_rss_mib"] = round(isle.rss_kib() / 1024, 1)
        want = a.peers.split(",") if a.peers else []
        if "dockerd" in want and shutil.which("dockerd"):
            svcs.append(DockerdService(tmp, tar))
        if "podman" in want and shutil.which("podman"):
            svcs.append(PodmanService(tmp, tar))
        for s in svcs:
            run_rm(s)  # warm: images, networks, caches
        times: dict[str, list[float]] = {s.name: [] for s in svcs}
        for _ in range(a.rounds):
            for s in svcs:
                times[s.name].append(run_rm(s))
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        res["docker_run_rm_ms"] = med
        print(f"docker run --rm busybox true ({a.rounds} interleaved rounds), median ms:")
        for k, v in med.items():
            ratio = f"  isle/{k} = {med['isle'] / v:.2f}" if k != "isle" else ""
            print(f"  {k:8s} {v:8.1f}{ratio}")
        lat_svcs = svcs if a.latency_peers else svcs[:1]
        res["latency_ms"] = {}
        for s in lat_svcs:
            res["latency_ms"][s.name] = latency(s, a.containers, a.reps)
            print(f"{s.name}: with {a.containers} containers, median ms: "
                  f"{json.dumps({k: round(v, 1) for k, v in res['latency_ms'][s.name].items()})}")
        res["concurrent"] = concurrent(isle, a.clients)
        cc = res["concurrent"]
        print(f"isle: {a.clients} concurrent clients create/start/wait/rm: "
              f"{len(cc['errors'])} errors, wall {cc['wall_s']:.1f} s, median per client "
              f"{cc['median_s'] or 0:.2f} s")
        for e in cc["errors"][:5]:
            print("   ", e)
        res["isle_rss_after_mib"] = round(isle.rss_kib() / 1024, 1)
        print(f"isle service RSS: idle {res['isle_idle_rss_mib']} MiB, after the load "
              f"{res['isle_rss_after_mib']} MiB")
        out = REPO / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"api_bench-{int(time.time())}.json").write_text(json.dumps(res, indent=1))
    finally:
        for s in reversed(svcs):
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 -- stop the others anyway
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
