"""`isle image bootstrap debian:bookworm`: a real Debian base image from debootstrap (minutes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from isle.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.mark.timeout(1800)
def test_bootstrap_debian_minbase(tmp_path: Path, isle_at) -> None:
    root = tmp_path / "r"
    cp = isle_at(root, "image", "bootstrap", "debian:bookworm", "--variant", "minbase", timeout=1700)
    store = ImageStore(str(root / "images"))
    img = store.resolve("debian:bookworm")
    assert cp.stdout.decode().strip() == img.id
    assert img.config["config"]["Cmd"] == ["bash"] and img.size > 50_000_000
    work = tmp_path / "w"
    rootfs = store.mount_rootfs(img, str(work))
    try:
        out = subprocess.run(
            [
                "chroot",
                rootfs,
                "/bin/sh",
                "-c",
                "cat /etc/debian_version; dpkg-query -W -f='${Package}\\n' apt bash;"
                " ls /var/cache/apt/archives",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        store.unmount_rootfs(str(work))
    assert out[0].startswith("12.") and out[1:3] == ["apt", "bash"]
    assert out[3:] == ["partial"]  # no .debs kept
    bad = isle_at(
        root,
        "image",
        "bootstrap",
        "debian:nosuchsuite",
        "--mirror",
        "http://127.0.0.1:9/debian",
        check=False,
        timeout=600,
    )
    assert bad.returncode != 0 and b"debootstrap" in bad.stderr
    assert [i.names for i in store.list()] == [["docker.io/library/debian:bookworm"]]
