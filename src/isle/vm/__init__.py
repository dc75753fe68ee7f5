"""isle.vm: QEMU machines as data (config -> argv), QMP, guest kernel + initramfs, disks, templates.

accel.detect() -> ("kvm"|"tcg", reason)        kernel.fetch()/find()      initramfs.build()
microvm.MicroVM (one microVM and its control channel)   snapshot.ensure()/restore() (templates)
machine.MachineStore (full-OS VMs: create/start/stop/rm/ls/inspect/console; q35 + firmware for a
user's disk, microvm + guest kernel + isle.init=<the image's init> for a disk built from an image)
info() -> what `isle info` prints about VM support
"""

from __future__ import annotations

from typing import Any

__all__ = ["info"]


def info(cache: str | None = None) -> dict[str, Any]:
    """Accelerator (with the reason), QEMU and guest kernel: plain data for `isle info`."""
    from isle.errors import IsleError
    from isle.sys import proc
    from isle.vm import accel, kernel

    acc, why = accel.detect()
    out: dict[str, Any] = {"accel": acc, "accel_reason": why, "qemu": None, "guest_kernel": None}
    if proc.which("qemu-system-x86_64"):
        try:
            r = proc.run(["qemu-system-x86_64", "--version"], timeout=10)
            out["qemu"] = r.stdout.decode().splitlines()[0]
        except IsleError:
            pass
    try:
        k = kernel.find(cache)
        out["guest_kernel"] = {"version": k.version, "image": k.boot_image}
    except IsleError as exc:
        out["guest_kernel_error"] = str(exc)
    return out
