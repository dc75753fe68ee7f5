"""Whole-OS VMs: boot to SSH-ready through isle vs a hand-written QEMU command line, and live
migration downtime.

    .venv/bin/python bench/vmos_bench.py [--rounds 1] [--image debian:bookworm-os] [--migrate]

The floor boots the same guest the same way by hand: the OS image's disk (a fresh qcow2 overlay
over the same base), its own kernel and initramfs, the same kind of cloud-init seed (a user with
an SSH key), QEMU's user network with an SSH port forward; SSH-ready = `ssh true` succeeds.
isle adds its jail, cgroup, seed, agent port and monitor. Target: isle <= 1.2x the floor.
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


def _ssh_ready(argv: list[str], deadline: float) -> float:
    while time.monotonic() < deadline:
        if subprocess.run(argv + ["true"], capture_output=True, timeout=60).returncode == 0:
            return time.monotonic()
        time.sleep(0.25)
    raise TimeoutError("SSH never answered")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isle_boot(root: Path, image: str, i: int) -> float:
    name = f"b{i}"
    _isle(root, "vm", "create", "--from-image", image, "-m", "768M", name)
    t0 = time.monotonic()
    try:
        _isle(root, "vm", "start", name)
        argv = [ISLE, "--root", str(root), "--runroot", f"/run/isle-bench-{os.getpid()}-"
                f"{root.name}", "vm", "ssh", name, "--"]
        return _ssh_ready(argv, t0 + 1800) - t0
    finally:
        _isle(root, "vm", "rm", "-f", name)


def floor_boot(root: Path, image: str, work: Path, i: int) -> float:
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
    t0 = time.monotonic()
    q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        ssh = ["ssh", "-i", str(d / "id_ed25519"), "-p", str(port), "-o",
               "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
               "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
               "isle@127.0.0.1"]
        return _ssh_ready(ssh, t0 + 1800) - t0
    finally:
        q.kill()
        q.wait()


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
        for i in range(a.rounds):  # alternate, so load changes hit both alike
            floor_t.append(floor_boot(root, a.image, work, i))
            isle_t.append(isle_boot(root, a.image, i))
        out: dict[str, object] = {
            "floor_ssh_ready_s": round(statistics.median(floor_t), 2),
            "isle_ssh_ready_s": round(statistics.median(isle_t), 2),
            "ratio": round(statistics.median(isle_t) / statistics.median(floor_t), 3),
            "target_ratio": 1.2, "rounds": a.rounds, "load": os.getloadavg()[0]}
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
