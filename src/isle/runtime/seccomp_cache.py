"""The compiled-seccomp-filter cache, light enough for every container start.

``isle.runtime.seccomp`` (validation, libseccomp) imports json, re and typing: ~20 ms. A cache
hit needs none of that: one canonical encoding of the section (CPython's C encoder, the same
bytes ``json.dumps(sort_keys=True, separators=(",", ":"))`` gives), one sha256, one file read::

    prog = lookup(section)            # bytes, or None: compile with seccomp.compile_filter
    if not install_simple(prog, section):
        seccomp.install_filter(prog, flags=seccomp.filter_flags(section))
"""

from __future__ import annotations

import os
import sys

try:  # the builtin module imports in ~1 ms; hashlib (OpenSSL) in ~7 ms
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python >= 3.12 renamed it
    from hashlib import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["cache_path", "read_cached", "lookup", "install_simple", "default_cache_dir",
           "lib_path", "lib_identity", "CACHE_FORMAT", "MAGIC"]

CACHE_FORMAT = b"isle-seccomp-cache-2"
MAGIC = b"ISLEBPF1"


def _canonical(obj: Any) -> str:
    try:
        import _json
    except ImportError:  # pragma: no cover - other Pythons
        import json

        return json.dumps(obj, sort_keys=True, separators=(",", ":"))
    enc = _json.make_encoder({}, None, _json.encode_basestring_ascii,  # type: ignore[arg-type]
                             None, ":", ",", True, False, True)
    return "".join(enc(obj, 0))


def lib_path() -> str | None:
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for d in (f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/lib64", "/usr/lib",
              "/lib", "/usr/local/lib"):
        p = os.path.join(d, "libseccomp.so.2")
        if os.path.exists(p):
            return p
    return None


def lib_identity() -> bytes:
    """Which libseccomp would compile: resolved file name, size and mtime (no dlopen)."""
    p = lib_path()
    if p is None:
        return b"none"
    st = os.stat(p)
    return f"{os.path.realpath(p)}:{st.st_size}:{st.st_mtime_ns}".encode()


def default_cache_dir() -> str:
    """$ISLE_SECCOMP_CACHE, else <isle cache>/seccomp (same rules as isle.config's cache)."""
    if v := os.environ.get("ISLE_SECCOMP_CACHE"):
        return v
    if v := os.environ.get("ISLE_CACHE"):
        return os.path.join(v, "seccomp")
    if os.geteuid() != 0:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        if xdg.startswith("/"):
            return os.path.join(xdg, "isle", "seccomp")
        return os.path.join(os.path.expanduser("~"), ".cache", "isle", "seccomp")
    return "/var/cache/isle/seccomp"


def cache_path(seccomp: dict[str, Any], *, cache_dir: str | None = None,
               unknown_names: str = "error") -> str:
    """Where the compiled program for this section lives: sha256 of the canonical JSON, the
    machine arch, the libseccomp build and isle's translation version."""
    d = cache_dir or default_cache_dir()
    h = sha256(CACHE_FORMAT)
    h.update(_canonical(seccomp).encode())
    h.update(b"\0" + os.uname().machine.encode() + b"\0" + lib_identity())
    h.update(b"\0" + unknown_names.encode())
    return os.path.join(d, h.hexdigest() + ".bpf")


def read_cached(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None  # a filter others could have written is not trusted: rebuilt
            data = f.read()
    except OSError:
        return None
    head, digest, prog = data[:8], data[8:40], data[40:]
    if head != MAGIC or not prog or len(prog) % 8 or sha256(prog).digest() != digest:
        return None  # corrupt or foreign: rebuilt and overwritten
    return prog


def lookup(seccomp: dict[str, Any]) -> bytes | None:
    """The cached program for this section (as compile_filter with defaults would give), or None."""
    try:
        return read_cached(cache_path(seccomp))
    except (TypeError, ValueError):  # not JSON-encodable: the full path reports the field
        return None


def install_simple(prog: bytes, seccomp: dict[str, Any]) -> bool:
    """Load prog with seccomp(2) flags 0 if the section asks for no flags and no notify listener
    (what filter_flags would give then); False (nothing done) otherwise."""
    if seccomp.get("flags") or seccomp.get("listenerPath"):
        return False
    calls = seccomp.get("syscalls") or []
    if not isinstance(calls, list) or any(
            not isinstance(s, dict) or s.get("action") == "SCMP_ACT_NOTIFY" for s in calls):
        return False
    from isle.sys.seccomp_lib import seccomp_set_mode_filter

    seccomp_set_mode_filter(prog, 0)
    return True
