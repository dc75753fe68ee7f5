"""Render Docker's seccomp profile (moby/profiles ``seccomp/default.json``) as Docker renders it
into a bundle's ``linux.seccomp``: for Docker's default capabilities, one architecture and a
kernel version, evaluating each entry's ``includes``/``excludes`` (arches, caps, minKernel).
Names the installed libseccomp cannot resolve are left out (listed on stderr): isle refuses
unknown names, and its -ENOSYS prologue answers syscalls newer than the profile's newest.

    python render-moby-default.py MOBY_DEFAULT.json > docker-default.json

See README.md here for the version this file was rendered from.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
NATIVE = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}


def _kernel(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("-")[0].split(".")[:2])


def _applies(cond: dict[str, Any], arch: str, caps: set[str], kernel: tuple[int, ...],
             exclude: bool) -> bool:
    """includes: every given condition holds; excludes: any given condition holds."""
    tests: list[bool] = []
    if cond.get("arches"):
        tests.append(arch in cond["arches"])
    if cond.get("caps"):
        tests.append(all(c in caps for c in cond["caps"]) if not exclude
                     else any(c in caps for c in cond["caps"]))
    if cond.get("minKernel"):
        tests.append(kernel >= _kernel(cond["minKernel"]))
    return any(tests) if exclude else all(tests)


def render(profile: dict[str, Any], arch: str, caps: set[str], kernel: tuple[int, ...],
           known: Callable[[str], bool] = lambda n: True) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    for a in profile.get("archMap") or []:
        if a["architecture"] == NATIVE[arch]:
            out["architectures"] = [a["architecture"], *a.get("subArchitectures", [])]
    dropped: list[str] = []
    calls: list[dict[str, Any]] = []
    for c in profile["syscalls"]:
        if c.get("includes") and not _applies(c["includes"], arch, caps, kernel, False):
            continue
        if c.get("excludes") and _applies(c["excludes"], arch, caps, kernel, True):
            continue
        names = [n for n in c["names"] if known(n)]
        dropped += [n for n in c["names"] if not known(n)]
        if not names:
            continue
        call: dict[str, Any] = {"names": names, "action": c["action"]}
        for k in ("errnoRet", "args"):
            if c.get(k) is not None:
                call[k] = c[k]
        calls.append(call)
    out["syscalls"] = calls
    return out, dropped


def main() -> None:
    with open(sys.argv[1]) as f:
        profile = json.load(f)
    arch = GOARCH[os.uname().machine]
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    from isle.runtime.seccomp_cache import lib_path
    from isle.sys.seccomp_lib import NR_SCMP_ERROR, Libseccomp

    path = lib_path()
    if path is None:
        sys.exit("libseccomp is not installed (Debian: libseccomp2)")
    lib = Libseccomp(path)
    out, dropped = render(profile, arch, DEFAULT_CAPS, _kernel(os.uname().release),
                          lambda n: lib.resolve(n) != NR_SCMP_ERROR)
    if dropped:
        print(f"left out (unknown to libseccomp {'.'.join(map(str, lib.version()))}): "
              + " ".join(sorted(set(dropped))), file=sys.stderr)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
