"""VM start-up and density: isle-vm-runtime vs a hand-written QEMU command line, cold vs template.

    .venv/bin/python bench/vm_bench.py [--runs 5] [--clones 10] [--json out.json]

Emits every sample (seconds, MiB) with host details; the summary compares medians against targets:
cold runtime <= 1.1 x the floor, template first output <= 0.5 s and >= 6 x faster than cold,
PSS per idle template clone (128 MiB guest) <= 64 MiB. Cold runs ask for a cold boot
(org.isle.vm.template=false); template and idle runs take the runtime's default (no annotation:
a clone of the template made on first use).
--engine also times the whole engine path (`isle run --rm --isolation vm --network none ...`,
cold and from `isle vm template create`) and the PSS of idle engine containers (QEMU + the VM
runtime's monitor + conmon) started from a template.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(REPO, ".venv", "bin", "isle-vm-runtime")
ISLE = os.path.join(REPO, ".venv", "bin", "isle")
sys.path.insert(0, os.path.join(REPO, "src"))

from peers import busybox_rootfs  # noqa: E402  (bench/ is on sys.path when run as a script)


def bundle(dest: str, rootfs: str, args: list[str], template: bool | None = False) -> str:
    """template: True/False set org.isle.vm.template (a clone / a cold boot); None leaves the
    runtime's default (a template's clone wherever the configuration allows, made on first use)."""
    from isle.oci.runtime_spec import default_spec

    os.makedirs(dest, exist_ok=True)
    if not os.path.exists(os.path.join(dest, "rootfs")):
        os.symlink(rootfs, os.path.join(dest, "rootfs"))
    spec = default_spec()
    spec["process"].update({"args": args, "terminal": False})
    ann = spec.setdefault("annotations", {})
    ann["org.isle.isolation"] = "vm"
    if template is not None:
        ann["org.isle.vm.template"] = "true" if template else "false"
    with open(os.path.join(dest, "config.json"), "w") as f:
        json.dump(spec, f)
    return dest


MIN_JOB = (
    "out=$(waitport org.isle.stdout); err=$(waitport org.isle.stderr)\n"
    "/bin/isle-exec -r /newroot -e PATH=/bin -- true </dev/null >$out 2>$err\n"
    'echo "exit $?" >&3\npoweroff -f\n'
)


def floor_once(kernel: str, initrd: str, disk: str, khz: int, job: str = MIN_JOB) -> float:
    """Guest work started by a hand-written QEMU argv and a bare socket: isle's floor. job: the
    minimal `true` (no spec applied: the historical floor), or the script isle renders for the
    same spec (the same guest work: what is left is isle's host side and device layout)."""
    d = tempfile.mkdtemp(prefix="isle-vm-floor-", dir="/run")
    argv = [
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "microvm,pit=off,pic=off,isa-serial=on",
        "-accel",
        "tcg",
        "-m",
        "128M",
        "-no-reboot",
        "-kernel",
        kernel,
        "-initrd",
        initrd,
        "-append",
        f"console=ttyS0 quiet panic=-1 tsc_early_khz={khz} reboot=t cryptomgr.notests "
        "tsc=reliable i8042.noaux i8042.nokbd isle.rootfs=erofs",
        "-chardev",
        f"file,id=con,path={d}/console.log",
        "-serial",
        "chardev:con",
        "-drive",
        f"file={disk},format=raw,if=none,id=image,readonly=on",
        "-device",
        "virtio-blk-device,drive=image",
        "-device",
        "virtio-serial-device",
        "-chardev",
        f"socket,id=c1,path={d}/ctl.sock,server=on,wait=off",
        "-device",
        "virtserialport,chardev=c1,name=org.isle.ctl,nr=1",
        "-chardev",
        "null,id=c2",
        "-device",
        "virtserialport,chardev=c2,name=org.isle.stdout,nr=2",
        "-chardev",
        "null,id=c3",
        "-device",
        "virtserialport,chardev=c3,name=org.isle.stderr,nr=3",
        "-chardev",
        "null,id=c4",
        "-device",
        "virtserialport,chardev=c4,name=org.isle.stdin,nr=4",
    ]
    for nr, name in enumerate(("x1.out", "x1.err", "x1.in", "x2.out", "x2.err", "x2.in"), start=5):
        argv += [
            "-chardev",
            f"null,id=c{nr}",
            "-device",
            f"virtserialport,chardev=c{nr},name=org.isle.{name},nr={nr}",
        ]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    s = socket.socket(socket.AF_UNIX)
    try:
        while True:
            try:
                s.connect(f"{d}/ctl.sock")
                break
            except OSError:
                if p.poll() is not None:
                    raise SystemExit("floor QEMU exited early") from None
                time.sleep(0.002)
        s.sendall(f"job {job.count(chr(10))}\n{job}".encode())
        buf = b""
        while b"exit" not in buf:
            chunk = s.recv(100)
            if not chunk:
                raise SystemExit(f"floor guest went away: {buf!r}")
            buf += chunk
        p.wait(60)
        return time.monotonic() - t0
    finally:
        s.close()
        if p.poll() is None:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def runtime_once(b: str, root: str, cid: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to first stdout byte, seconds to exit) of `isle-vm-runtime run`."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        [RUNTIME, "--root", root, "run", "-b", b, cid],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None
    first = p.stdout.read(1)
    t1 = time.monotonic() - t0
    _, err = p.communicate()
    if p.returncode != 0 or not first:
        raise SystemExit(f"runtime failed: rc={p.returncode} {err.decode()}")
    return t1, time.monotonic() - t0


def engine_once(isle: list[str], env: dict[str, str], args: list[str]) -> tuple[float, float]:
    """(seconds to first stdout byte, seconds to exit) of `isle run --rm --isolation vm ...`."""
    t0 = time.monotonic()
    p = subprocess.Popen(isle + ["run", "--rm", "--isolation", "vm", "--network", "none", *args],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    first = p.stdout.read(1)
    t1 = time.monotonic() - t0
    _, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"isle run failed: rc={p.returncode} {err.decode()}")
    return (t1 if first else time.monotonic() - t0), time.monotonic() - t0


def engine_bench(a: argparse.Namespace, work: str, env: dict[str, str],
                 samples: dict[str, list[float]], floor: Any) -> None:
    """The engine path: cold, template, and density of idle engine containers from a template."""
    import psutil

    isle = [ISLE, "--root", os.path.join(work, "eroot"), "--runroot", os.path.join(work, "erun")]
    for k2 in ("engine_cold_exit_s", "engine_cold_first_s", "engine_tpl_exit_s",
               "engine_tpl_first_s", "engine_idle_pss_mib", "engine_floor_s"):
        samples[k2] = []
    cold = dict(env, ISLE_VM_TEMPLATE="0")  # a cold boot (the default is a template's clone)
    engine_once(isle, cold, ["busybox", "true"])  # image, disk and page cache warm
    for _ in range(a.runs):  # floor and engine side by side: the host's load moves both alike
        samples["engine_floor_s"].append(floor())
        samples["engine_cold_exit_s"].append(engine_once(isle, cold, ["busybox", "true"])[1])
        samples["engine_cold_first_s"].append(engine_once(isle, cold, ["busybox", "echo", "hi"])[0])
    subprocess.run(isle + ["vm", "template", "create", "--network", "none", "busybox"], env=env,
                   check=True,
                   capture_output=True)
    try:
        for _ in range(a.runs):
            first, end = engine_once(isle, env, ["busybox", "echo", "hi"])
            samples["engine_tpl_first_s"].append(first)
            samples["engine_tpl_exit_s"].append(end)
        ids = []
        try:
            for _ in range(a.clones):
                r = subprocess.run(isle + ["run", "-d", "--isolation", "vm", "--network", "none",
                                           "busybox", "sleep", "3600"], env=env, check=True,
                                   capture_output=True, text=True)
                ids.append(r.stdout.strip())
            time.sleep(2)
            for cid in ids:
                r = subprocess.run(isle + ["inspect", "-f", "{{.State.Pid}}", cid], env=env,
                                   check=True, capture_output=True, text=True)
                mon = psutil.Process(int(r.stdout.strip()))
                procs = [mon] + [c for c in mon.children(recursive=True)]
                par = mon.parent()
                if par is not None and par.name() == "conmon":
                    procs.append(par)
                samples["engine_idle_pss_mib"].append(sum(pss_mib(p.pid) for p in procs))
        finally:
            if ids:
                subprocess.run(isle + ["rm", "-f", *ids], env=env, capture_output=True)
    finally:
        subprocess.run(isle + ["system", "prune", "-f"], env=env, capture_output=True)
        shutil.rmtree(os.path.join(work, "erun"), ignore_errors=True)


def pss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clones", type=int, default=10)
    ap.add_argument("--json", default="")
    ap.add_argument("--engine", action="store_true", help="also measure the engine path")
    ap.add_argument("--engine-only", action="store_true")
    a = ap.parse_args()

    from isle.vm import accel, disk, initramfs, kernel, snapshot

    work = tempfile.mkdtemp(prefix="isle-vm-bench-")
    cache = os.path.join(work, "cache")
    os.makedirs(cache)
    os.symlink(kernel.kernel_dir(), os.path.join(cache, "kernel"))
    rootfs = os.path.join(work, "rootfs")
    busybox_rootfs(rootfs)
    env = dict(os.environ, ISLE_CACHE=cache)
    env.pop("ISLE_VM_TEMPLATE", None)
    root = os.path.join(work, "state")
    k = kernel.find(cache)
    initrd = initramfs.build(k, cache)
    img = disk.rootfs_image(rootfs, cache)
    khz = accel.host_tsc_khz() or 0
    samples: dict[str, list[float]] = {
        "floor_s": [],
        "floor_same_job_s": [],
        "cold_exit_s": [],
        "cold_first_s": [],
        "tpl_exit_s": [],
        "tpl_first_s": [],
        "clone_pss_mib": [],
        "clone_plus_monitor_pss_mib": [],
    }
    clones: list[str] = []
    try:
        b_true = bundle(os.path.join(work, "b-true"), rootfs, ["true"])
        b_echo = bundle(os.path.join(work, "b-echo"), rootfs, ["echo", "hi"])
        b_tpl = bundle(os.path.join(work, "b-tpl"), rootfs, ["echo", "hi"], template=None)
        runtime_once(b_echo, root, "warm", env)  # caches initramfs/disk, warms page cache
        from isle.config import Settings
        from isle.runtime.vm.boot import prepare

        same_job = prepare(b_true, Settings(cache=cache)).script  # what isle's guest runs
        if a.engine or a.engine_only:
            engine_bench(a, work, env, samples,
                         lambda: floor_once(k.boot_image, initrd, img, khz))
        for i in range(0 if a.engine_only else a.runs):
            samples["floor_s"].append(floor_once(k.boot_image, initrd, img, khz))
            samples["floor_same_job_s"].append(floor_once(k.boot_image, initrd, img, khz,
                                                          same_job))
            t0 = time.monotonic()
            r = subprocess.run([RUNTIME, "--root", root, "run", "-b", b_true, f"t{i}"], env=env)
            assert r.returncode == 0
            samples["cold_exit_s"].append(time.monotonic() - t0)
            first, _ = runtime_once(b_echo, root, f"e{i}", env)
            samples["cold_first_s"].append(first)
        if a.engine_only:
            return _report(a, samples)
        runtime_once(b_tpl, root, "tplwarm", env)  # the default path's first run makes it
        for i in range(a.runs):
            first, end = runtime_once(b_tpl, root, f"p{i}", env)
            samples["tpl_first_s"].append(first)
            samples["tpl_exit_s"].append(end)
        # density: idle clones of one template, each blocked in `sleep`
        b_idle = bundle(os.path.join(work, "b-idle"), rootfs, ["sleep", "3600"], template=None)
        for i in range(a.clones):
            cid = f"idle{i}"
            with open(os.devnull, "wb") as dn:
                subprocess.run(
                    [RUNTIME, "--root", root, "run", "-d", "-b", b_idle, cid],
                    env=env,
                    check=True,
                    stdout=dn,
                    stderr=dn,
                )
            clones.append(cid)
        time.sleep(2)
        for cid in clones:
            with open(os.path.join(root, cid, "state.json")) as f:
                stj = json.load(f)
            q, m = pss_mib(stj["qemu_pid"]), pss_mib(stj["pid"])
            samples["clone_pss_mib"].append(q)
            samples["clone_plus_monitor_pss_mib"].append(q + m)
    finally:
        for cid in clones:
            subprocess.run([RUNTIME, "--root", root, "delete", "--force", cid], env=env)
        snapshot.remove(cache)
        shutil.rmtree(work, ignore_errors=True)

    return _report(a, samples)


def _report(a: argparse.Namespace, samples: dict[str, list[float]]) -> int:
    from isle.vm import accel

    med = {k2: statistics.median(v) for k2, v in samples.items() if v}
    checks = {}
    if "cold_exit_s" in med:
        checks.update({
            "cold_vs_floor": (med["cold_exit_s"] / med["floor_s"], "<= 1.1"),
            "cold_vs_floor_same_job": (med["cold_exit_s"] / med["floor_same_job_s"], "<= 1.1"),
            "tpl_first_output_s": (med["tpl_first_s"], "<= 0.5"),
            "cold_over_tpl_first_output": (med["cold_first_s"] / med["tpl_first_s"], ">= 6"),
            "clone_pss_mib": (med["clone_pss_mib"], "<= 64"),
        })
    if "engine_cold_exit_s" in med:
        checks.update({
            "engine_cold_vs_floor": (med["engine_cold_exit_s"] / med["engine_floor_s"], "<= 1.1"),
            "engine_tpl_first_output_s": (med["engine_tpl_first_s"], "<= 0.5"),
            "engine_cold_over_tpl_first_output": (
                med["engine_cold_first_s"] / med["engine_tpl_first_s"], ">= 6"),
            "engine_idle_pss_mib": (med["engine_idle_pss_mib"], "<= 64"),
        })
    # floor and cold runs alternate round by round: the median of per-round ratios as well
    for name, num, den in (("cold_vs_floor_per_round", "cold_exit_s", "floor_s"),
                           ("cold_vs_floor_same_job_per_round", "cold_exit_s",
                            "floor_same_job_s"),
                           ("engine_cold_vs_floor_per_round", "engine_cold_exit_s",
                            "engine_floor_s")):
        xs, ys = samples.get(num) or [], samples.get(den) or []
        if xs and len(xs) == len(ys):
            checks[name] = (statistics.median(x / y for x, y in zip(xs, ys, strict=True)), "<= 1.1")
    host = {
        "machine": platform.machine(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "accel": accel.detect(),
        "loadavg": os.getloadavg(),  # 2 cores shared: a loaded host moves every figure
    }
    result = {
        "host": host,
        "samples": samples,
        "median": med,
        "checks": {k2: {"value": v, "target": t} for k2, (v, t) in checks.items()},
    }
    for k2, v in med.items():
        print(f"{k2:<28} median {v:8.3f}   samples {[round(x, 3) for x in samples[k2]]}")
    for k2, (v, t) in checks.items():
        print(f"{k2:<28} {v:8.3f}  target {t}")
    print(f"load average {host['loadavg']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
