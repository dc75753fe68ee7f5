"""Pull workers (one process per layer): they run side by side, and a failure stops them all."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from isle.errors import ImageError
from isle.image.pull import NullProgress, pull
from isle.image.push import push
from isle.image.registry import RegistryClient
from isle.image.store import ImageStore

pytestmark = [pytest.mark.registry, pytest.mark.root]


@pytest.fixture(scope="module")
def three_layers(registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox + two 8 MB incompressible layers (each takes a worker a while)."""
    d = tmp_path_factory.mktemp("three")
    store = ImageStore(str(d / "images"))
    img = store.resolve("busybox")
    for i in range(2):
        u = d / f"u{i}"
        u.mkdir()
        (u / f"blob{i}").write_bytes(os.urandom(8 << 20))
        img = store.commit(str(u), img, {}, names=["three:1"])
    ref = f"{registry.addr}/workers/three:1"
    with RegistryClient(registry.addr, tls_verify=False) as c:
        push(store, img, ref, c)
    return ref


class _Watch(NullProgress):
    """Records how many worker processes were alive when the first bytes arrived; can kill one."""

    def __init__(self, kill: bool = False) -> None:
        self.kill, self.workers = kill, -1

    def advance(self, key: str, n: int) -> None:
        if self.workers < 0:
            kids = _workers()
            self.workers = len(kids)
            if self.kill:
                os.kill(min(k.pid for k in kids), signal.SIGKILL)  # the biggest layer's


def _workers() -> list[psutil.Process]:
    """Our forked children (not the registry the fixture started)."""
    me = psutil.Process()
    return [k for k in me.children() if k.exe() == me.exe()]


def _tmp(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.blobs.tmp_dir))


def test_layers_are_fetched_by_parallel_workers(three_layers: str, tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path / "s"))
    watch = _Watch()
    with RegistryClient(three_layers.split("/")[0], tls_verify=False) as c:
        img = pull(store, three_layers, c, progress=watch)
    assert watch.workers == 3  # every layer had its worker at once (jobs=4)
    assert (Path(img.layer_dirs[2]) / "blob1").stat().st_size == 8 << 20
    assert _workers() == [] and _tmp(store) == []


def test_a_dead_worker_fails_the_pull_and_stops_the_others(
    three_layers: str, tmp_path: Path
) -> None:
    store = ImageStore(str(tmp_path / "s"))
    with (
        RegistryClient(three_layers.split("/")[0], tls_verify=False) as c,
        pytest.raises(ImageError, match="unpack worker died \\(killed by SIGKILL\\)"),
    ):
        pull(store, three_layers, c, progress=_Watch(kill=True))
    assert _workers() == []  # the other workers were stopped and reaped
    assert _tmp(store) == []  # and their half-written blobs and layer dirs removed
    assert store.list() == [] and os.listdir(store.layers_dir) == []
