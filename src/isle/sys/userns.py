"""Whether this process runs in a user namespace other than the host's (a rootless build's,
engine/buildns.py): root there owns no host privilege, so trusted.* xattrs, mknod of devices
and the host's cgroups are out of reach, and overlayfs needs its userxattr forms."""

from __future__ import annotations

__all__ = ["in_userns"]

_cached: bool | None = None


def in_userns() -> bool:
    """The uid map is not the initial namespace's identity map (runc's RunningInUserNS)."""
    global _cached
    if _cached is None:
        try:
            with open("/proc/self/uid_map", "rb") as f:
                _cached = f.read().split() != [b"0", b"0", b"4294967295"]
        except OSError:
            _cached = False
    return _cached
