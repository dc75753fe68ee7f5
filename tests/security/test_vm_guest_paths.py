"""isle-exec, the guest's helper, makes devices, masks and mounts in the container's root as the
guest's root before the container starts: every such path resolves inside that root (the
image's symlinks followed within it, '..' stopping at it), never beside or above it. Run here on
the host, chrooting like a guest without -N, so that a way out would land in this test's
directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def isle_exec(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build isle-exec")
    from isle.vm.initramfs import exec_helper

    return exec_helper(str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("link", ["../outside", "/devices"], ids=["dotdot", "absolute"])
def test_devices_are_made_inside_the_root_whatever_dev_links_to(
        tmp_path: Path, busybox_rootfs: str, isle_exec: str, link: str) -> None:
    root = tmp_path / "root"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    shutil.rmtree(root / "dev", ignore_errors=True)
    if (root / "dev").is_symlink():
        (root / "dev").unlink()
    os.symlink(link, root / "dev")  # the image's /dev leads out of its root
    (tmp_path / "outside").mkdir()
    cp = subprocess.run([isle_exec, "-r", str(root), "-d", "-M", "/dev/secret", "--",
                         "/bin/sh", "-c", "ls /dev/ >/dev/null; echo ok"],
                        capture_output=True, text=True, timeout=30)
    assert (cp.returncode, cp.stdout) == (0, "ok\n"), cp.stderr
    assert os.listdir(tmp_path / "outside") == []  # nothing beside the root
    inside = root / link.lstrip("./").lstrip("/")
    assert (inside / "null").exists() and (inside / "null").is_char_device()
