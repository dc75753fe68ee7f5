"""Disk images: the read-only image disk made from a rootfs (erofs/ext4, cached), and qemu-img."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable

from isle.errors import CommandError, ConfigError, VMError
from isle.sys import proc

__all__ = ["rootfs_image", "tree_digest", "info", "check_bootable", "overlay", "FORMATS",
           "convert", "upper_image", "copy_sparse", "copy_fd_sparse",
           "data_ranges", "UPPER_MIB"]


def tree_digest(root: str) -> str:
    """A digest of a directory tree's names, modes, owners, sizes, mtimes and link targets.

    Image layers are immutable once unpacked, so metadata identifies content without reading it all.
    """
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            h.update(
                f"{rel}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\0".encode()
            )
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                h.update(str(st.st_rdev).encode())
    return h.hexdigest()


def rootfs_image(rootfs: str, cache: str, fstype: str = "erofs", key: str = "") -> str:
    """Path of a read-only disk image holding rootfs (built once per tree digest).

    key: what the caller knows identifies the tree's content (the engine: image id + a digest of
    the container's own upper layer), so a cached disk is found without walking the tree."""
    if fstype not in ("erofs", "ext4"):
        raise ConfigError("fstype", f"{fstype!r} is not erofs or ext4")
    if not os.path.isdir(rootfs):
        raise ConfigError("root.path", f"{rootfs} is not a directory")
    d = os.path.join(cache, "disks")
    from isle.sys.fs import private_dir

    private_dir(d)  # 0700: the disks hold image and container files (set-uid binaries, secrets)
    if key and not all(c.isalnum() or c in "-_" for c in key):
        raise ConfigError("org.isle.vm.rootfs-key", f"{key!r}: letters, digits, - and _ only")
    name = f"k-{key}" if key else tree_digest(rootfs)[:24]
    out = os.path.join(d, f"{name}.{fstype}")
    if os.path.exists(out):
        return out
    def make(tmp: str) -> None:
        if fstype == "erofs":
            proc.run(["mkfs.erofs", "--quiet", "-T0", tmp, rootfs], timeout=600)
            return
        used = sum(os.lstat(os.path.join(r, f)).st_size for r, _, fs in os.walk(rootfs) for f in fs)
        size_mib = max(16, int(used * 1.3 / 2**20) + 16)
        proc.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-d", rootfs, tmp,
                  f"{size_mib}M"], timeout=600)

    return _made_as(out, make, f"build a {fstype} disk from {rootfs}")


#: a VM container's writable layer (the guest's overlay upper), MiB: a sparse ext4 file on the
#: host (a fresh one allocates ~0.7 MiB), so the guest's writes cost host disk, not guest RAM (a
#: tmpfs upper was bounded by half the guest's 128 MiB and a 20 MB write could OOM it). Bounded
#: so one container cannot fill the host's disk; room for a package install. Per container:
#: annotation org.isle.vm.upper-size (MiB).
UPPER_MIB = 1024


def upper_image(path: str, size_mib: int = UPPER_MIB) -> str:
    """A fresh, empty, sparse ext4 file at path for a guest's overlay upper (no journal: every
    guest write is a virtio round trip under TCG, and a crashed container's layer is disposable)
    made only if path does not exist; the guest mounts it with noinit_itable so its kernel never
    zeroes inode tables in the background."""
    if not 16 <= size_mib <= 1 << 20:
        raise ConfigError("org.isle.vm.upper-size", f"{size_mib} MiB: between 16 MiB and 1 TiB")
    if os.path.exists(path):
        return path

    def make(tmp: str) -> None:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        proc.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-L", "isle-upper",
                  tmp, f"{size_mib}M"], timeout=60)

    return _made_as(path, make, f"make the writable layer {path}")


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of fd's data ranges (its holes left out)."""
    out, off = [], 0
    while off < size:
        try:
            off = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(fd, off, os.SEEK_HOLE)
        out.append((off, end))
        off = end
    return out


def copy_fd_sparse(fi: int, fo: int) -> None:
    """fo (empty) becomes a copy of fi's data ranges, its holes left holes, at fi's size."""
    size = os.fstat(fi).st_size
    os.ftruncate(fo, size)
    for off, end in data_ranges(fi, size):
        while off < end:
            n = os.copy_file_range(fi, fo, end - off, off, off)
            if n <= 0:
                raise OSError("short copy")
            off += n


def copy_sparse(src: str, dest: str) -> str:
    """dest becomes a copy of src keeping its holes (a template's fresh upper: ~1 MiB of data in
    a 1 GiB file), made beside dest and renamed, 0600."""
    def make(tmp: str) -> None:
        fi = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        fo = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copy_fd_sparse(fi, fo)
        finally:
            os.close(fi)
            os.close(fo)

    try:
        return _made_as(dest, make, f"copy {src}")
    except OSError as exc:
        raise VMError(f"could not copy {src} to {dest}: {exc}") from exc


def _made_as(dest: str, make: Callable[[str], object], what: str) -> str:
    """make(tmp) writes a file beside dest, which then becomes dest by rename: a failed or killed
    maker never leaves a partial dest (its tmp goes); VMError 'could not {what}' on failure."""
    tmp = f"{dest}.tmp.{os.getpid()}"
    try:
        make(tmp)
        os.rename(tmp, dest)
    except CommandError as exc:
        raise VMError(f"could not {what}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def info(path: str) -> dict[str, object]:
    """qemu-img info as a dict; VMError naming the path when it is not an image QEMU can read."""
    if not os.path.exists(path):
        raise ConfigError("disk", f"{path} does not exist")
    try:
        r = proc.run(["qemu-img", "info", "--output=json", path], timeout=30)
    except CommandError as exc:
        raise VMError(f"{path} is not a disk image QEMU can read: {exc}") from exc
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def check_self_contained(path: str) -> dict[str, object]:
    """qemu-img info of a disk from elsewhere (a registry), refused (VMError) unless its data is
    all in the file itself: a backing file, a qcow2 external data file or a vmdk extent naming
    another file would make `convert` copy that host file (/etc/shadow, another VM's disk) into
    the new VM's disk."""
    meta = info(path)
    fs = meta.get("format-specific")
    data = fs.get("data") if isinstance(fs, dict) else None
    data = data if isinstance(data, dict) else {}
    me = os.path.realpath(path)
    others = [str(x) for x in (meta.get("backing-filename"), meta.get("full-backing-filename"),
                               data.get("data-file")) if x]
    for ext in data.get("extents") or ():
        f = ext.get("filename") if isinstance(ext, dict) else None
        if f and os.path.realpath(str(f)) != me:
            others.append(str(f))
    if others:
        raise VMError(f"{path}: refused: the disk reads other files ({', '.join(others)}); "
                      "a disk from a registry must be self-contained")
    return meta


#: disk formats a VM boots from (QEMU reads them as the overlay's backing file): QEMU's own, and
#: VirtualBox's, VMware's and Hyper-V's
FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc")


def check_bootable(path: str) -> str:
    """Format of a user-brought OS disk (FORMATS); VMError if it cannot be one.

    A raw disk must carry an MBR/GPT boot signature: any file is 'raw' to QEMU, so that is checked.
    """
    fmt = str(info(path).get("format"))
    if fmt in FORMATS and fmt != "raw":
        return fmt
    if fmt != "raw":
        raise VMError(f"{path}: disk format {fmt} is not one of {', '.join(FORMATS)}")
    with open(path, "rb") as f:
        sector = f.read(512)
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        raise VMError(f"{path} is not a disk image: no MBR/GPT boot signature in its first sector")
    return fmt


def overlay(base: str, path: str, base_format: str | None = None) -> str:
    """A qcow2 overlay at path whose backing file is base (shared, never written)."""
    fmt = base_format or str(info(base).get("format"))
    try:
        proc.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                os.path.abspath(base),
                "-F",
                fmt,
                path,
            ],
            timeout=60,
        )
    except CommandError as exc:
        raise VMError(f"could not create overlay {path} over {base}: {exc}") from exc
    return path


def convert(src: str, dest: str, fmt: str, *, subformat: str = "") -> str:
    """qemu-img convert src (any format QEMU reads, overlays flattened) to dest in fmt."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    argv = ["qemu-img", "convert", "-O", fmt]
    if subformat:
        argv += ["-o", f"subformat={subformat}"]
    return _made_as(dest, lambda tmp: proc.run([*argv, src, tmp], timeout=3600),
                    f"convert {src} to {fmt}")


def head(path: str, fmt: str, n: int = 2048) -> bytes:
    """The first n bytes of a disk image's contents (any format QEMU reads)."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="isle-head-") as t:
        try:
            proc.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", f"if={path}", f"of={t.name}",
                      "bs=512", f"count={max(1, n // 512)}"], timeout=60)
        except CommandError as exc:
            raise VMError(f"cannot read {path}: {exc}") from exc
        with open(t.name, "rb") as f:
            return f.read(n)


def kind(path: str, fmt: str) -> str:
    """'mbr' (a bootable disk: firmware boots it), 'ext4' (a whole-disk filesystem: an isle OS
    disk, booted by its own kernel) or 'unknown'."""
    h = head(path, fmt)
    if len(h) >= 512 and h[510:512] == b"\x55\xaa":
        return "mbr"
    if len(h) >= 1082 and h[1080:1082] == b"\x53\xef":
        return "ext4"
    return "unknown"
