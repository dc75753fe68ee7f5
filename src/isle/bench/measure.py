"""`isle bench`: the same image at each isolation level, measured on this host.

Levels (each skipped with a reason where it does not work here):

    native            the probe as a plain host process (the baseline)
    container         isle run --isolation container (isle-runtime: namespaces, cgroups, seccomp)
    sandbox           isle run --isolation sandbox (gVisor runsc)
    microvm           isle run --isolation vm, cold: a shared directory keeps templates out, so
                      every start boots the guest kernel
    microvm-template  isle run --isolation vm restored from `isle vm template create IMAGE`
    os-vm             a whole-OS VM from the image (`isle vm create --from-image`): boot to the
                      console's shell prompt; in --quick only when named with --level

Every level is driven through the real `isle` CLI (what a user runs) with the bench's --root and
--runroot. Methods, rounds and medians are recorded with the results. Instances and networks the
bench makes are removed by id before it returns, also after errors and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LEVELS", "Plan", "run_bench", "host_fingerprint", "fit_line"]

LEVELS = ("native", "container", "sandbox", "microvm", "microvm-template", "os-vm")

_FLAGS = {"container": ["--isolation", "container"], "sandbox": ["--isolation", "sandbox"],
          "microvm": ["--isolation", "vm"], "microvm-template": ["--isolation", "vm"]}


class Plan:
    """Rounds and sizes: --quick keeps the whole run near a minute on a 2-core TCG host."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.start_rounds = {"native": 5, "container": 3, "sandbox": 2, "microvm": 2,
                             "microvm-template": 2} if quick else \
            {"native": 20, "container": 15, "sandbox": 10, "microvm": 5, "microvm-template": 10}
        # --quick: a line through two points per level (one for templates: restores are as
        # alike as instances get; their slope is the one PSS); the probes run in the network
        # client's instance (Bench.inside_and_network)
        self.density_max = {"native": 3, "container": 3, "sandbox": 2, "microvm": 2,
                            "microvm-template": 1} if quick else \
            {"native": 16, "container": 12, "sandbox": 8, "microvm": 4, "microvm-template": 6}
        self.cpu_rounds = 20000 if quick else 400000   # x1000 hash steps
        self.sys_calls = 5000 if quick else 200000
        self.fio_seconds = 0.5 if quick else 5
        self.fio_size = "4m" if quick else "64m"
        self.net_seconds = 1 if quick else 5
        self.rr_count = 200 if quick else 2000

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b*x: (a, b); one point: (0, y/x)."""
    n = len(xs)
    if n == 0:
        return 0.0, 0.0
    if n == 1 or len(set(xs)) == 1:
        return 0.0, ys[0] / xs[0] if xs[0] else 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / sxx
    return my - b * mx, b


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def host_fingerprint() -> dict[str, Any]:
    from isle.vm import accel

    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), "unknown")
    acc, why = accel.detect()
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    hybrid = os.path.isdir("/sys/fs/cgroup/unified")
    mem = _read("/proc/meminfo").split()
    os_name = next((ln.split("=", 1)[1].strip('"') for ln in _read("/etc/os-release").splitlines()
                    if ln.startswith("PRETTY_NAME=")), "Linux")
    return {"cpu": cpu, "ncpu": os.cpu_count(), "accelerator": acc.upper(),
            "accelerator_reason": why,
            "kernel": os.uname().release, "os": os_name,
            "cgroup_mode": "v2" if v2 else "hybrid" if hybrid else "v1",
            "mem_total_bytes": int(mem[1]) * 1024 if len(mem) > 1 else 0,
            "python": sys.version.split()[0]}


def _mem_available() -> int:
    for ln in _read("/proc/meminfo").splitlines():
        if ln.startswith("MemAvailable:"):
            return int(ln.split()[1]) * 1024
    return 0


def _pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for ln in _read(f"/proc/{pid}/smaps_rollup").splitlines():
            if ln.startswith("Pss:"):
                total += int(ln.split()[1]) * 1024
    return total


def _settled_pss(pids: list[int], limit: float) -> int:
    """PSS of pids once idle: sampled every 50 ms until two samples in a row agree within 1%
    (a process still starting grows between samples), at most limit seconds."""
    end = time.perf_counter() + limit
    last = _pss(pids)
    while True:
        time.sleep(0.05)
        now = _pss(pids)
        if abs(now - last) <= 0.01 * max(now, 1) or time.perf_counter() >= end:
            return now
        last = now


def _cgroup_pids(cid: str) -> list[int]:
    for ctl in ("pids", "memory", "cpu,cpuacct", "systemd"):
        p = f"/sys/fs/cgroup/{ctl}/isle-{cid}/cgroup.procs"
        if os.path.exists(p):
            return [int(x) for x in _read(p).split()]
    p = f"/sys/fs/cgroup/isle-{cid}/cgroup.procs"
    return [int(x) for x in _read(p).split()]


def _kv(text: str) -> dict[str, str]:
    out = {}
    for ln in text.splitlines():
        k, sep, v = ln.partition("=")
        if sep and k and " " not in k:
            out[k.strip()] = v.strip()
    return out


def _libs_dir(binary: str, dest: str) -> str:
    """dest holding binary + its shared libraries + the loader: runnable in any rootfs as
    DEST/ld.so --library-path DEST DEST/NAME (Debian's fio and iperf3 are dynamic)."""
    from isle.sys import proc

    os.makedirs(dest, exist_ok=True)
    import shutil

    def copy(src: str, name: str) -> None:
        to = os.path.join(dest, name)
        st = os.stat(src)
        try:
            have = os.stat(to)
            if (have.st_size, int(have.st_mtime)) == (st.st_size, int(st.st_mtime)):
                return  # copied by an earlier run
        except OSError:
            pass
        shutil.copy2(src, to)

    out = proc.run(["ldd", binary], timeout=30).stdout.decode()
    for ln in out.splitlines():
        parts = ln.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts else ""
        if path.startswith("/"):
            copy(path, "ld.so" if "ld-linux" in path else os.path.basename(path))
    copy(binary, os.path.basename(binary))
    return dest


class Bench:
    def __init__(self, isle_argv: list[str], image: str, plan: Plan, workdir: str,
                 progress: Callable[[str, float], None] | None = None,
                 memory_budget: int = 0) -> None:
        self.isle = isle_argv
        self.image = image
        self.plan = plan
        self.work = workdir
        self.progress = progress or (lambda msg, frac: None)
        self.budget = memory_budget or _mem_available()
        self._made: list[str] = []       # container ids to remove
        self._nets: list[str] = []
        self.tag = os.urandom(3).hex()
        self.explicit = False  # levels named by the user (--level): os-vm runs in --quick too

    # -- plumbing -----------------------------------------------------------------------------
    def _isle(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        from isle.sys import proc

        cp = proc.run([*self.isle, *args], timeout=timeout, check=check)
        return cp.stdout.decode(errors="replace")

    def _spawn_isle(self, *args: str) -> Any:
        """`isle ARGS` started, not waited for (a Popen with stdout and stderr piped)."""
        import subprocess

        from isle.sys import proc

        return proc.spawn([*self.isle, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _run(self, level: str, cmd: list[str], *, mounts: list[str] | None = None,
             network: str = "none", timeout: float = 300) -> str:
        args = ["run", "--rm", "--network", network, *_FLAGS[level], *self._vm_mem(level)]
        for m in mounts or []:
            args += ["-v", m]
        return self._isle(*args, self.image, *cmd, timeout=timeout)

    @staticmethod
    def _vm_mem(level: str) -> list[str]:
        """The probe runs (fio, iperf3 copied into the guest's RAM-backed /tmp) need more than
        a microVM's default 128 MiB; start and density keep the default size."""
        return ["--memory", "512m"] if level == "microvm" else []

    def _mounts(self, level: str) -> list[str]:
        if level == "microvm-template":
            return []  # a template has no shared directories: it could not restore with one
        return [f"{self.tools}:/isle-bench:ro"]

    def cleanup(self) -> None:
        """Remove the instances made (one `rm -f` each, all at once: a sandbox's `runsc delete`
        waits ~1.5 s for its sentry, a microVM's for QEMU; nothing is measured meanwhile), then
        the networks."""
        if self._made:
            for p in [self._spawn_isle("rm", "-f", cid) for cid in self._made]:
                p.communicate(timeout=300)
            self._made.clear()
        for n in self._nets:
            self._isle("network", "rm", n, check=False, timeout=60)
        self._nets.clear()

    # -- levels -------------------------------------------------------------------------------
    def prepare(self) -> None:
        from isle.bench import probe

        self.tools = os.path.join(self.work, "tools")
        os.makedirs(self.tools, exist_ok=True)
        self.probe = probe.build(os.path.join(self.work, "build"))
        import shutil

        shutil.copy2(self.probe, os.path.join(self.tools, "probe"))
        from isle.sys import proc

        self.fio = proc.which("fio")
        self.iperf = proc.which("iperf3")
        if self.fio:
            _libs_dir(self.fio, os.path.join(self.tools, "fio"))
        if self.iperf:
            _libs_dir(self.iperf, os.path.join(self.tools, "iperf3"))

    def availability(self, levels: list[str]) -> dict[str, str]:
        """{level: "" if it works here, else why not}."""
        from isle.sys import proc

        out: dict[str, str] = {}
        rootless = os.geteuid() != 0
        info: dict[str, Any] = {}
        try:
            info = json.loads(self._isle("info", "--format", "json", timeout=60))
        except Exception as exc:  # noqa: BLE001 - reported as the reason
            info = {"error": str(exc)}
        unavailable = info.get("IsolationUnavailable") or {}
        for lv in levels:
            if lv == "native":
                out[lv] = ""
            elif lv == "container":
                out[lv] = unavailable.get("container", "")
            elif lv == "sandbox":
                out[lv] = unavailable.get("sandbox", "") or (
                    "" if proc.which("runsc") else "runsc not installed")
            elif lv in ("microvm", "microvm-template"):
                out[lv] = unavailable.get("vm", "")
                if rootless and not out[lv]:
                    out[lv] = "microVM volumes need root (virtiofsd)"
            elif lv == "os-vm":
                out[lv] = unavailable.get("vm", "")
                if not out[lv] and self.plan.quick and not self.explicit:
                    out[lv] = "skipped in --quick (add --level os-vm, or run the full mode)"
            else:
                out[lv] = f"unknown level {lv!r}"
        return out

    def start(self, level: str) -> dict[str, Any]:
        """Time to first output and to exit of `echo ready`, cold (first) and warm (median)."""
        import subprocess

        from isle.sys import proc

        rounds = self.plan.start_rounds.get(level, 3)
        first, exit_ = [], []
        for i in range(rounds):
            if level == "native":
                argv = ["/bin/echo", "ready"]
            else:
                argv = [*self.isle, "run", "--rm", "--network", "none", *_FLAGS[level]]
                for m in self._mounts(level):
                    argv += ["-v", m]
                argv += [self.image, "echo", "ready"]
            t0 = time.perf_counter()
            p = proc.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert p.stdout is not None
            b = p.stdout.read(1)
            t1 = time.perf_counter()
            out, err = p.communicate(timeout=300)
            t2 = time.perf_counter()
            if p.returncode != 0 or b != b"r":
                raise RuntimeError(f"{level} start failed: {err.decode(errors='replace')[-300:]}")
            first.append((t1 - t0) * 1e3)
            exit_.append((t2 - t0) * 1e3)
            self.progress(f"{level}: start {i + 1}/{rounds}", 1 / rounds)
        warm_f = first[1:] or first
        warm_e = exit_[1:] or exit_
        return {"first_output_ms": {"cold": round(first[0], 1),
                                    "warm": round(statistics.median(warm_f), 1)},
                "exit_ms": {"cold": round(exit_[0], 1),
                            "warm": round(statistics.median(warm_e), 1)},
                "rounds": rounds, "samples_exit_ms": [round(x, 1) for x in exit_]}

    def density(self, level: str) -> dict[str, Any]:
        """Idle instances started one by one up to a bound: PSS of each, creation time; a line
        fitted to total PSS(n) extrapolates how many fit in the memory budget."""
        import subprocess

        from isle.sys import proc

        n_max = self.plan.density_max.get(level, 2)
        totals, times, per = [], [], []
        natives: list[Any] = []
        try:
            for i in range(n_max):
                t0 = time.perf_counter()
                if level == "native":
                    p = proc.spawn(["sleep", "3600"], stdout=subprocess.DEVNULL)
                    natives.append(p)
                    pids = [p.pid]
                else:
                    argv = ["run", "-d", "--network", "none", *_FLAGS[level]]
                    for m in self._mounts(level):
                        argv += ["-v", m]
                    cid = self._isle(*argv, self.image, "sleep", "3600").strip().splitlines()[-1]
                    self._made.append(cid)
                    pids = []
                times.append((time.perf_counter() - t0) * 1e3)
                if level != "native":
                    pids = _cgroup_pids(self._made[-1])
                pss = _settled_pss(pids, 1.5 if level.startswith("microvm") else 0.5)
                per.append(pss)
                totals.append(sum(per))
                self.progress(f"{level}: density {i + 1}/{n_max}", 1 / n_max)
        finally:
            for p in natives:
                p.kill()
                p.wait()
            self.cleanup()
        xs = list(range(1, len(totals) + 1))
        a, b = fit_line([float(x) for x in xs], [float(t) for t in totals])
        fits = int((self.budget - a) // b) if b > 0 else 0
        rate = 1e3 / statistics.median(times) if times else 0.0
        return {"pss_bytes_per_instance": int(statistics.median(per)) if per else 0,
                "pss_samples": per, "created_ms": [round(t, 1) for t in times],
                "instances_measured": len(totals), "fit": {"intercept_bytes": int(a),
                                                           "slope_bytes": int(b),
                                                           "model": "total_pss = a + b*n"},
                "memory_budget_bytes": self.budget, "instances_in_budget": max(fits, 0),
                "create_per_second": round(rate, 2)}

    def inside(self, level: str) -> dict[str, Any]:
        """CPU kernel, syscall latency, isolation surface and fio, in one instance."""
        script, iodir, io = self._inside_script(level)
        import shutil

        try:
            if level == "native":
                from isle.sys import proc

                out = proc.run(["sh", "-c", script], timeout=300).stdout.decode(errors="replace")
            else:
                out = self._run(level, ["sh", "-c", script],
                                mounts=[*self._mounts(level), f"{iodir}:{io}"])
        finally:
            shutil.rmtree(iodir, ignore_errors=True)
        return self._inside_result(level, out)

    def _tool(self, level: str, tool: str, name: str) -> tuple[str, str, str]:
        """(shell to run first, the directory of the tool's binary and libraries inside the
        instance, what to remove after). A microVM copies it out of the shared directory first:
        its virtiofs cannot map the zero-fill pages of some libraries ("cannot map zero-fill
        pages"); elsewhere it runs from the mount (fio and its 64 libraries are ~80 MiB: the copy
        cost a sandbox's gofer a second)."""
        if not level.startswith("microvm"):
            return "", f"{tool}/{name}", ""
        d = f"/tmp/isle-bench-{self.tag}-{name}"
        return f"[ -d {d} ] || cp -r {tool}/{name} {d}; ", d, d  # once: see _client_beside_server

    def _inside_script(self, level: str) -> tuple[str, str, str]:
        """The probe script of inside() and the host directory fio writes (made here; the
        caller removes it) and where the instance sees it: (script, iodir, io)."""
        p = self.plan
        tool = "/isle-bench" if level != "native" else self.tools
        # fio writes a host directory at every level (a bind mount, gVisor's gofer, a microVM's
        # virtiofs): the same disk behind each isolation layer, as in Felter et al.
        iodir = os.path.join(self.work, f"io-{self.tag}")
        os.makedirs(iodir, mode=0o700, exist_ok=True)
        io = "/isle-io" if level != "native" else iodir
        fio = ""
        if self.fio:
            prep, tool_fio, done = self._tool(level, tool, "fio")
            fio = (f"echo ---fio---; {prep}"
                   f"{tool_fio}/ld.so --library-path {tool_fio} {tool_fio}/fio "
                   f"--name=isle --filename={io}/fio.dat --size={p.fio_size} "
                   f"--rw=randrw --bs=4k --ioengine=psync --runtime={int(p.fio_seconds * 1000)}ms "
                   "--time_based "
                   f"--output-format=json; rm -rf {io}/fio.dat {done}")
        script = (f"{tool}/probe cpu {p.cpu_rounds}; {tool}/probe sys {p.sys_calls}; "
                  f"{tool}/probe surface; echo devices=$(ls /dev | wc -l); {fio}")
        return script, iodir, io

    def _inside_result(self, level: str, out: str) -> dict[str, Any]:
        p = self.plan
        head, _, fio_json = out.partition("---fio---")
        kv = _kv(head)
        res: dict[str, Any] = {
            "cpu_ms": float(kv.get("cpu_ms", "nan")),
            "syscall_ns": {k: float(kv.get(f"{k}_ns", "nan"))
                           for k in ("getpid", "open_close", "stat")},
            "surface": {"kernel": kv.get("kernel", ""),
                        "shared_kernel": kv.get("kernel", "") == os.uname().release
                        and level in ("native", "container"),
                        "capabilities": bin(int(kv.get("CapEff", "0"), 16)).count("1"),
                        "seccomp": {"0": "off", "1": "strict", "2": "filter"}.get(
                            kv.get("Seccomp", ""), kv.get("Seccomp", "n/a")),
                        "no_new_privs": kv.get("NoNewPrivs", "") == "1",
                        "syscalls_tried": int(kv.get("syscalls_tried", 0)),
                        "syscalls_reachable": int(kv.get("syscalls_reachable", 0)),
                        "syscalls_blocked": [x for x in kv.get("syscalls_blocked", "").split(",")
                                             if x],
                        "devices": int(kv.get("devices", 0))}}
        if level == "sandbox":
            res["surface"]["shared_kernel"] = False  # gVisor's sentry answers the syscalls
        if fio_json.strip():
            try:
                j = json.loads(fio_json[fio_json.index("{"):])
                job = j["jobs"][0]
                res["fio"] = {"read_iops": round(job["read"]["iops"], 1),
                              "write_iops": round(job["write"]["iops"], 1),
                              "read_kib_s": job["read"]["bw"], "write_kib_s": job["write"]["bw"],
                              "job": f"randrw 4k psync size={p.fio_size} {p.fio_seconds}s "
                                     "on a host directory"}
            except (ValueError, KeyError, IndexError) as exc:
                res["fio"] = {"error": f"unparsed fio output: {exc}"}
        self.progress(f"{level}: cpu, syscalls, surface, fio", 1)
        return res

    def inside_and_network(self, level: str) -> dict[str, Any]:
        """inside() and network() with one instance fewer: the network's client instance runs
        the inside() probes first (before the network load starts, so they measure alone)."""
        import shutil

        script, iodir, io = self._inside_script(level)
        try:
            net, out = self.network(level, pre=script, pre_mounts=[f"{iodir}:{io}"])
        finally:
            shutil.rmtree(iodir, ignore_errors=True)
        res = self._inside_result(level, out)
        res["network"] = net
        return res

    def network(self, level: str, pre: str = "",
                pre_mounts: list[str] | None = None) -> Any:
        """iperf3 and a TCP request/response loop between two instances on one isle network
        (native: two host processes on 127.0.0.1). With pre (a script run first in the client
        instance): (result, pre's output)."""
        p = self.plan
        if level == "native":
            return self._native_network()
        if level == "microvm-template":
            return {"skipped": "a template has no shared directory to bring iperf3 in"}
        net = f"isle-bench-{self.tag}"
        self._isle("network", "create", net, timeout=60)
        self._nets.append(net)
        try:
            tool = "/isle-bench"
            prep, ip3, _ = self._tool(level, tool, "iperf3")
            # iperf3 listening first (port 5201 = 0x1451 in /proc/net/tcp*), then the echo
            # server: once it answers the client, the server instance is idle. iperf3 serves
            # one test (-1) and the instance ends with it: its removal needs no kill (a running
            # sandbox's `runsc delete` waits ~1.5 s for the sentry)
            srv = (f"{prep}{ip3}/ld.so --library-path {ip3} {ip3}/iperf3 -s -1 -p 5201 & "
                   "i=$!; n=0; "
                   "until grep -qE ':1451 0+:0000 0A' /proc/net/tcp /proc/net/tcp6 "
                   "2>/dev/null || [ $n -ge 100 ]; do n=$((n+1)); sleep 0.05; done; "
                   f"{tool}/probe rr-server 7000 & wait $i")
            args = ["run", "-d", "--network", net, *_FLAGS[level], *self._vm_mem(level),
                    "-v", f"{self.tools}:{tool}:ro"]
            cli = (f"{tool}/probe rr-client {{ip}} 7000 {p.rr_count}; echo ---iperf---; "
                   f"{prep}{ip3}/ld.so --library-path {ip3} {ip3}/iperf3 "
                   f"-c {{ip}} -p 5201 -t {p.net_seconds} -J")
            mounts = [f"{self.tools}:{tool}:ro", *(pre_mounts or [])]
            if pre:
                out = self._client_beside_server(level, net, args, srv, cli, pre, mounts)
            else:
                cid = self._isle(*args, self.image, "sh", "-c", srv,
                                 timeout=300).strip().splitlines()[-1]
                self._made.append(cid)
                info = json.loads(self._isle("inspect", cid, timeout=60))[0]
                ip = info["NetworkSettings"]["Networks"][net]["IPAddress"]
                time.sleep(1.0 if level.startswith("microvm") else 0.3)
                out = self._run(level, ["sh", "-c", cli.format(ip=ip)], mounts=mounts,
                                network=net)
            self.progress(f"{level}: network", 1)
            if pre:
                before, _, out = out.partition("---net---")
                return self._net_result(out), before
            return self._net_result(out)
        finally:
            self.cleanup()

    def _client_beside_server(self, level: str, net: str, args: list[str], srv: str, cli: str,
                              pre: str, mounts: list[str]) -> str:
        """The server and the client instance start together (two boots overlap: the level's
        slowest part in --quick); the client waits until the server answers, then runs pre (the
        probes, alone: the server is idle by then) and the network measurements. The server
        gets a fixed address, the subnet's last but one."""
        import ipaddress

        nets = json.loads(self._isle("network", "inspect", net, timeout=60))[0]
        subnet = next(s["subnet"] for s in nets.get("Subnets") or [] if "." in s["subnet"])
        ip = str(ipaddress.ip_network(subnet)[-2])
        server = self._spawn_isle(*args, "--ip", ip, self.image, "sh", "-c", srv)
        out = ""
        try:
            # a microVM copies its tools while the server boots (nothing is measured yet)
            early = "".join(self._tool(level, "/isle-bench", t)[0]
                            for t, have in (("fio", self.fio), ("iperf3", self.iperf)) if have)
            wait = (f"{early}n=0; until /isle-bench/probe rr-client {ip} 7000 1 >/dev/null 2>&1; "
                    f"do n=$((n+1)); [ $n -ge 12 ] && break; done")
            out = self._run(level, ["sh", "-c", f"{wait}; {pre}; echo ---net---; "
                                    + cli.format(ip=ip)], mounts=mounts, network=net)
        finally:
            sout, serr = server.communicate(timeout=300)
            cid = sout.decode(errors="replace").strip().splitlines()[-1:] or [""]
            if cid[0]:
                self._made.append(cid[0])
            if server.returncode != 0:
                raise RuntimeError(f"{level}: the network's server instance failed: "
                                   + serr.decode(errors="replace")[-300:])
        return out

    def _native_network(self) -> dict[str, Any]:
        import socket
        import subprocess

        from isle.sys import proc

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        srv = proc.spawn([os.path.join(self.tools, "probe"), "rr-server", str(port)],
                         stdout=subprocess.DEVNULL)
        ip3 = None
        if self.iperf:
            ip3 = proc.spawn([self.iperf, "-s", "-p", str(port + 1), "-B", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port + 1 if ip3 is not None else port)  # rr-client retries itself
            out = proc.run([os.path.join(self.tools, "probe"), "rr-client", "127.0.0.1", str(port),
                            str(self.plan.rr_count)], timeout=120).stdout.decode()
            if ip3 is not None:
                out += "---iperf---" + proc.run(
                    [self.iperf or "iperf3", "-c", "127.0.0.1", "-p", str(port + 1), "-t",
                     str(self.plan.net_seconds), "-J"], timeout=120).stdout.decode()
        finally:
            for c in (srv, ip3):
                if c is not None:
                    c.kill()
                    c.wait()
        self.progress("native: network", 1)
        return self._net_result(out)

    @staticmethod
    def _net_result(out: str) -> dict[str, Any]:
        head, _, ij = out.partition("---iperf---")
        res: dict[str, Any] = {"rr_us": float(_kv(head).get("rr_us", "nan"))}
        if ij.strip():
            try:
                j = json.loads(ij[ij.index("{"):])
                res["iperf3_gbit_s"] = round(j["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
            except (ValueError, KeyError) as exc:
                try:
                    res["iperf3_error"] = json.loads(ij[ij.index("{"):]).get("error") or str(exc)
                except ValueError:
                    res["iperf3_error"] = f"unparsed iperf3 output: {exc}"
        return res

    def size(self, level: str) -> dict[str, Any]:
        if not getattr(self, "_img", None):  # one `image inspect` for every level
            self._img = json.loads(self._isle("image", "inspect", self.image, timeout=60))[0]
        img: dict[str, Any] = self._img
        out: dict[str, Any] = {"image_bytes": int(img.get("Size") or 0)}
        if level.startswith("microvm") or level == "os-vm":
            import isle.vm

            cache = os.environ.get("ISLE_CACHE") or "/var/cache/isle"
            vi = isle.vm.info(cache)
            k = (vi.get("guest_kernel") or {}).get("image", "")
            out["kernel_bytes"] = os.path.getsize(k) if k and os.path.exists(k) else 0
            d = os.path.join(cache, "initramfs")
            out["initramfs_bytes"] = max((os.path.getsize(os.path.join(d, f)) for f in
                                          _listdir(d) if f.endswith(".cpio")), default=0)
            key = str(img.get("Id", "")).removeprefix("sha256:")[:40]
            disks = os.path.join(cache, "disks")
            out["disk_bytes"] = sum(os.path.getsize(os.path.join(disks, f)) for f in _listdir(disks)
                                    if key and key in f)
            out["total_bytes"] = out["kernel_bytes"] + out["initramfs_bytes"] + out["disk_bytes"]
        else:
            out["total_bytes"] = out["image_bytes"] if level != "native" else 0
        return out

    def os_vm(self) -> dict[str, Any]:
        """A whole-OS VM booted from the image (`isle vm create --from-image`): start to the
        first shell prompt on its console, stop time, PSS of its QEMU, disk + kernel + initramfs.
        One instance (one round in --quick)."""
        import socket

        rounds = 1 if self.plan.quick else 3
        name = f"isle-bench-os-{self.tag}"
        first, exit_, pss, size = [], [], 0, 0
        try:
            self._isle("vm", "create", name, "--from-image", self.image, "--network", "none",
                       "-m", "256M", timeout=600)
            self._vm = name
            for i in range(rounds):
                t0 = time.perf_counter()
                self._isle("vm", "start", name, timeout=120)
                info = json.loads(self._isle("vm", "inspect", name, timeout=60))[0]
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                buf = b""
                try:
                    s.connect(info["console"])
                    s.settimeout(0.5)
                    while time.perf_counter() - t0 < 180 and b"# " not in buf[-200:]:
                        try:
                            d = s.recv(4096)
                            if not d:
                                break
                            buf += d
                        except TimeoutError:
                            s.send(b"\n")
                finally:
                    s.close()
                if b"# " not in buf[-200:]:
                    raise RuntimeError("no shell prompt on the whole-OS VM's console in 180 s")
                first.append((time.perf_counter() - t0) * 1e3)
                if i == 0:
                    time.sleep(0.5)
                    pid = int(info.get("pid") or 0)
                    pss = _pss([pid] + _children(pid)) if pid else 0
                    size = sum(os.path.getsize(f) for f in (info.get("base"), info.get("disk"),
                                                            info.get("kernel"), info.get("initrd"))
                               if f and os.path.exists(f))
                t1 = time.perf_counter()
                self._isle("vm", "stop", name, "--time", "2", timeout=120, check=False)
                exit_.append((time.perf_counter() - t1) * 1e3 + first[-1])
                self.progress(f"os-vm: boot {i + 1}/{rounds}", 1 / rounds)
        finally:
            self._isle("vm", "rm", "-f", name, timeout=120, check=False)
            self._vm = ""
        warm_f = first[1:] or first
        warm_e = exit_[1:] or exit_
        mem = _mem_available() if not self.budget else self.budget
        return {"start": {"first_output_ms": {"cold": round(first[0], 1),
                                              "warm": round(statistics.median(warm_f), 1)},
                          "exit_ms": {"cold": round(exit_[0], 1),
                                      "warm": round(statistics.median(warm_e), 1)},
                          "rounds": rounds, "what": "vm start to the console's shell prompt; "
                                                    "exit adds vm stop"},
                "density": {"pss_bytes_per_instance": pss, "pss_samples": [pss],
                            "instances_measured": 1, "memory_budget_bytes": mem,
                            "fit": {"intercept_bytes": 0, "slope_bytes": pss,
                                    "model": "total_pss = a + b*n"},
                            "instances_in_budget": int(mem // pss) if pss else 0,
                            "created_ms": [], "create_per_second": 0.0},
                "size": {"total_bytes": size, "what": "base disk + overlay + kernel + initramfs"}}

    def ensure_template(self) -> str:
        """The template the runs will restore, for the image at the default size. `template
        create` is idempotent (an existing template with the same boot key answers at once), so
        it is always asked: a listed template of the same image may have been made for another
        boot layout, guest kernel or initramfs, which the runs would not match (they would boot
        cold and the level would measure nothing of templates)."""
        before = {t.get("key") for t in json.loads(
            self._isle("vm", "template", "ls", "--format", "json", timeout=60) or "[]")}
        key = self._isle("vm", "template", "create", "--network", "none", self.image,
                         timeout=600).strip()
        return "existing" if key in before else "created"


def _wait_listening(port: int, limit: float = 5.0) -> None:
    """Until a TCP socket listens on port on this host (or limit seconds)."""
    want = f":{port:04X} "
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        for f in ("/proc/net/tcp", "/proc/net/tcp6"):
            if any(want in ln and ln.split()[3] == "0A" for ln in _read(f).splitlines()[1:]):
                return
        time.sleep(0.01)


def _children(pid: int) -> list[int]:
    out = []
    for t in _listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in _read(f"/proc/{pid}/task/{t}/children").split()]
    return out


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def run_bench(isle_argv: list[str], image: str, *, quick: bool, levels: list[str], workdir: str,
              progress: Callable[[str, float], None] | None = None,
              memory_budget: int = 0, explicit: bool = False) -> dict[str, Any]:
    """Measure every level; the results document (see report.py for its shape)."""
    plan = Plan(quick)
    b = Bench(isle_argv, image, plan, workdir, progress, memory_budget)
    b.explicit = explicit
    t0 = time.time()
    doc: dict[str, Any] = {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()),
                           "mode": "quick" if quick else "full", "image": image,
                           "host": host_fingerprint(), "plan": plan.to_dict(), "levels": {}}
    t_avail = time.perf_counter()
    avail = b.availability(levels)
    doc["phases_s"] = {"availability": round(time.perf_counter() - t_avail, 2)}
    try:
        t_prep = time.perf_counter()
        b.prepare()
        doc["phases_s"]["prepare"] = round(time.perf_counter() - t_prep, 2)
        for lv in levels:
            res: dict[str, Any] = {"ok": False, "reason": avail.get(lv, "")}
            doc["levels"][lv] = res
            if res["reason"]:
                continue
            phases: dict[str, float] = {}
            res["phase_s"] = phases
            mark = time.perf_counter()

            def phase(name: str, phases: dict[str, float] = phases) -> None:
                nonlocal mark
                now = time.perf_counter()
                phases[name] = round(now - mark, 2)
                mark = now
            # the microvm level is the cold boot (a template's clone is the runtime's default)
            cold_env = os.environ.pop("ISLE_VM_TEMPLATE", None)
            if lv == "microvm":
                os.environ["ISLE_VM_TEMPLATE"] = "0"
            try:
                if lv == "os-vm":
                    res.update(b.os_vm())
                    phase("os-vm")
                    res["ok"] = True
                    continue
                if lv == "microvm-template":
                    res["template"] = b.ensure_template()
                    phase("template")
                res["start"] = b.start(lv)
                phase("start")
                res["density"] = b.density(lv)
                phase("density")
                res["size"] = b.size(lv)
                phase("size")
                if lv in ("native", "microvm-template"):
                    if lv == "native":
                        res.update(b.inside(lv))
                        phase("inside")
                    res["network"] = b.network(lv)
                    phase("network")
                else:  # one instance runs the probes and is the network's client
                    res.update(b.inside_and_network(lv))
                    phase("inside+network")
                res["ok"] = True
            except Exception as exc:  # noqa: BLE001 - one level's failure is its result
                res["reason"] = f"failed: {exc}"[:600]
            finally:
                b.cleanup()
                os.environ.pop("ISLE_VM_TEMPLATE", None)
                if cold_env is not None:
                    os.environ["ISLE_VM_TEMPLATE"] = cold_env
    finally:
        b.cleanup()
    doc["elapsed_s"] = round(time.time() - t0, 1)
    from isle.bench.report import literature

    doc["literature"] = literature(doc)
    return doc
