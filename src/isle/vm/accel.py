"""Choose QEMU's accelerator: KVM only where the CPU has vmx/svm AND /dev/kvm opens, else TCG."""

from __future__ import annotations

import os

__all__ = ["detect", "host_tsc_khz"]


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def detect(cpuinfo_path: str = "/proc/cpuinfo", kvm_path: str = "/dev/kvm") -> tuple[str, str]:
    """Return ("kvm" | "tcg", reason): the reason is for humans (`isle info`) and logs.

    /dev/kvm alone is not enough: a nested paravirtual KVM (PVM) exposes it without vmx/svm and
    ordinary guests hang there, so both must hold.
    """
    try:
        with open(cpuinfo_path) as f:
            flags = _cpu_flags(f.read())
    except OSError as exc:
        return "tcg", f"cannot read {cpuinfo_path}: {exc.strerror}"
    hw = flags & {"vmx", "svm"}
    if not hw:
        return "tcg", f"no vmx/svm flag in {cpuinfo_path}: hardware virtualisation not offered"
    try:
        fd = os.open(kvm_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return "tcg", f"{kvm_path} does not open ({exc.strerror}) although the CPU has {min(hw)}"
    os.close(fd)
    return "kvm", f"CPU has {min(hw)} and {kvm_path} opens"


def host_tsc_khz(cpuinfo_path: str = "/proc/cpuinfo") -> int | None:
    """The host TSC rate in kHz (the guest's tsc_early_khz=: spares TCG a flaky calibration)."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        return None
    return None
