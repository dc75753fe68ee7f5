"""Pulls that are killed midway or race each other leave exactly one correct image, or none."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from isle.image.push import push
from isle.image.registry import RegistryClient
from isle.image.store import ImageStore

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def big_image(registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox + a 96 MB incompressible layer + a small one, pushed to the registry."""
    d = tmp_path_factory.mktemp("big")
    store = ImageStore(str(d / "images"))
    img = store.resolve("busybox")
    for i, size in enumerate((96 << 20, 1 << 20)):
        u = d / f"u{i}"
        u.mkdir()
        with open(u / f"blob{i}", "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
        img = store.commit(str(u), img, {}, names=["big:1"])
    ref = f"{registry.addr}/faults/big:1"
    with RegistryClient(registry.addr, tls_verify=False) as c:
        push(store, img, ref, c)
    return ref


def _tmp_bytes(root: Path) -> int:
    t = root / "images" / "tmp"
    total = 0
    try:
        for e in os.listdir(t):
            try:
                total += os.lstat(t / e).st_size if (t / e).is_file() else 0
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return total


@pytest.mark.timeout(300)
def test_sigkill_mid_layer_leaves_no_image_and_next_pull_completes(
    big_image: str, tmp_path: Path, isle_argv: list[str]
) -> None:
    ISLE = isle_argv
    root = tmp_path / "r"
    p = subprocess.Popen(
        [*ISLE, "--root", str(root), "pull", big_image, "--tls-verify=false", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while _tmp_bytes(root) < (8 << 20) and p.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    if p.poll() is not None:
        pytest.fail(f"pull finished before it could be killed: {p.stderr.read()[-500:]!r}")
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()
    store = ImageStore(str(root / "images"))
    assert not store.exists(big_image) and store.list() == []
    assert os.listdir(store.layers_dir) == [] or all(
        store.has_layer("sha256:" + h) for h in os.listdir(store.layers_dir)
    )  # only whole layers
    cp = subprocess.run(
        [*ISLE, "--root", str(root), "pull", big_image, "--tls-verify=false", "-q"],
        capture_output=True,
        timeout=240,
    )
    assert cp.returncode == 0, cp.stderr.decode()[-1000:]
    img = store.resolve(big_image)
    for layer in img.manifest.layers:
        b"".join(store.blobs.iter_verified(layer.digest))  # every blob verifies
    assert (Path(img.layer_dirs[1]) / "blob0").stat().st_size == 96 << 20
    store.gc()
    assert os.listdir(store.blobs.tmp_dir) == []  # the killed pull's debris


@pytest.mark.timeout(300)
def test_two_concurrent_pulls_end_with_one_copy(
    big_image: str, tmp_path: Path, isle_argv: list[str]
) -> None:
    ISLE = isle_argv
    root = tmp_path / "r"
    procs = [
        subprocess.Popen(
            [*ISLE, "--root", str(root), "pull", big_image, "--tls-verify=false", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    assert outs[0][0] == outs[1][0]  # same image id
    store = ImageStore(str(root / "images"))
    imgs = store.list()
    assert len(imgs) == 1 and imgs[0].names == [big_image]
    assert sorted(os.listdir(store.layers_dir)) == sorted(d[7:] for d in imgs[0].diff_ids)
    for layer in imgs[0].manifest.layers:
        b"".join(store.blobs.iter_verified(layer.digest))
