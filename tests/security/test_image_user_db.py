"""An image's /etc/passwd and /etc/group are the image's to plant: the start path (engine/bundle)
reads them inside the container's root, regular files only. A FIFO there must not hang
`isle run`; a symlink to the host's user db must not make the host's users the image's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def _image(isle, tmp_path: Path, busybox_rootfs: str, name: str, plant) -> str:
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "etc").mkdir(exist_ok=True)
    plant(rootfs / "etc")
    tar = tmp_path / "img.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    isle("import", str(tar), f"{name}:latest")
    return f"{name}:latest"


def test_fifo_passwd_does_not_hang_the_start(isle, tmp_path, busybox_rootfs):
    def plant(etc: Path) -> None:
        for n in ("passwd", "group"):
            if (etc / n).exists() or (etc / n).is_symlink():
                (etc / n).unlink()
            os.mkfifo(etc / n)

    img = _image(isle, tmp_path, busybox_rootfs, "fifodb", plant)
    cp = isle("run", "--rm", "--network", "none", img, "echo", "started", timeout=30)
    assert cp.stdout == "started\n", cp.stderr
    cp = isle("run", "--rm", "--network", "none", "--user", "1000:1000", img, "grep", "^Uid:",
              "/proc/self/status", timeout=30)  # not `id`: it would read the FIFO itself
    assert cp.stdout.split()[1:] == ["1000"] * 4, cp.stderr


@pytest.mark.parametrize("form", ["abs", "rel"])
def test_passwd_linked_to_the_host_is_not_read(isle, tmp_path, busybox_rootfs, form):
    host = tmp_path / "hostdb"
    host.mkdir()
    (host / "passwd").write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    (host / "group").write_text("hostgrp:x:4343:\n")

    def plant(etc: Path) -> None:
        for n in ("passwd", "group"):
            if (etc / n).exists() or (etc / n).is_symlink():
                (etc / n).unlink()
            target = str(host / n)
            if form == "rel":
                target = "../" * (len(etc.parts) + 3) + target.lstrip("/")
            (etc / n).symlink_to(target)

    img = _image(isle, tmp_path, busybox_rootfs, "linkdb", plant)
    cp = isle("run", "--rm", "--network", "none", "--user", "hostonly", img, "id", "-u",
              check=False, timeout=30)
    assert cp.returncode != 0 and "4242" not in cp.stdout, (cp.stdout, cp.stderr)
    cp = isle("run", "--rm", "--network", "none", "--user", "0:hostgrp", img, "id", "-g",
              check=False, timeout=30)
    assert cp.returncode != 0 and "4343" not in cp.stdout, (cp.stdout, cp.stderr)
