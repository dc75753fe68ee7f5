"""Where layers unpack: the store's tmp/ carries ext4's top-directory hint (chattr +T)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from isle.image.layers import spread_subdirs
from isle.image.store import ImageStore

pytestmark = pytest.mark.root


def _flags(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, 0x80086601, buf, True)  # FS_IOC_GETFLAGS
        return int.from_bytes(buf[:4], "little")
    finally:
        os.close(fd)


def test_store_tmp_spreads_layer_dirs_over_block_groups(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    if not spread_subdirs(str(probe)):
        pytest.skip("file system without FS_TOPDIR_FL")
    store = ImageStore(str(tmp_path / "images"))
    assert _flags(store.blobs.tmp_dir) & 0x00020000  # FS_TOPDIR_FL
    # idempotent, and other flags are kept
    assert spread_subdirs(store.blobs.tmp_dir) and _flags(store.blobs.tmp_dir) & 0x00020000


def test_spread_subdirs_is_false_where_unsupported(tmp_path: Path) -> None:
    assert spread_subdirs(str(tmp_path / "missing")) is False
    assert spread_subdirs("/proc") is False
