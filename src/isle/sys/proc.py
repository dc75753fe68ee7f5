"""The one door to external programs: argv lists only, never a shell; and the one list of the
programs isle runs (names found on PATH, or the fixed paths Debian installs them at).

    >>> run(["true"], timeout=5).returncode
    0

``subprocess`` is imported on first use: start paths may name a program without paying for it.
"""

from __future__ import annotations

import os

from isle.errors import CommandError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence

__all__ = ["run", "spawn", "which", "IP", "NFT", "UNSHARE", "MOUNT", "UMOUNT", "SLIRP4NETNS",
           "NETAVARK", "AARDVARK", "QEMU_SYSTEM", "QEMU_IMG", "MKFS_EXT4", "DEBUGFS", "BUSYBOX",
           "CONMON", "PIPE", "STDOUT", "DEVNULL", "wait"]

IP = "ip"
NFT = "nft"
UNSHARE = "unshare"
MOUNT = "mount"
UMOUNT = "umount"
SLIRP4NETNS = "slirp4netns"
NETAVARK = "/usr/lib/podman/netavark"  # Debian's podman package; not on PATH
AARDVARK = "/usr/lib/podman/aardvark-dns"
QEMU_SYSTEM = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
MKFS_EXT4 = "mkfs.ext4"
DEBUGFS = "debugfs"
BUSYBOX = "busybox"
CONMON = "conmon"

#: subprocess's stdio choices (its own values), for spawn() without importing subprocess
PIPE, STDOUT, DEVNULL = -1, -2, -3


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = 60,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv to completion; raise CommandError (argv, rc, stderr) if it fails and check."""
    import subprocess

    argv = _resolved(argv)
    try:
        cp = subprocess.run(
            argv,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, f"timed out after {timeout}s") from exc
    if check and cp.returncode != 0:
        err = (cp.stderr or b"").decode(errors="replace")
        raise CommandError(argv, cp.returncode, err)
    return cp


def spawn(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start argv in the background (no shell); the caller owns the process."""
    import subprocess

    argv = _resolved(argv)
    try:
        return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload,no-any-return]
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc


def wait(p: subprocess.Popen[bytes], timeout: float) -> int | None:
    """p's exit status, or None if it is still running after timeout seconds."""
    import subprocess

    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


#: where Debian installs administration tools (mkfs.ext4, debugfs, ...): on root's PATH, not on
#: an ordinary user's, whom rootless isle runs as
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    """name on PATH, else in the sbin directories; None if neither has it."""
    import shutil

    found = shutil.which(name)
    if found or "/" in name:
        return found
    return _in_sbin(name)


def _in_sbin(name: str) -> str | None:
    for d in SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def _resolved(argv: Sequence[str]) -> list[str]:
    """argv as strings, a bare program name not on PATH looked up in the sbin directories (a
    name on PATH stays bare: exec looks it up, in env's PATH when one is given; a name found
    nowhere stays as it is: running it fails with "not found")."""
    out = [os.fspath(a) for a in argv]
    if out and "/" not in out[0]:
        import shutil  # ~1.8 ms if new; `isle run` has it (bridge) or names no bare program

        if shutil.which(out[0]) is None:
            out[0] = _in_sbin(out[0]) or out[0]
    return out
