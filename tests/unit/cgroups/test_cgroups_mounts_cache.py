"""paths.cgroup_mounts: the host's cgroup mounts, cached in a file while they stay the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from isle.cgroups import paths

pytestmark = pytest.mark.skipif(not paths._read_cgroup_mountinfo(),
                                reason="needs cgroupfs mounted")


def test_cache_gives_what_mountinfo_gives_and_is_reused(tmp_path: Path) -> None:
    cache = tmp_path / "m"
    fresh = paths.cgroup_mounts()
    assert paths.cgroup_mounts(str(cache)) == fresh  # miss: read and written
    assert cache.exists()
    assert paths.cgroup_mounts(str(cache)) == fresh  # hit
    # a hit really comes from the file: a doctored row (same key) is returned as is
    key, *rows = cache.read_text().split("\n")
    cache.write_text(key + "\n" + "\n".join(rows).replace("\t/\t", "\t/doctored\t", 1))
    assert paths.cgroup_mounts(str(cache)) != fresh


def test_stale_or_corrupt_cache_is_reread(tmp_path: Path) -> None:
    cache = tmp_path / "m"
    fresh = paths.cgroup_mounts()
    cache.write_text("0,0;0;nothing\n/sys/fs/cgroup/x\t/\tcgroup\trw,cpu\n")  # wrong devices
    assert paths.cgroup_mounts(str(cache)) == fresh
    cache.write_text("garbage")
    assert paths.cgroup_mounts(str(cache)) == fresh
    assert paths.cgroup_mounts(str(tmp_path / "no" / "dir")) == fresh  # unwritable: no cache


def test_v1_mounts_same_with_and_without_cache(tmp_path: Path) -> None:
    assert paths.v1_mounts("/sys/fs/cgroup", str(tmp_path / "m")) == paths.v1_mounts(
        "/sys/fs/cgroup")
