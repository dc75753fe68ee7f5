"""Overlay whiteouts and opaque directories, in both forms (root's char device 0/0 and
``trusted.overlay.opaque``; without root, the ``user.overlay.*`` xattrs), and entry names."""

from __future__ import annotations

import os
import stat

__all__ = ["OPAQUE_XATTR", "USER_OPAQUE_XATTR", "USER_WHITEOUT_XATTR", "WH_PREFIX", "WH_OPAQUE",
           "is_whiteout", "is_opaque", "clean_name", "xattr", "xattr_names"]

OPAQUE_XATTR = "trusted.overlay.opaque"
# without root (no CAP_MKNOD / trusted.*): overlayfs's userxattr forms (Linux >= 6.7)
USER_OPAQUE_XATTR = "user.overlay.opaque"
USER_WHITEOUT_XATTR = "user.overlay.whiteout"
WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


def clean_name(name: str) -> list[str] | None:
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            return None
        parts.append(p)
    return parts


def is_whiteout(st: os.stat_result, path: str | None = None) -> bool:
    """An overlay whiteout: char device 0/0, or (rootless) an empty file marked by xattr."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return (
        path is not None
        and stat.S_ISREG(st.st_mode)
        and st.st_size == 0
        and xattr(path, USER_WHITEOUT_XATTR) is not None
    )


def is_opaque(path: str) -> bool:
    return xattr(path, OPAQUE_XATTR) == b"y" or xattr(path, USER_OPAQUE_XATTR) == b"y"


def xattr_names(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
