"""The guest initramfs isle builds: busybox-static, isle-exec, needed modules, init.sh (cpio newc).

Built once per content (modules, busybox, init, helper) into ``<cache>/initramfs/<sha>.cpio``.
Uncompressed by default: under TCG unpacking ~4 MB costs less than any decompressor (see bench).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field

from isle.errors import VMError
from isle.sys import proc
from isle.vm.job import premount_script
from isle.vm.kernel import ON_DEMAND_MODULES, GuestKernel, module_load_order

__all__ = ["Entry", "newc", "build", "exec_helper", "modprobe_script", "APPLETS"]

#: busybox applets init.sh and the job scripts use
APPLETS = (
    "sh",
    "mount",
    "umount",
    "mkdir",
    "cat",
    "insmod",
    "usleep",
    "base64",
    "poweroff",
    "kill",
    "hostname",
    "echo",
    "sleep",
    "ln",
    "mknod",
    "ls",
    "wait",
    "chmod",
    "sync",
    "reboot",
    "test",
    "ip",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One cpio member: a regular file (data), directory, symlink (target) or char device (rdev)."""

    path: str
    mode: int
    data: bytes = b""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = field(default=0)


def _hdr(ino: int, e: Entry, size: int) -> bytes:
    name = e.path.lstrip("/").encode() + b"\0"
    fields = [ino, e.mode, 0, 0, 1, e.mtime, size, 0, 0, e.rdev[0], e.rdev[1], len(name), 0]
    h = b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + name
    return h + b"\0" * (-len(h) % 4)


def newc(entries: list[Entry]) -> bytes:
    """A cpio 'newc' archive (what the kernel unpacks into its rootfs), deterministic."""
    out = bytearray()
    for ino, e in enumerate(entries, start=1):
        body = e.target.encode() if stat.S_ISLNK(e.mode) else e.data
        out += _hdr(ino, e, len(body)) + body + b"\0" * (-len(body) % 4)
    out += _hdr(0, Entry("TRAILER!!!", 0), 0)
    return bytes(out + b"\0" * (-len(out) % 512))


def _guest_file(name: str) -> bytes:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest", name), "rb") as f:
        return f.read()  # (importlib.resources costs ~9 ms to import on every VM start)


def exec_helper(cache: str) -> str:
    """The static isle-exec binary, compiled once per source into the cache (gcc, libc6-dev)."""
    src = _guest_file("isle-exec.c")
    digest = hashlib.sha256(src).hexdigest()[:16]
    out = os.path.join(cache, "guest", f"isle-exec-{digest}")
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp_c = f"{out}.{os.getpid()}.c"
    with open(tmp_c, "wb") as f:
        f.write(src)
    try:
        if not proc.which("gcc"):
            raise VMError(
                "gcc is needed once to build the guest's isle-exec (apt-get install gcc libc6-dev)"
            )
        proc.run(["gcc", "-static", "-Os", "-s", "-o", f"{out}.{os.getpid()}", tmp_c], timeout=120)
        os.rename(f"{out}.{os.getpid()}", out)
    finally:
        os.unlink(tmp_c)
    return out


def _busybox() -> str:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(cand):
            with open(cand, "rb") as f:
                head = f.read(4096)
            if b"\x7fELF" == head[:4] and b"/lib64/ld-linux" not in head:
                return cand
    raise VMError(
        "busybox-static is needed for the guest initramfs (apt-get install busybox-static)"
    )


def entries(kernel: GuestKernel, cache: str) -> list[Entry]:
    order = module_load_order(kernel.modules_dir)
    with open(_busybox(), "rb") as f:
        bb = f.read()
    with open(exec_helper(cache), "rb") as f:
        helper = f.read()
    d = stat.S_IFDIR | 0o755
    out = [
        Entry(p, d)
        for p in (
            "bin",
            "dev",
            "proc",
            "sys",
            "lib",
            "lib/modules",
            "lower",
            "rw",
            "newroot",
            "tmp",
        )
    ]
    out.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    out.append(Entry("init", stat.S_IFREG | 0o755, _guest_file("init.sh")))
    out.append(Entry("premount.sh", stat.S_IFREG | 0o644, premount_script().encode()))
    out.append(Entry("bin/busybox", stat.S_IFREG | 0o755, bb))
    out.append(Entry("bin/isle-exec", stat.S_IFREG | 0o755, helper))
    out += [Entry(f"bin/{a}", stat.S_IFLNK | 0o777, target="busybox") for a in APPLETS]
    demand = {m: [d for d in module_load_order(kernel.modules_dir, (), (m,)) if d not in order]
              for m in ON_DEMAND_MODULES}  # each with the deps boot did not load, deps first
    for m in dict.fromkeys([*order, *(d for ds in demand.values() for d in ds)]):
        with open(kernel.module(m), "rb") as f:
            out.append(Entry(f"lib/modules/{m}.ko", stat.S_IFREG | 0o644, f.read()))
    out.append(Entry("modules.order", stat.S_IFREG | 0o644, ("\n".join(order) + "\n").encode()))
    out.append(Entry("bin/isle-modprobe", stat.S_IFREG | 0o755, modprobe_script(demand).encode()))
    return out


def modprobe_script(demand: dict[str, list[str]]) -> str:
    """The guest's kernel.modprobe (init.sh sets it): the kernel runs it as `isle-modprobe -q --
    NAME` when a process needs a module (request_module); it loads only the on-demand modules the
    initramfs holds (kernel.ON_DEMAND_MODULES, also by their rtnl-link alias), deps first."""
    cases = "".join(
        f"  {m}|rtnl-link-{m}) for k in {' '.join(ds)}; do"
        f" insmod /lib/modules/$k.ko 2>/dev/null; done;;\n"
        for m, ds in demand.items() if ds)
    return ("#!/bin/sh\n# isle-modprobe: the guest's kernel.modprobe (vm/initramfs.py)\n"
            'for a; do n=$a; done\ncase "$n" in\n' + cases + "  *) exit 1;;\nesac\n")


def build(kernel: GuestKernel, cache: str, *, compress: str = "none") -> str:
    """Path of the cached initramfs for this kernel (built if missing). compress: none|gzip|lz4."""
    if compress not in ("none", "gzip", "lz4"):
        raise VMError(f"initramfs compression {compress!r} not one of none, gzip, lz4")
    # fast path: the same inputs (by name, size, mtime) as last time -> the same archive, no rebuild
    d = os.path.join(cache, "initramfs")
    hint = os.path.join(d, f"inputs-{_inputs_key(kernel, cache, compress)}")
    try:
        made = os.readlink(hint)
        if os.path.exists(made):
            return made
    except OSError:
        pass
    out = _build(kernel, cache, compress)
    try:
        os.symlink(out, f"{hint}.{os.getpid()}")
        os.replace(f"{hint}.{os.getpid()}", hint)
    except OSError:
        pass
    return out


def _inputs_key(kernel: GuestKernel, cache: str, compress: str) -> str:
    h = hashlib.sha256(f"{compress}\0{kernel.dir}\0".encode())
    h.update(_guest_file("init.sh") + _guest_file("isle-exec.c") + premount_script().encode())
    h.update(repr(APPLETS).encode())
    for p in sorted(
        [_busybox(), *(os.path.join(kernel.modules_dir, m) for m in os.listdir(kernel.modules_dir))]
    ):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def _build(kernel: GuestKernel, cache: str, compress: str) -> str:
    data = newc(entries(kernel, cache))
    digest = hashlib.sha256(data).hexdigest()[:16]
    d = os.path.join(cache, "initramfs")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, f"{digest}.cpio" + {"none": "", "gzip": ".gz", "lz4": ".lz4"}[compress])
    if os.path.exists(out):
        return out
    if compress == "gzip":
        import gzip

        data = gzip.compress(data, 6, mtime=0)
    elif compress == "lz4":
        data = proc.run(["lz4", "-l", "-9", "-c"], input=data, timeout=60).stdout
    tmp = f"{out}.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, out)
    return out


def clear(cache: str) -> None:
    shutil.rmtree(os.path.join(cache, "initramfs"), ignore_errors=True)
