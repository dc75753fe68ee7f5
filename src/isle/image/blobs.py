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

__all__ = ["BlobStore", "BlobWriter", "sweep_tmp", "tmp_usage"]

#: an entry of tmp/ whose owner cannot be told (no pid in its name) is another process's work
#: until it is this old
TMP_UNOWNED_AGE = 600.0

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
        """A fresh name in tmp/ for a blob being written (its writer's pid in it: sweep_tmp)."""
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


def _owner_alive(name: str) -> bool | None:
    """For tmp/ names KIND-PID-... (blob-, layer-): whether that pid still runs; None: no pid."""
    from isle.sys import procfs

    parts = name.split("-")
    if len(parts) >= 3 and parts[1].isdigit():
        return procfs.start_time(int(parts[1])) is not None
    return None


def _mounted_under(paths: list[str]) -> set[str]:
    from isle.sys import procfs

    try:
        points = procfs.mountpoints()
    except OSError:
        return set(paths)  # cannot tell: treat all as busy
    return {p for p in paths if any(m == p or m.startswith(p + "/") for m in points)}


def _du(path: str) -> int:
    total = 0
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_blocks * 512
    for top, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_blocks * 512
            except OSError:
                pass
    return total


def sweep_tmp(tmp_dir: str, *, unowned_age: float = TMP_UNOWNED_AGE) -> tuple[int, int]:
    """Remove what killed pulls and builds left in tmp/: entries whose writer (pid in the name)
    is gone, or unowned ones older than unowned_age; never one with a mount under it (a live
    build's RUN overlay) nor a live writer's. -> (entries removed, bytes freed)."""
    import shutil
    import time

    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0, 0
    paths = [os.path.join(tmp_dir, n) for n in names]
    busy = _mounted_under(paths)
    now = time.time()
    n = freed = 0
    for name, p in zip(names, paths, strict=True):
        if p in busy:
            continue
        alive = _owner_alive(name)
        if alive:
            continue
        if alive is None:
            try:
                if now - os.lstat(p).st_mtime < unowned_age:
                    continue
            except OSError:
                continue
        size = _du(p)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass
        if not os.path.lexists(p):
            n, freed = n + 1, freed + size
    return n, freed


def tmp_usage(tmp_dir: str) -> tuple[int, int]:
    """(entries, bytes) in tmp/: partial pulls, unpacks and build steps (system df)."""
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0, 0
    return len(names), sum(_du(os.path.join(tmp_dir, x)) for x in names)
