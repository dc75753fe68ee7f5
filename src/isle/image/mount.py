"""A container rootfs from image layers: overlayfs at workdir/rootfs, or a copy if it cannot mount.

workdir/rootfs   the merged view (mount point, or the copy)
workdir/upper    overlay upperdir: the container's changes (what ``commit`` turns into a layer)
workdir/work     overlay workdir

The one place a rootfs is mounted and unmounted: the image store's ``mount_rootfs`` and the
engine's start path (engine/fastimage.py, which only skips the store's index) both come here.
Light at import (os and sys/ only): it is on `isle run`'s path; the layer copier is imported
when a copy is needed.
"""

from __future__ import annotations

import os

from isle.sys import procfs
from isle.sys.libc import MNT_DETACH, LinuxSyscalls, fs_mount

__all__ = ["mount_rootfs", "mount_overlay", "unmount_rootfs", "is_mounted", "overlay_options"]

MAX_OPTIONS = 4000  # the kernel copies mount data into one page


def overlay_options(layer_dirs: list[str], upper: str, work: str) -> str:
    lower = ":".join(_esc(d) for d in reversed(layer_dirs))  # overlay lists the top layer first
    return f"lowerdir={lower},upperdir={_esc(upper)},workdir={_esc(work)}"


def _esc(p: str) -> str:
    return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def mount_overlay(layer_dirs: list[str], workdir: str, *, volatile: bool = False) -> str:
    """The plain overlay of layer_dirs (bottom first) at workdir/rootfs; volatile: the writable
    layer dies with the container (run --rm), so overlayfs never syncs it and the unmount skips
    a flush of the host filesystem's journal. OSError where the kernel refuses (EBUSY: mounted
    already); ValueError where the options would not fit one mount call: mount_rootfs copes."""
    rootfs, upper, work = (os.path.join(workdir, n) for n in ("rootfs", "upper", "work"))
    opts = overlay_options(layer_dirs, upper, work) + (",volatile" if volatile else "")
    if not layer_dirs or len(opts) > MAX_OPTIONS:
        raise ValueError("the overlay's options do not fit one mount call")
    for d in (rootfs, upper, work):
        os.makedirs(d, exist_ok=True)
    LinuxSyscalls().mount("overlay", rootfs, "overlay", 0, opts)
    return rootfs


def is_mounted(path: str) -> bool:
    return procfs.is_mountpoint(path)


def mount_rootfs(layer_dirs: list[str], workdir: str, *, copy: bool = False) -> str:
    rootfs, upper, work = (os.path.join(workdir, n) for n in ("rootfs", "upper", "work"))
    for d in (rootfs, upper, work):
        os.makedirs(d, exist_ok=True)
    lowers = list(layer_dirs)
    if not lowers:  # FROM scratch: overlay still wants one lowerdir
        empty = os.path.join(workdir, "empty")
        os.makedirs(empty, exist_ok=True)
        lowers = [empty]
    opts = overlay_options(lowers, upper, work)
    if len(opts) > MAX_OPTIONS:
        opts = overlay_options([_short(d) for d in lowers], upper, work)
    extra: list[tuple[str, str | None]] = []
    if os.geteuid() == 0:
        from isle.sys.userns import in_userns

        if in_userns():  # a rootless build: trusted.* is not ours, the store has user.* forms
            opts += ",userxattr"
            extra = [("userxattr", None)]
    if not copy and len(opts) <= MAX_OPTIONS:
        try:
            LinuxSyscalls().mount("overlay", rootfs, "overlay", 0, opts)
            return rootfs
        except OSError:
            pass
    elif not copy:  # too long even so: fsconfig "lowerdir+" (Linux >= 6.8)
        try:
            fs_mount(
                "overlay",
                rootfs,
                [("lowerdir+", d) for d in reversed(lowers)]
                + [("upperdir", upper), ("workdir", work)] + extra,
            )
            return rootfs
        except OSError:
            pass
    if not os.path.exists(os.path.join(workdir, ".copy")):
        from isle.image.layers import apply_layers

        apply_layers(layer_dirs, rootfs)
        open(os.path.join(workdir, ".copy"), "w").close()
    return rootfs


def _short(layer: str) -> str:
    """images/l/<12 hex> -> ../layers/<hex>/diff: keeps many-layer mount options under a page."""
    parent = os.path.dirname(layer)  # .../layers/<hex>
    if os.path.basename(layer) != "diff" or os.path.basename(os.path.dirname(parent)) != "layers":
        return layer
    h = os.path.basename(parent)
    ldir = os.path.join(os.path.dirname(os.path.dirname(parent)), "l")
    os.makedirs(ldir, exist_ok=True)
    link = os.path.join(ldir, h[:12])
    target = os.path.join("..", "layers", h, "diff")
    try:
        os.symlink(target, link)
    except FileExistsError:
        if os.readlink(link) != target:
            return layer
    return link


def unmount_rootfs(workdir: str) -> None:
    """workdir/rootfs unmounted if it is a mount (lazily, if it is busy)."""
    import errno

    rootfs = os.path.join(workdir, "rootfs")
    if not os.path.isdir(rootfs):
        return
    sc = LinuxSyscalls()
    try:
        sc.umount2(rootfs, 0)
    except OSError as exc:
        # EINVAL: not a mount point (a copy, or never mounted); EPERM unprivileged likewise
        if exc.errno == errno.EINVAL or not is_mounted(rootfs):
            return
        sc.umount2(rootfs, MNT_DETACH)
