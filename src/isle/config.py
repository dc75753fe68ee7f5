"""Where isle keeps things: one Settings object, overridable by flags and environment.

    root     /var/lib/isle   images, volumes, the engine database     (ISLE_ROOT, --root)
    runroot  /run/isle       runtime state, sockets, monitor files     (ISLE_RUNROOT, --runroot)
    cache    /var/cache/isle guest kernels, compiled seccomp filters    (ISLE_CACHE)

Rootless (euid != 0): $XDG_DATA_HOME/isle (~/.local/share/isle), $XDG_RUNTIME_DIR/isle and
$XDG_CACHE_HOME/isle (~/.cache/isle). $XDG_RUNTIME_DIR counts only if it is a directory of the
caller's that nobody else can write (else /tmp/isle-<uid>, made 0700 and used only if it is the
caller's own private directory: another user may have made it first; else <data>/isle/run).
"""

from __future__ import annotations

import os

from isle.record import field, record  # not dataclasses: ~10 ms of every CLI start

__all__ = ["Settings", "default_settings"]


def _rootless() -> bool:
    return os.geteuid() != 0


def _xdg(var: str, *fallback: str) -> str:
    """$var/isle if $var is an absolute path (the XDG rule: relative values are ignored),
    else ~/<fallback>/isle."""
    v = os.environ.get(var, "")
    if v.startswith("/"):
        return os.path.join(v, "isle")
    return os.path.join(os.path.expanduser("~"), *fallback, "isle")


def _private_dir(path: str, make: bool = False) -> bool:
    """path is a real directory (no symlink) of this user's that nobody else can write into."""
    if make:
        try:
            os.mkdir(path, 0o700)
        except OSError:
            pass
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000 == 0o040000 and st.st_uid == os.geteuid()
            and not st.st_mode & 0o022)


def _default_root() -> str:
    if v := os.environ.get("ISLE_ROOT"):
        return v
    if _rootless():
        return _xdg("XDG_DATA_HOME", ".local", "share")
    return "/var/lib/isle"


def _default_runroot() -> str:
    if v := os.environ.get("ISLE_RUNROOT"):
        return v
    if _rootless():
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        if xdg.startswith("/") and _private_dir(xdg):
            return os.path.join(xdg, "isle")
        tmp = f"/tmp/isle-{os.geteuid()}"  # a name anyone can take first: checked, not trusted
        if _private_dir(tmp, make=True):
            return tmp
        return os.path.join(_default_root(), "run")
    return "/run/isle"


def _default_cache() -> str:
    if v := os.environ.get("ISLE_CACHE"):
        return v
    if _rootless():
        return _xdg("XDG_CACHE_HOME", ".cache")
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
