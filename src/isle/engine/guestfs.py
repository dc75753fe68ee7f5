"""cp, export, diff and commit of a container whose files are a guest's (caps.host_rootfs false:
isle-vm-runtime), through its runtime (``rt.guest_files``: the guest runs a tar; see
runtime/vm/guestfs.py), while it runs and after it stopped.

What comes out of a guest is untrusted: it is unpacked by the image layer unpacker (image.layers:
nothing escapes the private directory it unpacks into, no device node is made) into a private
directory, then the host-side verbs run on that as they run on a container's own rootfs or upper
(so `cp` keeps its rules: set-id bits dropped, devices never recreated on the host); `export`'s
tar alone is not unpacked: it goes to the client as the guest made it (see export). What goes in
is a tar isle makes of the host source; the guest places it inside the container's root.

Paths under a volume or bind mount are the host's own directories (shared with the guest over
virtio-fs): those go the host way. Before its first start a guest container's files are the
bundle's rootfs (what the runtime hands the guest), so that is the host way too.
"""

from __future__ import annotations

import os
import stat

from isle.engine.db import ContainerRecord
from isle.errors import ConfigError, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Any

__all__ = ["is_guest", "cp_out", "cp_in", "export", "upper", "host_source"]


def is_guest(t: Any, rec: ContainerRecord, verb: str) -> bool:
    """Its files are a guest's: a runtime with a guest kernel, started at least once; a runtime
    that cannot reach them (no caps.guest_files) refuses verb (Unsupported, exit 125)."""
    rt = t.ctx.oci(rec)
    if rt.caps.host_rootfs or not (rec.started_at or rec.state in ("running", "paused")):
        return False
    if not rt.caps.guest_files:
        raise rt.unsupported(verb, "its guest's files are not visible to the host; the "
                             "host-side rootfs is not what the container sees")
    return True


def _in_volume(t: Any, rec: ContainerRecord, cpath: str) -> bool:
    sentinel = "\0guest"
    return bool(t._croot(rec, sentinel, cpath)[0] != sentinel)


def _private_dir(t: Any) -> str:
    """A new 0700 directory under <root>/guest-files, itself made or tightened to 0700 (an
    existing one keeps no wider mode: the guest's files are unpacked below it). Under the data
    root, on disk as the images are, not the runroot: that is often a tmpfs, where what a guest
    sends (bounded only by its disk) would take the host's RAM."""
    import tempfile

    from isle.sys.fs import private_dir

    return tempfile.mkdtemp(prefix="cp-", dir=private_dir(os.path.join(t.ctx.s.root,
                                                                       "guest-files")))


def _guest(t: Any, rec: ContainerRecord, op: str, args: tuple[str, ...], in_fd: int,
           out_fd: int) -> str:
    """The runtime runs op in the container's guest (a stopped one: on its bundle, mounted);
    the guest's notes."""
    rt = t.ctx.oci(rec)
    p = t.ctx.paths(rec.id)
    if rec.state in ("running", "paused"):
        return str(rt.guest_files(t.ctx.s, rec.id, p.bundle, op, args, in_fd, out_fd))
    with t._rootfs(rec):  # the image disk is made from (or keyed by) the bundle's rootfs
        return str(rt.guest_files(t.ctx.s, rec.id, p.bundle, op, args, in_fd, out_fd))


#: files the runtime writes into a guest's root for the container (bind mounts in a container:
#: never its changes; engine/transfer.py's _MOUNTPOINTS)
_RUNTIME_FILES = {"etc/hostname", "etc/hosts", "etc/resolv.conf"}


def _unpack(tar: IO[bytes], dest: str, *, whiteouts: bool = False) -> None:
    """Unpack the guest's tar into dest (private) safely; whiteouts: it is the writable layer
    (its char 0/0 entries are overlay whiteouts; the runtime's own files are left out), else
    every device node is dropped."""
    import tarfile

    from isle.image.layers import TarStream, Unpacker

    class Upper(TarStream):
        def __iter__(self) -> Iterator[tarfile.TarInfo]:
            for m in super().__iter__():
                if whiteouts and m.name.removeprefix("./").strip("/") in _RUNTIME_FILES:
                    continue
                if whiteouts and m.ischr() and m.devmajor == 0 and m.devminor == 0:
                    d, _, b = m.name.rstrip("/").rpartition("/")
                    m.name = f"{d}/.wh.{b}" if d else f".wh.{b}"
                    m.type, m.size = tarfile.REGTYPE, 0
                yield m

    u = Unpacker(dest, devices=False)
    try:
        u.extract(Upper(tar))
    except tarfile.TarError as exc:
        from isle.errors import VMError

        raise VMError(f"the guest's tar of the container's files is unreadable: {exc}") from None
    finally:
        u.close()


def cp_out(t: Any, rec: ContainerRecord, sp: str, dp: str) -> None:
    """`cp CONTAINER:SP DP` of a guest: the entry the guest resolves SP to, unpacked into a
    private root at SP's place, then copied to the host by the host-side rules."""
    import posixpath
    import shutil
    import tempfile

    if _in_volume(t, rec, sp):
        return t._cp_out(rec, "/nonexistent", sp, dp)  # type: ignore[no-any-return]
    lex = posixpath.normpath("/" + sp)
    lex = "/" + lex.lstrip("/")
    root = _private_dir(t)
    try:
        with tempfile.TemporaryFile(dir=root) as tar:
            try:
                _guest(t, rec, "out", (lex,), -1, tar.fileno())
            except NotFound:
                raise NotFound(f"could not find the file {sp} in container {rec.name}") from None
            tar.seek(0)
            parent = os.path.join(root, "r", os.path.dirname(lex).lstrip("/"))
            os.makedirs(parent, mode=0o700)
            _unpack(tar, parent)
        if lex != "/":
            got = os.listdir(parent)
            if len(got) != 1:
                raise NotFound(f"could not find the file {sp} in container {rec.name}")
            if got[0] != os.path.basename(lex):  # SP's last component was a symlink
                os.rename(os.path.join(parent, got[0]), os.path.join(parent, os.path.basename(lex)))
        suffix = "/." if sp.endswith("/.") else "/" if sp.endswith("/") and lex != "/" else ""
        t._cp_out(rec, os.path.join(root, "r"), lex + suffix, dp)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def host_source(sp: str, follow: bool) -> tuple[bool, str, str, bool, os.stat_result]:
    """Docker's reading of the host side of `cp SP CONTAINER:DP`: (its contents only ('DIR/.'),
    its path, the name it gets, whether its own symlink is followed (-L, 'DIR/', 'DIR/.'),
    its stat); NotFound if it is missing."""
    contents = sp.endswith("/.")
    hpath = sp.rstrip("/").removesuffix("/.").rstrip("/") or "/"
    hname = os.path.basename(hpath)
    follow = follow or contents or sp.endswith("/") or hname in ("", ".", "..")
    try:
        hst = os.stat(hpath, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"could not find the file {sp} on the host") from None
    if hname in ("", ".", ".."):
        hname = os.path.basename(os.path.realpath(hpath)) or "rootfs"
    return contents, hpath, hname, follow, hst


def cp_in(t: Any, rec: ContainerRecord, sp: str, dp: str, follow: bool) -> None:
    """`cp SP CONTAINER:DP` of a guest: a tar of the host source (owned by root, no device
    nodes) whose one top entry the guest places at DP by docker cp's rules."""
    import posixpath
    import shutil
    import tarfile
    import tempfile

    if _in_volume(t, rec, dp):
        return t._cp_in(rec, "/nonexistent", sp, dp, follow)  # type: ignore[no-any-return]
    contents, hpath, hname, follow, hst = host_source(sp, follow)
    src_dir = stat.S_ISDIR(hst.st_mode)
    if contents and not src_dir:
        raise ConfigError("cp", f"{sp}: not a directory")
    src = os.path.realpath(hpath) if follow else hpath

    def own(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if ti.ischr() or ti.isblk():
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    dest = posixpath.normpath("/" + dp)
    dest = "/" + dest.lstrip("/") + ("/" if dp.endswith("/") and dest != "/" else "")
    root = _private_dir(t)
    try:
        with tempfile.TemporaryFile(dir=root) as tar:
            with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:
                tf.add(src, arcname="s", recursive=True, filter=own)
            tar.seek(0)
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _guest(t, rec, "in", (dest, "1" if src_dir else "0", "1" if contents else "0",
                                      hname), tar.fileno(), null)
            finally:
                os.close(null)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def export(t: Any, rec: ContainerRecord, out: IO[bytes]) -> None:
    """`export` of a guest: its root filesystem as the guest sees it (the overlay alone: no
    /proc, /sys or volumes), as the guest's own tar, byte for byte (not re-packed by isle).

    That tar is untrusted and stays safe for the host because the host never reads it: it is
    spooled to a file in a private (0700) directory and copied to `out`, never unpacked or
    parsed here. The client gets what a container's export always holds, whatever its
    processes wrote (as with any runtime's export)."""
    import shutil
    import tempfile

    root = _private_dir(t)
    try:
        with tempfile.TemporaryFile(dir=root) as tar:
            _guest(t, rec, "export", (), -1, tar.fileno())
            tar.seek(0)
            shutil.copyfileobj(tar, out, 1 << 20)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _opaque(top: str, rel: str) -> None:
    """Mark top/rel an overlay opaque directory, resolved beneath top without following a
    symlink (the tree is the guest's)."""
    from isle.image.layers import OPAQUE_XATTR
    from isle.sys.inroot import RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, openat2

    tfd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = openat2(tfd, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, 0,
                     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    except OSError:
        return  # not a directory of the unpacked layer: nothing to mark
    finally:
        os.close(tfd)
    try:
        os.setxattr(fd, OPAQUE_XATTR, b"y")
    finally:
        os.close(fd)


def upper(t: Any, rec: ContainerRecord) -> Any:
    """A context manager: a private directory holding the container's changes in overlay form
    (what the bundle's upper holds, then the guest's writable layer over it: its whiteouts, and
    its opaque directories, which the guest names beside its tar), for diff and commit."""
    from contextlib import contextmanager

    @contextmanager
    def gen() -> Iterator[str]:
        import shutil
        import tempfile

        from isle.sys import fdtree

        root = _private_dir(t)
        try:
            merged = os.path.join(root, "upper")
            os.mkdir(merged, 0o755)
            host = t.ctx.paths(rec.id).upper
            if os.path.isdir(host):
                sfd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                dfd = os.open(merged, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    fdtree.copy_into(sfd, dfd, keep_owner=True)
                finally:
                    os.close(sfd)
                    os.close(dfd)
            with tempfile.TemporaryFile(dir=root) as tar:
                notes = _guest(t, rec, "upper", (), -1, tar.fileno())
                tar.seek(0)
                _unpack(tar, merged, whiteouts=True)
            for line in notes.splitlines():
                if line.startswith("opaque ./"):
                    _opaque(merged, line.removeprefix("opaque ./"))
            yield merged
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return gen()
