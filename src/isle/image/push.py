"""``isle push``: layers (skipped if present, else mounted from a sibling), config, manifest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from isle.errors import RegistryError
from isle.image.pull import NullProgress, Progress
from isle.image.reference import Reference
from isle.image.registry import RegistryClient, httpx
from isle.image.store import Image, ImageStore
from isle.oci.image_spec import Descriptor

__all__ = ["push"]


def push(
    store: ImageStore,
    image: Image,
    dest: str,
    client: RegistryClient,
    *,
    progress: Progress | None = None,
    jobs: int = 4,
) -> str:
    """Push image to dest (a full reference on client's registry); returns the manifest digest."""
    r = Reference.parse(dest)
    prog = progress or NullProgress()
    siblings = [
        Reference.parse(n.split("@")[0]).repository
        for n in image.repo_digests + image.names
        if Reference.parse(n.split("@")[0]).registry == r.registry
    ]
    siblings = [s for s in dict.fromkeys(siblings) if s != r.repository]

    def one(d: Descriptor) -> None:
        if client.has_blob(r.repository, d.digest):
            prog.done(d.digest, "layer already exists")
            return
        for s in siblings:
            if client.mount_blob(r.repository, d.digest, s):
                prog.done(d.digest, f"mounted from {s}")
                return
        prog.start(d.digest, d.size)

        def chunks() -> object:
            for b in store.blobs.iter_verified(d.digest):
                prog.advance(d.digest, len(b))
                yield b

        for attempt in range(client.retries + 1):  # a streamed body is re-read from the store
            try:
                client.upload_blob(r.repository, d.digest, d.size, chunks())  # type: ignore[arg-type]
                break
            except RegistryError as e:
                if attempt == client.retries or not isinstance(e.__cause__, httpx.TransportError):
                    raise
        prog.done(d.digest, "pushed")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        errs = [f.exception() for f in [ex.submit(one, d) for d in image.manifest.layers]]
    for e in errs:
        if e is not None:
            raise e
    one(image.manifest.config)
    body = store.blobs.get(image.digest)
    digest = client.put_manifest(r.repository, r.digest or r.tag, body, image.manifest.media_type)
    store.add_repo_digest(image.id, f"{r.name}@{digest}")
    prog.message(f"{r.familiar}: digest: {digest} size: {len(body)}")
    return digest
