"""The container start path without importing the image store (~20 ms of the CLI's start-up):

- ``resolve``: (id, config, layer dirs) of an image, cached in the engine db per reference and
  keyed by the identity of the store's index file (inode, mtime, size), which the store replaces
  atomically on every change; any change misses the cache and asks the store itself.
- ``mount`` / ``unmount``: the overlay rootfs through isle.image.mount (the one place rootfs
  mounts are made) from the cached layer dirs; anything unusual (rootless copy, scratch images,
  long option strings) is left to the store.
"""

from __future__ import annotations

import errno
import os

from isle.oci.fastjson import dumps, loads
from isle.record import record

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LightImage", "resolve", "mount", "unmount"]

_SCHEMA = ("CREATE TABLE IF NOT EXISTS image_cache (ref TEXT PRIMARY KEY, key TEXT NOT NULL, "
           "image_id TEXT NOT NULL, config TEXT NOT NULL, layer_dirs TEXT NOT NULL)")


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


def mount(engine: Any, img: LightImage, workdir: str, *, copy: bool = False,
          volatile: bool = False) -> str:
    """volatile: the writable layer dies with the container (run --rm): see mount_overlay."""
    from isle.image.mount import mount_overlay

    if not copy and not os.path.exists(os.path.join(workdir, ".copy")):
        try:
            return mount_overlay(img.layer_dirs, workdir, volatile=volatile)
        except ValueError:  # no layers, or too many for one mount call: the store's way
            pass
        except OSError as exc:
            rootfs = os.path.join(workdir, "rootfs")
            if exc.errno == errno.EBUSY and os.path.ismount(rootfs):
                return rootfs  # mounted already (a start after a crash)
            if volatile and exc.errno == errno.EINVAL:  # a kernel before 5.10
                return mount(engine, img, workdir, copy=copy)
    full = engine.store.resolve(img.id)
    if copy and engine.s.rootless:
        from isle.engine import buildns

        if buildns.needs_owners(full.layer_dirs):  # a rootless build's files of other ids
            return buildns.run_in_userns(
                lambda: str(engine.store.mount_rootfs(full, workdir, copy=True)))
    return str(engine.store.mount_rootfs(full, workdir, copy=copy))


def unmount(engine: Any, workdir: str) -> None:
    from isle.image.mount import unmount_rootfs

    unmount_rootfs(workdir)
