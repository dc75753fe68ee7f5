"""Where isle keeps things: one Settings object, overridable by flags and environment.

    root     /var/lib/isle   images, volumes, the engine database     (ISLE_ROOT, --root)
    runroot  /run/isle       runtime state, sockets, monitor files     (ISLE_RUNROOT, --runroot)
    cache    /var/cache/isle guest kernels, compiled seccomp filters    (ISLE_CACHE)

Rootless (euid != 0): ~/.local/share/isle, $XDG_RUNTIME_DIR/isle (or /tmp/isle-<uid>), ~/.cache/isle.
"""

from __future__ import annotations

import os

from isle.record import field, record  # not dataclasses: ~10 ms of every CLI start

__all__ = ["Settings", "default_settings"]


def _rootless() -> bool:
    return os.geteuid() != 0


def _default_root() -> str:
    if v := os.environ.get("ISLE_ROOT"):
        return v
    if _rootless():
        return os.path.join(os.path.expanduser("~"), ".local", "share", "isle")
    return "/var/lib/isle"


def _default_runroot() -> str:
    if v := os.environ.get("ISLE_RUNROOT"):
        return v
    if _rootless():
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        return os.path.join(xdg, "isle") if xdg else f"/tmp/isle-{os.geteuid()}"
    return "/run/isle"


def _default_cache() -> str:
    if v := os.environ.get("ISLE_CACHE"):
        return v
    if _rootless():
        return os.path.join(os.path.expanduser("~"), ".cache", "isle")
    return "/var/cache/isle"


@record
class Settings:
    """Where isle keeps its state and which runtime it uses."""
    root: str = field(default_factory=_default_root)
    runroot: str = field(default_factory=_default_runroot)
    cache: str = field(default_factory=_default_cache)
    #: OCI runtime the engine drives for --isolation container (a name on PATH or a path)
    runtime: str = field(default_factory=lambda: os.environ.get("ISLE_RUNTIME", "isle-runtime"))
    rootless: bool = field(default_factory=_rootless)

    @property
    def images_dir(self) -> str:
        return os.path.join(self.root, "images")

    @property
    def volumes_dir(self) -> str:
        return os.path.join(self.root, "volumes")

    @property
    def containers_dir(self) -> str:
        return os.path.join(self.root, "containers")

    @property
    def db_path(self) -> str:
        return os.path.join(self.root, "isle.db")

    @property
    def runtime_root(self) -> str:
        """--root handed to the OCI runtime."""
        return os.path.join(self.runroot, "runtime")


def default_settings() -> Settings:
    return Settings()
