"""Content-addressed blobs under ``blobs/sha256/<hex>``: verified when written and when read.

A blob appears only whole: writers stream into ``tmp/`` and rename into place after the digest
(and size, when known) matched; readers hash what they read and fail on a mismatch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

from isle.errors import ImageError, NotFound
from isle.oci.image_spec import check_digest, is_digest

__all__ = ["BlobStore", "BlobWriter"]

CHUNK = 1 << 20


class BlobWriter:
    """Stream bytes in; ``commit()`` checks them and publishes the blob; ``abort()`` drops them."""

    def __init__(
        self, store: BlobStore, expected: str | None, size: int | None, tmp: str | None = None
    ) -> None:
        self.store, self.expected, self.expected_size = store, expected, size
        self.hasher = hashlib.sha256()
        self.size = 0
        self.tmp = tmp or store.tmp_path()
        self.f: BinaryIO = open(self.tmp, "wb")

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self.f.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def commit(self) -> str:
        return self.store.publish(self.tmp, self.finish())

    def finish(self) -> str:
        """Close and check digest and size, but leave the file in tmp/ (see BlobStore.publish)."""
        self.f.close()
        got = self.digest
        try:
            if self.expected and got != self.expected:
                raise ImageError(f"blob {self.expected}: digest mismatch (got {got})")
            if self.expected_size is not None and self.size != self.expected_size:
                raise ImageError(
                    f"blob {self.expected or got}: size {self.size}, expected {self.expected_size}"
                )
        except ImageError:
            self.abort()
            raise
        return got

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, et: object, *_: object) -> None:
        if et is not None or not self.f.closed:
            self.abort()


class BlobStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = os.path.join(root, "blobs", "sha256")
        self.tmp_dir = os.path.join(root, "tmp")
        #: told ("blob", digest) for each blob this process adds (ImageStore.transaction)
        self.on_new: Callable[[tuple[str, str]], None] | None = None
        os.makedirs(self.dir, 0o700, exist_ok=True)
        os.makedirs(self.tmp_dir, 0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        check_digest(digest, "digest")
        return os.path.join(self.dir, digest.split(":", 1)[1])

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in store") from None

    def writer(
        self, expected: str | None = None, size: int | None = None, tmp: str | None = None
    ) -> BlobWriter:
        return BlobWriter(self, expected, size, tmp)

    def tmp_path(self) -> str:
        """A fresh name in tmp/ for a blob being written."""
        return os.path.join(self.tmp_dir, f"blob-{os.getpid()}-{os.urandom(6).hex()}")

    def publish(self, tmp: str, digest: str) -> str:
        """Move a verified blob (BlobWriter.finish) from tmp/ into place."""
        final = self.path(digest)
        existed = os.path.exists(final)
        os.rename(tmp, final)
        if not existed and self.on_new is not None:
            self.on_new(("blob", digest))
        return digest

    def put(self, data: bytes, expected: str | None = None) -> str:
        with self.writer(expected, None) as w:
            w.write(data)
            return w.commit()

    def get(self, digest: str) -> bytes:
        """The whole blob, verified."""
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in store") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ImageError(f"blob {digest}: stored content is corrupt (digest mismatch)")
        return data

    def iter_verified(self, digest: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream the blob; raises ImageError at the end if its content does not match."""
        h = hashlib.sha256()
        try:
            f = open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in store") from None
        with f:
            while b := f.read(chunk):
                h.update(b)
                yield b
        if "sha256:" + h.hexdigest() != digest:
            raise ImageError(f"blob {digest}: stored content is corrupt (digest mismatch)")

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def all(self) -> list[str]:
        return [d for h in os.listdir(self.dir) if is_digest(d := "sha256:" + h)]
