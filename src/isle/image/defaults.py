"""Images made offline: ``busybox:latest`` from Debian's busybox-static, Debian from debootstrap.

busybox is reproducible: fixed mtimes and creation date, so the same busybox binary always
gives the same image id.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from isle.errors import ConfigError, ImageError, NotFound
from isle.image.reference import Reference
from isle.oci.image_spec import one_layer_config
from isle.sys import proc

if TYPE_CHECKING:
    from isle.image.store import Image, ImageStore

__all__ = ["is_default", "ensure", "make_busybox_rootfs", "bootstrap_debian"]

BUSYBOX = "docker.io/library/busybox:latest"
EPOCH = 946684800  # 2000-01-01T00:00:00Z: fixed so the image id is reproducible
EPOCH_ISO = "2000-01-01T00:00:00Z"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def is_default(ref: str) -> bool:
    try:
        return str(Reference.parse(ref)) == BUSYBOX
    except ConfigError:
        return False


def _busybox_binary() -> str:
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(p):
            return p
    raise NotFound(
        "busybox:latest needs Debian's busybox-static (/bin/busybox); "
        "apt-get install busybox-static"
    )


def make_busybox_rootfs(d: str) -> None:
    bb = _busybox_binary()
    applets = proc.run([bb, "--list-full"], timeout=10).stdout.decode().split()
    for sub in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "var/tmp",
        "run",
        "home",
    ):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(os.path.join(d, "tmp"), 0o1777)
    os.chmod(os.path.join(d, "var/tmp"), 0o1777)
    os.chmod(os.path.join(d, "root"), 0o700)
    shutil.copy(bb, os.path.join(d, "bin/busybox"))
    os.chmod(os.path.join(d, "bin/busybox"), 0o755)
    for a in applets:
        if a != "bin/busybox" and not os.path.lexists(os.path.join(d, a)):
            os.makedirs(os.path.dirname(os.path.join(d, a)), exist_ok=True)
            os.symlink("/bin/busybox", os.path.join(d, a))
    for name, text in (
        ("passwd", PASSWD),
        ("group", GROUP),
        ("hostname", "busybox\n"),
        ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    ):
        with open(os.path.join(d, "etc", name), "w") as f:
            f.write(text)
    for top, dirs, files in os.walk(d):
        for n in dirs + files:
            os.utime(os.path.join(top, n), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(d, (EPOCH, EPOCH))


def _image_from_dir(
    store: ImageStore, rootfs: str, name: str, config: dict[str, Any], created: str, created_by: str
) -> Image:
    with store.transaction():
        desc, diff_id = store.write_layer_from_dir(rootfs, overlay_whiteouts=False)
        cfg = one_layer_config(diff_id, created, config, created_by)
        return store.write_image(cfg, [desc], [name])


def ensure(store: ImageStore, ref: str) -> Image:
    """Make busybox:latest if it is still missing (another process may have just made it)."""
    try:
        if store.exists(BUSYBOX):
            return store.resolve(BUSYBOX)
    except NotFound:
        pass
    tmp = tempfile.mkdtemp(prefix="busybox-", dir=store.blobs.tmp_dir)
    try:
        make_busybox_rootfs(tmp)
        return _image_from_dir(
            store,
            tmp,
            BUSYBOX,
            {"Env": [PATH], "Cmd": ["sh"]},
            EPOCH_ISO,
            "isle: busybox-static from the host (Debian)",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bootstrap_debian(
    store: ImageStore,
    ref: str,
    *,
    variant: str = "minbase",
    mirror: str | None = None,
    timeout: float = 1800,
) -> Image:
    """``isle image bootstrap debian:SUITE``: debootstrap with the host's apt mirror."""
    r = Reference.parse(ref)
    suite = r.tag if r.tag and r.tag != "latest" else "bookworm"
    mirror = mirror or host_mirror()
    from isle.image.store import now_iso

    tmp = tempfile.mkdtemp(prefix="debootstrap-", dir=store.blobs.tmp_dir)
    try:
        argv = ["debootstrap", f"--variant={variant}", suite, tmp, mirror]
        proc.run(argv, timeout=timeout)
        for p in ("var/cache/apt/archives", "var/lib/apt/lists"):
            full = os.path.join(tmp, p)
            if os.path.isdir(full):
                for e in os.listdir(full):
                    ep = os.path.join(full, e)
                    if os.path.isfile(ep):
                        os.unlink(ep)
        return _image_from_dir(
            store,
            tmp,
            str(r),
            {"Env": [PATH], "Cmd": ["bash"]},
            now_iso(),
            " ".join(argv[:-2] + [mirror]),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def host_mirror() -> str:
    """The first deb.debian.org-style mirror in the host's apt sources."""
    cands: list[str] = []
    for path in [
        "/etc/apt/sources.list",
        *(
            os.path.join("/etc/apt/sources.list.d", f)
            for f in sorted(os.listdir("/etc/apt/sources.list.d"))
            if os.path.isdir("/etc/apt/sources.list.d")
        ),
    ]:
        try:
            text = open(path).read()
        except OSError:
            continue
        for line in text.splitlines():
            w = line.split()
            if w and w[0] == "deb":
                cands += [x for x in w[1:] if x.startswith("http")][:1]
            if w and w[0] == "URIs:":
                cands += w[1:2]
    for c in cands:
        if "security" not in c:
            return c
    if cands:
        return cands[0]
    raise ImageError("no apt mirror found in the host's apt sources; pass --mirror")

