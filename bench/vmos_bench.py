"""Whole-OS VMs: boot to SSH-ready through isle vs a hand-written QEMU command line, and live
migration downtime.

    .venv/bin/python bench/vmos_bench.py [--rounds 1] [--image debian:bookworm-os] [--migrate]

The floor boots the same guest the same way by hand: the OS image's disk (a fresh qcow2 overlay
over the same base), its own kernel and initramfs, the same kind of cloud-init seed (a user with
an SSH key), QEMU's user network with an SSH port forward; SSH-ready = `ssh true` succeeds.
isle adds its jail, seed, agent port and monitor. Both QEMUs run in a cgroup of their own
(isle's /isle/vm-NAME, the floor's /isle/bench-floor-*: see _floor_cgroup), both probed alike
(sshd's banner through the forwarded port, then `ssh true`). Target: isle <= 1.2x the floor.
Migration: `isle vm migrate` of a VM on an isle network to a second root; QEMU's downtime.
Everything lives under a scratch directory (--scratch) and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISLE = str(REPO / ".venv" / "bin" / "isle")
sys.path.insert(0, str(REPO / "src"))


def _isle(root: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    run = Path(f"/run/isle-bench-{os.getpid()}-{root.name}")
    return subprocess.run([ISLE, "--root", str(root), "--runroot", str(run), *args],
                          capture_output=True, text=True, timeout=timeout, check=True)


def _banner(port: int, deadline: float) -> None:
    """Until sshd's banner comes back through the forwarded port: a cheap probe (QEMU's user
    network accepts on the host at once and closes when nothing listens in the guest), the same
    for both sides, so neither boot shares its CPU with a probe loop of process starts."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("sshd never answered")


def _ssh_ready(argv: list[str], port: int, deadline: float) -> float:
    """SSH-ready: `ssh ... true` succeeds (the user and key are provisioned), probed once sshd
    answers."""
    _banner(port, deadline)
    PHASES["banner"] = time.monotonic()
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        if subprocess.run(argv + ["true"], capture_output=True, timeout=60).returncode == 0:
            PHASES["ssh_tries"] = tries
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError("SSH never answered")


#: the last boot's phases (monotonic times; printed per round)
PHASES: dict[str, float] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isle_boot(root: Path, image: str, i: int) -> float:
    name = f"b{i}"
    _isle(root, "vm", "create", "--from-image", image, "-m", "768M", name)
    t0 = time.monotonic()
    try:
        PHASES.clear()
        PHASES["t0"] = t0
        _isle(root, "vm", "start", name)
        PHASES["started"] = time.monotonic()
        fw = json.loads(_isle(root, "vm", "inspect", name).stdout)[0]["forwards"]
        port = next(v for k, v in fw.items() if k.startswith("22/tcp"))
        argv = [ISLE, "--root", str(root), "--runroot", f"/run/isle-bench-{os.getpid()}-"
                f"{root.name}", "vm", "ssh", name, "--"]
        t = _ssh_ready(argv, port, t0 + 1800) - t0
        print(f"  isle: started +{PHASES['started'] - t0:.1f} s, sshd banner "
              f"+{PHASES['banner'] - t0:.1f} s, ssh ok +{t:.1f} s ({PHASES['ssh_tries']} "
              "tries)", file=sys.stderr, flush=True)
        return t
    finally:
        _isle(root, "vm", "rm", "-f", name)


def _floor_cgroup(i: int) -> tuple[object | None, tuple[str, ...]]:
    """A cgroup for the floor's QEMU beside isle's VM cgroups (/isle/bench-floor-<pid>-<i>, no
    limits): on a shared host CFS gives a process in the root cgroup one weight per thread
    (QEMU's vCPU, main loop and I/O threads each compete as a task), while a cgroup's threads
    share one weight, as isle's VM in /isle/vm-NAME does; without this the ratio measured the
    host's other load, not isle (round 0 at load 8.7: floor 88 s, isle 222 s; the guests' own
    kernel clocks showed every boot phase, even the kernel's init, ~1.7x slower under isle)."""
    if os.geteuid() != 0:
        return None, ()
    from isle.runtime.cgroup import manager
    from isle.runtime.vm.boot import procs_files

    cg = manager(None, f"bench-floor-{os.getpid()}-{i}")
    cg.create()
    return cg, procs_files(cg)


def floor_boot(root: Path, image: str, work: Path, i: int, in_cgroup: bool = True) -> float:
    """The same guest, booted by a QEMU command line written by hand."""
    from isle.vm import cloudinit

    disks = root / "vms" / ".disks"
    base = next(p for p in disks.iterdir() if p.name.endswith("-os.ext4"))
    stem = str(base)[:-len(".ext4")]
    d = work / f"floor{i}"
    d.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(d / "disk.qcow2")], check=True)
    pub = cloudinit.ensure_key(str(d))
    cloudinit.make_seed(str(d), name=f"floor{i}", user="isle", ssh_keys=[pub], password="x",
                        hostname=f"floor{i}")
    port = _free_port()
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", "q35", "-accel", "tcg", "-m", "768M", "-smp", "1", "-no-reboot",
            "-kernel", stem + ".vmlinuz", "-initrd", stem + ".initrd",
            "-append", "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 panic=-1",
            "-serial", f"file:{d / 'console.log'}",
            "-drive", f"file={d / 'disk.qcow2'},format=qcow2,if=virtio",
            "-drive", f"file={d / 'seed.iso'},format=raw,if=virtio,readonly=on",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0"]
    cg, procs = _floor_cgroup(i) if in_cgroup else (None, ())

    def join() -> None:
        for f in procs:
            with open(f, "w") as fh:
                fh.write("0")

    t0 = time.monotonic()
    q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=join if procs else None)
    try:
        ssh = ["ssh", "-i", str(d / "id_ed25519"), "-p", str(port), "-o",
               "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
               "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
               "isle@127.0.0.1"]
        t = _ssh_ready(ssh, port, t0 + 1800) - t0
        print(f"  floor: sshd banner +{PHASES['banner'] - t0:.1f} s, ssh ok +{t:.1f} s "
              f"({PHASES['ssh_tries']} tries)", file=sys.stderr, flush=True)
        return t
    finally:
        q.kill()
        q.wait()
        if cg is not None:
            for _ in range(100):
                try:
                    cg.destroy()  # type: ignore[attr-defined]
                    break
                except Exception:  # QEMU's threads may still be leaving
                    time.sleep(0.05)


def migration(root: Path, image: str, work: Path) -> dict[str, object]:
    net = f"bm{os.getpid() % 10000}"
    _isle(root, "network", "create", net)
    try:
        _isle(root, "vm", "create", "--from-image", image, "-m", "768M", "--network", net, "mg")
        _isle(root, "vm", "start", "mg")
        _isle(root, "vm", "exec", "--wait", "1500", "mg", "--", "true")
        other = work / "root2"
        cp = _isle(root, "vm", "migrate", "mg", "--to", str(other), "--to-runroot",
                   f"/run/isle-bench-{os.getpid()}-root2")
        line = cp.stderr.strip().splitlines()[-1]
        _isle(other, "vm", "rm", "-f", "mg")
        return {"report": line}
    finally:
        subprocess.run([ISLE, "--root", str(root), "--runroot",
                        f"/run/isle-bench-{os.getpid()}-{root.name}", "vm", "rm", "-f", "mg"],
                       capture_output=True)
        _isle(root, "network", "rm", net)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--image", default="debian:bookworm-os")
    ap.add_argument("--scratch", default="/var/tmp/isle-vmos-bench")
    ap.add_argument("--migrate", action="store_true", help="also measure a live migration")
    ap.add_argument("--floor-in-root-cgroup", action="store_true",
                    help="run the floor's QEMU where the bench runs (see _floor_cgroup)")
    a = ap.parse_args()
    work = Path(a.scratch) / str(os.getpid())
    root = work / "root"
    work.mkdir(parents=True)
    try:
        dist = a.image.removesuffix("-os")
        _isle(root, "image", "bootstrap", "--os", dist, timeout=3600)
        _isle(root, "vm", "create", "--from-image", a.image, "warm")  # builds the base disk
        _isle(root, "vm", "rm", "warm")
        isle_t, floor_t = [], []
        cg = not a.floor_in_root_cgroup
        for i in range(a.rounds):  # interleaved, each going first in turn: load changes and
            if i % 2:              # a warm page cache favour neither
                isle_t.append(isle_boot(root, a.image, i))
                floor_t.append(floor_boot(root, a.image, work, i, cg))
            else:
                floor_t.append(floor_boot(root, a.image, work, i, cg))
                isle_t.append(isle_boot(root, a.image, i))
            print(f"round {i}: floor {floor_t[-1]:.1f} s, isle {isle_t[-1]:.1f} s, load "
                  f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        out: dict[str, object] = {
            "floor_ssh_ready_s": round(statistics.median(floor_t), 2),
            "isle_ssh_ready_s": round(statistics.median(isle_t), 2),
            "ratio": round(statistics.median(isle_t) / statistics.median(floor_t), 3),
            "floor_s": [round(x, 2) for x in floor_t], "isle_s": [round(x, 2) for x in isle_t],
            "target_ratio": 1.2, "rounds": a.rounds, "load": os.getloadavg()[0],
            "floor_cgroup": cg}
        if a.migrate:
            out["migration"] = migration(root, a.image, work)
        print(json.dumps(out, indent=1))
    finally:
        subprocess.run([ISLE, "--root", str(root), "--runroot",
                        f"/run/isle-bench-{os.getpid()}-root", "image", "rm", "-f",
                        a.image], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        for p in Path("/run").glob(f"isle-bench-{os.getpid()}-*"):
            shutil.rmtree(p, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
