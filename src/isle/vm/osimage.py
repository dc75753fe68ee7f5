"""Bootable OS trees for whole-OS VMs: debootstrap with systemd, a kernel, cloud-init, sshd and
qemu-guest-agent, set up to boot from a whole-disk ext4 (/dev/vda) with a serial console.

    tree = build("debian", "bookworm", cache, mirror, progress=print)
    # -> <cache>/os-images/<key>/rootfs

The tree is cached by content (distribution, suite, mirror, package list, recipe version): a second
bootstrap (another isle root, the next CI job) reuses it instead of downloading again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable

from isle.errors import ConfigError, ImageError
from isle.sys.fs import flock

__all__ = ["SUITES", "PACKAGES", "build", "kernel_files", "CMDLINE"]

#: suites known to boot this way (Debian 12 and 13)
SUITES = {"debian": ("bookworm", "trixie")}
PACKAGES = (
    "systemd-sysv", "dbus", "udev", "systemd-resolved", "linux-image-cloud-amd64",
    "initramfs-tools", "cloud-init", "openssh-server", "qemu-guest-agent", "sudo", "iproute2",
    "iputils-ping", "netbase", "procps", "ca-certificates",
    # debootstrap does not resolve virtual packages: python3-cryptography (cloud-init) needs these
    "python3-cffi-backend",
)
#: bump when the recipe below changes what a tree holds (the cache key includes it)
RECIPE = "3"
#: the kernel command line an OS image boots with (its own kernel, direct boot, whole-disk ext4)
CMDLINE = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 panic=-1"

_FILES = {
    "etc/fstab": "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
    "etc/hostname": "debian\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    # every NIC asks DHCP (QEMU's user network answers) unless the kernel command line gave it
    # an address (an isle network's lease: systemd-network-generator's 90-<if>.network wins)
    "etc/systemd/network/99-isle-dhcp.network": "[Match]\nName=eth* en*\n\n[Network]\nDHCP=yes\n"
    "\n[DHCPv4]\nUseHostname=no\n",
    # containers' names are single labels: ask the network's DNS server (aardvark) for them too
    "etc/systemd/resolved.conf.d/isle.conf": "[Resolve]\nResolveUnicastSingleLabel=yes\n",
    # NoCloud only (no network probing for metadata services); isle's network setup is networkd's
    "etc/cloud/cloud.cfg.d/90-isle.cfg": "datasource_list: [NoCloud, None]\n"
    "network: {config: disabled}\n",
    # the udev rule starts the agent when its virtio-serial port shows up
    "etc/initramfs-tools/conf.d/isle": "MODULES=most\nCOMPRESS=zstd\n",
}
_ENABLE = {
    "multi-user.target.wants/systemd-networkd.service": "systemd-networkd.service",
    "sockets.target.wants/systemd-networkd.socket": "systemd-networkd.socket",
    "multi-user.target.wants/systemd-resolved.service": "systemd-resolved.service",
    # ip=/nameserver= on the kernel command line -> networkd (an isle network's static lease)
    "sysinit.target.wants/systemd-network-generator.service":
        "systemd-network-generator.service",
}


def _key(dist: str, suite: str, mirror: str) -> str:
    s = "\n".join([RECIPE, dist, suite, mirror, *PACKAGES])
    return f"{dist}-{suite}-{hashlib.sha256(s.encode()).hexdigest()[:12]}"


def _check(dist: str, suite: str) -> None:
    if dist not in SUITES:
        raise ConfigError("--os", f"{dist!r} is not a distribution isle can bootstrap "
                          f"({', '.join(SUITES)})")
    if suite not in SUITES[dist]:
        raise ConfigError("--os", f"{dist}:{suite}: suite not one of {', '.join(SUITES[dist])}")


def build(dist: str, suite: str, cache: str, mirror: str, *,
          progress: Callable[[str], None] = lambda s: None, timeout: float = 3600) -> str:
    """The cached OS tree for dist:suite (made now if missing: minutes); its path."""
    _check(dist, suite)
    d = os.path.join(cache, "os-images", _key(dist, suite, mirror))
    tree = os.path.join(d, "rootfs")
    os.makedirs(d, mode=0o700, exist_ok=True)
    with flock(d + ".lock"):
        if os.path.exists(os.path.join(d, "done")):
            progress(f"using the cached {dist}:{suite} tree {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)
            _debootstrap(suite, tree, mirror, progress, timeout)
            kernel_files(tree)  # fails now, not at boot, when the kernel is missing
            with open(os.path.join(d, "done"), "w") as f:
                f.write(f"{dist}:{suite}\n")
        _configure(tree)  # cheap and idempotent: a cached tree gets today's settings
    return tree


def _debootstrap(suite: str, tree: str, mirror: str, progress: Callable[[str], None],
                 timeout: float) -> None:
    from isle.sys import proc

    argv = ["debootstrap", "--variant=minbase", "--components=main",
            f"--include={','.join(PACKAGES)}", suite, tree, mirror]
    progress(f"debootstrap {suite} from {mirror} ({len(PACKAGES)} packages and their "
             "dependencies; this takes minutes)")
    p = proc.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    tail: list[str] = []
    assert p.stdout is not None
    for raw in p.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = (tail + [line])[-20:]
        # debootstrap's I: lines are the phases (retrieving, validating, unpacking, configuring)
        if line.startswith(("I: Retrieving Release", "I: Resolving", "I: Checking",
                            "I: Found", "I: Extracting", "I: Installing", "I: Unpacking",
                            "I: Configuring", "I: Base system", "E:", "W: Failure")):
            progress(line)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = -1
    _umount_under(tree)  # debootstrap mounts /proc and /sys in the tree; a kill leaves them
    if rc != 0:
        log = os.path.join(tree, "debootstrap", "debootstrap.log")
        extra = ""
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                extra = " | ".join(f.read().splitlines()[-5:])
        shutil.rmtree(tree, ignore_errors=True)
        raise ImageError(f"debootstrap {suite} failed ({rc}): {' | '.join(tail[-5:])} {extra}")


def _umount_under(tree: str) -> None:
    from isle.sys import proc

    real = os.path.realpath(tree)
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f]
    for mp in sorted((m for m in points if m == real or m.startswith(real + "/")),
                     key=len, reverse=True):
        proc.run(["umount", "-l", mp], timeout=30, check=False)


_STALE = ("etc/systemd/network/80-isle.network",)


def _configure(tree: str) -> None:
    for rel in _STALE:
        if os.path.lexists(os.path.join(tree, rel)):
            os.unlink(os.path.join(tree, rel))
    for rel, text in _FILES.items():
        p = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    units = os.path.join(tree, "etc/systemd/system")
    for rel, unit in _ENABLE.items():
        link = os.path.join(units, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(f"/lib/systemd/system/{unit}", link)
    # per-VM identity: systemd makes a machine-id, cloud-init new SSH host keys
    with open(os.path.join(tree, "etc/machine-id"), "w"):
        pass
    for p in ("var/lib/dbus/machine-id",):
        if os.path.lexists(os.path.join(tree, p)):
            os.unlink(os.path.join(tree, p))
    sshd = os.path.join(tree, "etc/ssh")
    for n in os.listdir(sshd) if os.path.isdir(sshd) else ():
        if n.startswith("ssh_host_"):
            os.unlink(os.path.join(sshd, n))
    for p in ("var/cache/apt/archives", "var/lib/apt/lists"):
        full = os.path.join(tree, p)
        for e in os.listdir(full) if os.path.isdir(full) else ():
            if os.path.isfile(os.path.join(full, e)):
                os.unlink(os.path.join(full, e))


def kernel_files(tree: str) -> tuple[str, str]:
    """(vmlinuz, initrd) of the newest kernel in tree's /boot; ImageError when there is none."""
    boot = os.path.join(tree, "boot")
    kernels = sorted(n for n in os.listdir(boot) if n.startswith("vmlinuz-")) \
        if os.path.isdir(boot) else []
    for k in reversed(kernels):
        initrd = os.path.join(boot, "initrd.img-" + k.removeprefix("vmlinuz-"))
        if os.path.exists(initrd):
            return os.path.join(boot, k), initrd
    raise ImageError(f"{tree} has no kernel with an initramfs in /boot: it is not an OS image")
