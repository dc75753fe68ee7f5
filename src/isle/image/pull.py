"""``isle pull``: manifest (or index -> platform), config, then layers in parallel, one pass each.

Each layer is downloaded, hashed, stored, decompressed and unpacked as its bytes arrive, by its
own worker process (fetch.py); the blob becomes visible only after its digest and size matched,
the unpacked layer only after its diff_id matched the config, and the image record only after
every layer is in place. A pull killed midway leaves nothing but files in ``tmp/`` (removed by
the next gc).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from isle.errors import ImageError
from isle.image.fetch import fetch_layers
from isle.image.reference import Reference
from isle.image.registry import RegistryClient
from isle.image.store import Image, ImageStore
from isle.oci.image_spec import (
    Index,
    Manifest,
    Platform,
    check_digest,
    parse_manifest_or_index,
)

__all__ = ["pull", "Progress", "NullProgress", "default_platform"]


class Progress(Protocol):
    def start(self, key: str, total: int) -> None: ...
    def advance(self, key: str, n: int) -> None: ...
    def done(self, key: str, status: str) -> None: ...
    def message(self, text: str) -> None: ...


class NullProgress:
    def start(self, key: str, total: int) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def done(self, key: str, status: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def default_platform() -> Platform:
    import os

    m = os.uname().machine
    return Platform(os="linux", architecture={"x86_64": "amd64", "aarch64": "arm64"}.get(m, m))


def pull(
    store: ImageStore,
    ref: str,
    client: RegistryClient,
    *,
    platform: Platform | None = None,
    progress: Progress | None = None,
    jobs: int = 4,
    manifest: tuple[bytes, str, str] | None = None,
) -> Image:
    """ref pulled through client into store; manifest: what client.get_manifest gave for ref
    when the caller fetched it already (`isle vm pull` looks for a disk artifact first)."""
    r = Reference.parse(ref)
    prog = progress or NullProgress()
    from isle.image.blobs import sweep_tmp

    sweep_tmp(store.blobs.tmp_dir)  # what killed pulls left (their writers are gone)
    with store.transaction():
        body, mt, digest = manifest or client.get_manifest(r.repository, r.digest or r.tag)
        top_digest = digest  # the index's digest when the tag names an index
        m = parse_manifest_or_index(body, mt)
        if isinstance(m, Index):
            d = m.select(platform or default_platform())
            prog.message(
                f"{r.familiar}: index -> {d.platform.os}/{d.platform.architecture} "
                f"manifest {d.digest[:19]}"
                if d.platform
                else ""
            )
            body, mt, digest = client.get_manifest(r.repository, d.digest)
            m = parse_manifest_or_index(body, mt)
            if not isinstance(m, Manifest):
                raise ImageError(f"{r}: index entry {d.digest} is itself an index")
        config_bytes = client.get_blob(r.repository, m.config.digest)
        try:
            config: dict[str, Any] = json.loads(config_bytes)
        except ValueError:
            raise ImageError(f"config {m.config.digest}: not JSON") from None
        diff_ids = config.get("rootfs", {}).get("diff_ids")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(m.layers):
            raise ImageError(
                f"config {m.config.digest}: rootfs.diff_ids has "
                f"{len(diff_ids or [])} entries for {len(m.layers)} layers"
            )
        for i, did in enumerate(diff_ids):
            check_digest(did, f"config.rootfs.diff_ids[{i}]")
        todo = [
            (lay, did)
            for lay, did in zip(m.layers, diff_ids, strict=True)
            if not (store.has_layer(did) and store.blobs.has(lay.digest))
        ]
        for lay, _ in zip(m.layers, diff_ids, strict=True):
            if all(lay is not t[0] for t in todo):
                prog.done(lay.digest, "already exists")
        if todo:
            fetch_layers(store, client, r.repository, todo, prog, jobs)
        store.blobs.put(config_bytes, m.config.digest)
        names = [str(r)] if r.tag else []
        img = store.add_image(body, names, repo_digest=f"{r.name}@{digest}")
        if top_digest != digest:
            store.add_repo_digest(img.id, f"{r.name}@{top_digest}", move=True)
            img.repo_digests.append(f"{r.name}@{top_digest}")
        return img

