"""The container start path without importing the image store (~20 ms of the CLI's start-up):

- ``resolve``: (id, config, layer dirs) of an image, cached in the engine db per reference and
  keyed by the identity of the store's index file (inode, mtime, size), which the store replaces
  atomically on every change; any change misses the cache and asks the store itself.
- ``mount`` / ``unmount``: the overlay rootfs in the store's layout (workdir/rootfs, /upper, /work,
  as isle.image.mount makes it); anything unusual (rootless copy, scratch images, long option
  strings) is left to the store.
"""

from __future__ import annotations

import errno
import os

from isle.oci.fastjson import dumps, loads
from isle.record import record

TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LightImage", "resolve", "mount", "unmount"]

_SCHEMA = ("CREATE TABLE IF NOT EXISTS image_cache (ref TEXT PRIMARY KEY, key TEXT NOT NULL, "
           "image_id TEXT NOT NULL, config TEXT NOT NULL, layer_dirs TEXT NOT NULL)")
MAX_OPTIONS = 4000


@record
class LightImage:
    """An image as a container start needs it: id, config, layer dirs."""
    id: str
    config: dict[str, Any]
    layer_dirs: list[str]


def _key(images_dir: str) -> str | None:
    try:
        st = os.stat(os.path.join(images_dir, "repositories.json"))
    except OSError:
        return None
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def resolve(engine: Any, ref: str) -> LightImage:
    conn = engine.db.conn
    key = _key(engine.s.images_dir)
    if key is not None:
        try:
            row = conn.execute("SELECT image_id, config, layer_dirs FROM image_cache "
                               "WHERE ref = ? AND key = ?", (ref, key)).fetchone()
        except Exception:  # table not made yet
            row = None
        if row is not None:
            dirs = loads(row[2])
            if all(os.path.isdir(d) for d in dirs):
                return LightImage(id=row[0], config=loads(row[1]), layer_dirs=dirs)
    img = engine.store.resolve(ref)
    key = _key(engine.s.images_dir)
    if key is not None:
        try:
            with engine.db.tx() as c:
                c.execute(_SCHEMA)
                for r in {ref, img.id}:
                    c.execute("INSERT OR REPLACE INTO image_cache VALUES (?,?,?,?,?)",
                              (r, key, img.id, dumps(img.config), dumps(img.layer_dirs)))
        except Exception:  # a cache, never a reason to fail
            pass
    return LightImage(id=img.id, config=img.config, layer_dirs=list(img.layer_dirs))


def _esc(p: str) -> str:
    return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def mount(engine: Any, img: LightImage, workdir: str, *, copy: bool = False,
          volatile: bool = False) -> str:
    """volatile: the writable layer dies with the container (run --rm): overlayfs never syncs
    it, so the unmount skips a flush of the host filesystem's journal (1-60 ms here)."""
    rootfs, upper, work = (os.path.join(workdir, n) for n in ("rootfs", "upper", "work"))
    lower = ":".join(_esc(d) for d in reversed(img.layer_dirs))
    opts = f"lowerdir={lower},upperdir={_esc(upper)},workdir={_esc(work)}"
    if volatile:
        opts += ",volatile"
    if copy or not img.layer_dirs or len(opts) > MAX_OPTIONS \
            or os.path.exists(os.path.join(workdir, ".copy")):
        full = engine.store.resolve(img.id)
        if copy and engine.s.rootless:
            from isle.engine import buildns

            if buildns.needs_owners(full.layer_dirs):  # a rootless build's files of other ids
                return buildns.run_in_userns(
                    lambda: str(engine.store.mount_rootfs(full, workdir, copy=True)))
        return str(engine.store.mount_rootfs(full, workdir, copy=copy))
    for d in (rootfs, upper, work):
        os.makedirs(d, exist_ok=True)
    from isle.sys.libc import LinuxSyscalls

    try:
        LinuxSyscalls().mount("overlay", rootfs, "overlay", 0, opts)
    except OSError as exc:
        if exc.errno == errno.EBUSY and os.path.ismount(rootfs):
            return rootfs  # mounted already (a start after a crash)
        if volatile and exc.errno == errno.EINVAL:  # a kernel before 5.10
            return mount(engine, img, workdir, copy=copy)
        return str(engine.store.mount_rootfs(engine.store.resolve(img.id), workdir))
    return rootfs


def unmount(engine: Any, workdir: str) -> None:
    rootfs = os.path.join(workdir, "rootfs")
    if not os.path.isdir(rootfs):
        return
    from isle.sys.libc import MNT_DETACH, LinuxSyscalls

    sc = LinuxSyscalls()
    try:
        sc.umount2(rootfs, 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a mount point
            return
        sc.umount2(rootfs, MNT_DETACH)
