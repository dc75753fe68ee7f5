"""Named volumes: directories under <root>/volumes/<name>/_data, records in the engine db.

A named volume is filled from the image's content at its mount point on first use (Docker's rule),
exactly once even when several containers start at the same time.
"""

from __future__ import annotations

import builtins
import os
import time

from isle.config import Settings
from isle.engine.db import Db, VolumeRecord
from isle.engine.options import MountSpec
from isle.errors import AlreadyExists, ConfigError, InvalidState, NotFound

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Volumes", "safe_join"]

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REST = _ALNUM | frozenset("_.-")


def _valid_name(name: str) -> bool:
    """[a-zA-Z0-9][a-zA-Z0-9_.-]* without `re` (~5 ms of every container start)."""
    return bool(name) and name[0] in _ALNUM and _REST.issuperset(name)


def safe_join(root: str, path: str) -> str:
    """root + path with every symlink resolved *inside* root (never escaping it)."""
    parts = [p for p in path.split("/") if p and p != "."]
    cur = root
    depth = 0
    out: list[str] = []
    while parts:
        p = parts.pop(0)
        if p == "..":
            if out:
                out.pop()
            continue
        cand = os.path.join(root, *out, p)
        if os.path.islink(cand):
            depth += 1
            if depth > 40:
                raise ConfigError("path", f"{path}: too many levels of symbolic links")
            target = os.readlink(cand)
            if target.startswith("/"):
                out = []
            parts = [x for x in target.split("/") if x and x != "."] + parts
            continue
        out.append(p)
    cur = os.path.join(root, *out)
    return cur


class Volumes:
    """Named and anonymous volumes on disk and in the db."""

    __slots__ = ("settings", "db")

    def __init__(self, settings: Settings, db: Db) -> None:
        self.settings, self.db = settings, db

    def _dir(self, name: str) -> str:
        return os.path.join(self.settings.volumes_dir, name)

    def create(self, name: str = "", labels: dict[str, str] | None = None,
               driver: str = "local", *, anonymous: bool = False,
               exist_ok: bool = True) -> VolumeRecord:
        if driver != "local":
            raise ConfigError("--driver", f"unknown volume driver {driver!r} (only 'local')")
        if not name:
            name = os.urandom(32).hex()
            anonymous = True
        if not _valid_name(name):
            raise ConfigError("name", f"invalid volume name {name!r}: "
                              "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        data = os.path.join(self._dir(name), "_data")
        rec = VolumeRecord(name=name, created=time.time(), driver=driver, mountpoint=data,
                           labels=labels or {}, anonymous=anonymous)
        os.makedirs(data, exist_ok=True)
        if not self.db.insert_volume(rec):
            if not exist_ok:
                raise AlreadyExists(f"volume {name!r} already exists")
            return self.db.get_volume(name)
        return rec

    def inspect(self, name: str) -> dict[str, Any]:
        v = self.db.get_volume(name)
        return {
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.created)),
            "Driver": v.driver, "Labels": v.labels or None, "Mountpoint": v.mountpoint,
            "Name": v.name, "Options": v.options or None, "Scope": "local",
        }

    def list(self) -> list[VolumeRecord]:
        return self.db.list_volumes()

    def remove(self, name: str, users: builtins.list[str], *, force: bool = False) -> None:
        self.db.get_volume(name)
        if users and not force:
            raise InvalidState(f"remove {name}: volume is in use - [{', '.join(users)}]")
        self.db.delete_volume(name)
        import shutil

        shutil.rmtree(self._dir(name), ignore_errors=True)

    def resolve(self, mounts: builtins.list[MountSpec], rootfs: str
                ) -> builtins.list[dict[str, Any]]:
        """MountSpecs -> OCI mounts; named volumes get created and filled on first use."""
        out: list[dict[str, Any]] = []
        for m in mounts:
            ro = ["ro"] if m.readonly else []
            if m.type == "bind":
                if not os.path.exists(m.source):
                    raise ConfigError("--volume", f"bind source path does not exist: {m.source}")
                out.append({"destination": m.target, "type": "bind", "source": m.source,
                            "options": ["rbind", "rprivate"] + ro})
            elif m.type == "tmpfs":
                out.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev"] + (m.options or []) + ro})
            else:
                try:
                    v = self.db.get_volume(m.source)
                except NotFound:
                    v = self.create(m.source, anonymous=m.anonymous)
                self._populate(v, rootfs, m.target)
                out.append({"destination": m.target, "type": "bind", "source": v.mountpoint,
                            "options": ["rbind", "rprivate"] + ro})
        return out

    def _populate(self, v: VolumeRecord, rootfs: str, target: str) -> None:
        if v.populated:
            return
        src = safe_join(rootfs, target)
        if os.listdir(v.mountpoint):  # not empty: it has content already; never overwrite
            self.db.set_volume_populated(v.name)
            return
        if not self.db.set_volume_populated(v.name):
            return
        if os.path.isdir(src) and os.listdir(src):
            from isle.sys import proc

            proc.run(["cp", "-a", "--", src + "/.", v.mountpoint + "/"], timeout=600)
        if os.path.isdir(src):
            st = os.stat(src)
            os.chown(v.mountpoint, st.st_uid, st.st_gid)
            os.chmod(v.mountpoint, st.st_mode & 0o7777)
