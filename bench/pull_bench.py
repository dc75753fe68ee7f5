"""isle pull vs skopeo copy (to a dir) vs podman pull, from a local docker-registry; interleaved.

    .venv/bin/python bench/pull_bench.py [--rounds 5] [--out bench/results]

The image: busybox + two layers of many small files + two large layers (>= 100 MB unpacked),
pushed by isle to a private registry on 127.0.0.1. Each round pulls into fresh storage with
isle, skopeo and podman in turn. Reports medians, per-round ratios (isle / peer), isle's unpack
throughput from stored blobs (MB/s, one layer at a time in-process, and all layers by the pull's
workers), a breakdown of one isle pull (blobs fetched + verified only, vs. unpack from the stored
blobs), and `isle images` wall time with 200 images. Each round also times the floor for
unpacking here: GNU tar extracting the same layer blobs from local files, all layers at once.

Nothing pulled is deleted until every round is done. This root fs is ext4 without a journal, and
there ext4's inode allocator skips (one by one, reading each inode-table block) every inode freed in
the last 60 s (360 s while its table block is dirty): after an rm -rf of ~6000 files each new file in
that block group costs ~300 us instead of ~30 us (perf: find_inode_bit -> recently_deleted). So
deleting one tool's tree inside the timed loop taxed whichever tool ran next by seconds.
Needs root, docker-registry, skopeo, podman (private storage via bench/peers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from peers import podman_prefix  # noqa: E402  (bench/ is on sys.path when run as a script)
ISLE = [str(REPO / ".venv" / "bin" / "python"), "-m", "isle.cli.images"]


def start_registry(d: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
        f"  filesystem:\n    rootdirectory: {d / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    p = subprocess.Popen(
        ["docker-registry", "serve", str(d / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import httpx

    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return p, f"127.0.0.1:{port}"
        except httpx.TransportError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("docker-registry did not start")


def make_image(d: Path, ref: str) -> dict[str, Any]:
    """busybox + 2 small-file layers + 2 large layers; pushed to ref. Returns sizes."""
    from isle.image.push import push
    from isle.image.registry import RegistryClient
    from isle.image.store import ImageStore

    store = ImageStore(str(d / "images"))
    img = store.resolve("busybox")
    rnd = os.urandom(1 << 20)
    for i in range(4):
        u = d / f"u{i}"
        if i < 2:  # ~6000 small files, half-compressible
            for j in range(3000):
                p = u / f"usr/share/data{i}/{j % 50}/f{j}.txt"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(
                    (b"line %d of some text\n" % j) * 100 + rnd[j * 64 : (j + 1) * 64 + 2000]
                )
        else:  # one 40 MB file: half random, half text
            (u / "opt").mkdir(parents=True, exist_ok=True)
            with open(u / "opt" / f"big{i}.bin", "wb") as f:
                for k in range(40):
                    f.write(os.urandom(1 << 20) if k % 2 else (b"%08d\n" % k) * (1 << 17))
        img = store.commit(str(u), img, {}, names=["bench:1"], created_by=f"bench layer {i}")
        # u stays until the end: an rm -rf here would tax the first pulls (see top)
    with RegistryClient(ref.split("/")[0], tls_verify=False) as c:
        push(store, img, ref, c)
    return {
        "layers": len(img.layer_dirs),
        "unpacked_bytes": img.size,
        "compressed_bytes": sum(x.size for x in img.manifest.layers),
    }


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    cp = subprocess.run(argv, capture_output=True, env=env)
    dt = time.perf_counter() - t
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {cp.returncode}: {cp.stderr.decode()[-800:]}")
    return dt


def untar_all(images: Path, dest: Path) -> float:
    """The floor for unpacking here: GNU tar (-z: gzip in its own process) extracting every layer
    blob from local files, all layers at once, each into its own directory; no network, no
    digests. Seconds."""
    from isle.image.layers import spread_subdirs
    from isle.image.store import ImageStore

    spread_subdirs(str(dest))  # the placement isle's own tmp/ gets
    src = ImageStore(str(images))
    blobs = [src.blobs.path(x.digest) for x in src.resolve("bench:1").manifest.layers]
    for j in range(len(blobs)):
        (dest / str(j)).mkdir()
    t = time.perf_counter()
    procs = [
        subprocess.Popen(["tar", "-xzf", b, "-C", str(dest / str(j))]) for j, b in enumerate(blobs)
    ]
    if any(p.wait() for p in procs):
        raise RuntimeError("tar failed")
    return time.perf_counter() - t


def drop_caches() -> None:
    subprocess.run(["sync"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--images", type=int, default=200)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pullb", dir="/tmp"))
    reg, addr = start_registry(work)
    samples: dict[str, list[float]] = {"isle": [], "skopeo": [], "podman": [], "gnu-tar": []}
    out: dict[str, Any] = {
        "host": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        }
    }
    try:
        ref = f"{addr}/bench/img:1"
        out["image"] = make_image(work / "src", ref)
        print(f"image: {out['image']}", file=sys.stderr)
        for r in range(a.rounds):
            order = ["isle", "skopeo", "gnu-tar", "podman"]
            order = order if r % 2 == 0 else order[::-1]
            for tool in order:
                d = work / f"{tool}-{r}"
                d.mkdir()
                drop_caches()
                if tool == "isle":
                    dt = timed([*ISLE, "--root", str(d), "pull", ref, "--tls-verify=false", "-q"])
                elif tool == "gnu-tar":
                    dt = untar_all(work / "src" / "images", d)
                elif tool == "skopeo":
                    dt = timed(
                        [
                            "skopeo",
                            "copy",
                            "-q",
                            "--src-tls-verify=false",
                            f"docker://{ref}",
                            f"dir:{d / 'dir'}",
                        ]
                    )
                else:
                    pfx = podman_prefix(d)
                    dt = timed([*pfx, "pull", "-q", "--tls-verify=false", ref])
                    subprocess.run([*pfx, "system", "reset", "-f"], capture_output=True)
                samples[tool].append(dt)
                print(f"round {r} {tool}: {dt:.2f}s", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in samples.items()}
        out["pull_seconds"] = samples
        out["pull_median_s"] = med
        out["ratio_isle_over"] = {
            p: statistics.median(i / s for i, s in zip(samples["isle"], samples[p], strict=True))
            for p in ("skopeo", "podman", "gnu-tar")
        }
        out["isle_breakdown_s"] = breakdown(work, ref)
        out["unpack_MBps"] = unpack_throughput(work)
        out["images_listing_s"] = images_listing(work, a.images)
    finally:
        reg.send_signal(signal.SIGTERM)
        reg.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(a.out, exist_ok=True)
    Path(a.out, "pull.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "pull_seconds"}, indent=1))


def breakdown(work: Path, ref: str) -> dict[str, float]:
    """One pull split in two: all layer blobs fetched and verified in parallel (what skopeo's
    copy to dir: does), then every layer unpacked from those stored blobs in parallel, by the
    pull's worker processes."""
    from concurrent.futures import ThreadPoolExecutor

    from isle.image.fetch import fetch_layers
    from isle.image.pull import NullProgress
    from isle.image.reference import Reference
    from isle.image.registry import RegistryClient
    from isle.image.store import ImageStore
    from isle.oci.image_spec import Manifest, parse_manifest_or_index

    r = Reference.parse(ref)
    store = ImageStore(str(work / "breakdown" / "images"))
    drop_caches()  # as before each timed pull: no dirty pages from earlier rounds
    with RegistryClient(r.registry, tls_verify=False) as c:
        t0 = time.perf_counter()
        body, mt, _ = c.get_manifest(r.repository, r.tag)
        m = parse_manifest_or_index(body, mt)
        assert isinstance(m, Manifest)
        config = json.loads(c.get_blob(r.repository, m.config.digest))

        def fetch(lay: Any) -> None:
            with store.blobs.writer(lay.digest, lay.size) as w:
                resp = c.blob_stream(r.repository, lay.digest)
                try:
                    for b in resp.iter_raw(1 << 20):
                        w.write(b)
                finally:
                    resp.close()
                w.commit()

        with ThreadPoolExecutor(4) as ex:
            list(ex.map(fetch, m.layers))
        t1 = time.perf_counter()
        # the pull's own workers (one process per layer), finding the blobs already stored
        todo = list(zip(m.layers, config["rootfs"]["diff_ids"], strict=True))
        fetch_layers(store, c, r.repository, todo, NullProgress(), 4)
        t2 = time.perf_counter()
    size = sum(store.layer_size(d) for d in config["rootfs"]["diff_ids"])
    return {
        "fetch_verify_blobs": round(t1 - t0, 3),
        "unpack_from_blobs": round(t2 - t1, 3),
        "unpack_from_blobs_MBps": round(size / (t2 - t1) / 1e6, 1),
    }


def unpack_throughput(work: Path) -> dict[str, float]:
    """Unpack each stored layer blob again (no network) into a fresh store: MB/s per layer."""
    from isle.image.store import ImageStore

    src = ImageStore(str(work / "src" / "images"))
    store = ImageStore(str(work / "unpack" / "images"))  # fresh: no rm -rf before (see top)
    img = src.resolve("bench:1")
    total_b = total_t = 0.0
    per = {}
    for i, (lay, did) in enumerate(zip(img.manifest.layers, img.diff_ids, strict=True)):
        os.link(src.blobs.path(lay.digest), store.blobs.path(lay.digest))
        drop_caches()
        t = time.perf_counter()
        store.unpack_blob(lay, did)
        dt = time.perf_counter() - t
        size = store.layer_size(did)
        per[f"layer{i}"] = round(size / dt / 1e6, 1)
        total_b += size
        total_t += dt
    per["all"] = round(total_b / total_t / 1e6, 1)
    return per


def images_listing(work: Path, n: int) -> dict[str, float]:
    from isle.image.store import ImageStore

    root = work / "many"
    store = ImageStore(str(root / "images"))
    base = store.resolve("busybox")
    for i in range(n - 1):
        store.commit(
            "", base, {"Labels": {"n": str(i)}}, names=[f"many/img{i}:1"], empty_layer=True
        )
    ts = [timed([*ISLE, "--root", str(root), "images"]) for _ in range(5)]
    tq = [timed([*ISLE, "--root", str(root), "images", "-q"]) for _ in range(5)]
    return {
        "images": len(store.list()),
        "table_median_s": round(statistics.median(ts), 3),
        "quiet_median_s": round(statistics.median(tq), 3),
    }


if __name__ == "__main__":
    main()
