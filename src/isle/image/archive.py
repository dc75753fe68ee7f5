"""Images in and out of files: docker-archive, OCI archive / layout, and rootfs tarballs.

    save(store, ["busybox"], f, "docker-archive" | "oci-archive")   # or "oci-dir" with a path
    load(store, "x.tar")            # docker-archive, OCI archive or OCI layout dir (auto-detected)
    import_rootfs(store, "rootfs.tar.gz", "mine:1", ["CMD [\"sh\"]"], "")

Everything read is verified (blob digests and sizes, layer diff_ids) before the image appears.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from typing import IO, Any

from isle.errors import ConfigError, ImageError
from isle.image.layers import HashReader, decompressor
from isle.image.reference import Reference
from isle.image.store import Image, ImageStore, now_iso
from isle.oci.image_spec import (
    INDEX_TYPES,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    Descriptor,
    Index,
    Manifest,
    canonical_json,
    config_diff_ids,
    digest_hex,
    layer_compression,
    one_layer_config,
    parse_manifest_or_index,
    sha256_digest,
)

__all__ = ["save", "load", "import_rootfs", "IterFile"]

REF_NAME = "org.opencontainers.image.ref.name"
CTRD_NAME = "io.containerd.image.name"


# -- save -------------------------------------------------------------------------------------
def save(store: ImageStore, refs: list[str], out: Any, fmt: str = "docker-archive") -> None:
    images = [(r, store.resolve(r)) for r in refs]
    if fmt == "docker-archive":
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            _save_docker(store, images, tf)
    elif fmt == "oci-archive":
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            _save_oci(store, images, lambda name, data, size: _add(tf, name, data, size))
    elif fmt == "oci-dir":
        os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

        def put(name: str, data: Any, size: int) -> None:
            with open(os.path.join(out, name), "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    for b in data:
                        f.write(b)

        _save_oci(store, images, put)
    else:
        raise ConfigError(
            "format", f"unknown archive format {fmt!r} (docker-archive, oci-archive, oci-dir)"
        )


def _names_for(ref: str, img: Image) -> list[str]:
    try:
        r = Reference.parse(ref)
        if str(r) in img.names:
            return [str(r)]
    except ConfigError:
        pass
    return list(img.names)


class IterFile(io.RawIOBase):
    """A readable file over an iterator of byte chunks (tarfile's stream mode reads from it)."""

    def __init__(self, it: Any) -> None:
        self.it, self.buf = iter(it), b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.it)
            except StopIteration:
                break
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _add(tf: tarfile.TarFile, name: str, data: Any, size: int) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = size, 0o644, 0
    f = io.BytesIO(data) if isinstance(data, bytes) else IterFile(data)
    tf.addfile(ti, f)  # type: ignore[arg-type]  # tarfile only calls read()
    if f.read(1):  # also runs the source's end-of-stream digest check
        raise ImageError(f"{name}: longer than its recorded size {size}")


def _save_oci(store: ImageStore, images: list[tuple[str, Image]], put: Any) -> None:
    layout = b'{"imageLayoutVersion":"1.0.0"}'
    put("oci-layout", layout, len(layout))
    done: set[str] = set()
    manifests = []
    for ref, img in images:
        for d in [*img.manifest.layers, img.manifest.config]:
            if d.digest not in done:
                done.add(d.digest)
                put(f"blobs/sha256/{d.digest[7:]}", store.blobs.iter_verified(d.digest), d.size)
        mbytes = store.blobs.get(img.digest)
        if img.digest not in done:
            done.add(img.digest)
            put(f"blobs/sha256/{img.digest[7:]}", mbytes, len(mbytes))
        for n in _names_for(ref, img) or [""]:
            ann = {REF_NAME: n, CTRD_NAME: n} if n else {}
            manifests.append(
                Descriptor(
                    media_type=img.manifest.media_type,
                    digest=img.digest,
                    size=len(mbytes),
                    annotations=ann,
                ).to_dict()
            )
    index = canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests})
    put("index.json", index, len(index))


def _save_docker(store: ImageStore, images: list[tuple[str, Image]], tf: tarfile.TarFile) -> None:
    entries = []
    repos: dict[str, dict[str, str]] = {}
    done: set[str] = set()
    for ref, img in images:
        cfg_name = img.id[7:] + ".json"
        if cfg_name not in done:
            data = store.blobs.get(img.id)
            _add(tf, cfg_name, data, len(data))
            done.add(cfg_name)
        paths = []
        for desc, diff_id in zip(img.manifest.layers, img.diff_ids, strict=True):
            path = f"{diff_id[7:]}/layer.tar"
            paths.append(path)
            if path in done:
                continue
            done.add(path)
            size = store.layer_size(diff_id)
            raw = decompressor(
                IterFile(store.blobs.iter_verified(desc.digest)),
                layer_compression(desc.media_type),
            )
            src = HashReader(raw)
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = size, 0o644, 0
            tf.addfile(ti, src)  # type: ignore[arg-type]  # tarfile only calls read()
            if src.read(1) or src.digest != diff_id:
                raise ImageError(f"layer {desc.digest}: stored content does not match {diff_id}")
        tags = [str(Reference.parse(n)) for n in _names_for(ref, img)]
        for t in tags:
            repo, _, tag = t.rpartition(":")
            repos.setdefault(repo, {})[tag] = img.diff_ids[-1][7:] if img.diff_ids else ""
        entries.append({"Config": cfg_name, "RepoTags": tags or None, "Layers": paths})
    m = json.dumps(entries).encode()
    _add(tf, "manifest.json", m, len(m))
    r = json.dumps(repos).encode()
    _add(tf, "repositories", r, len(r))


# -- load -------------------------------------------------------------------------------------
class _Source:
    """Read files by name from a tar archive or a directory."""

    def __init__(self, path: str) -> None:
        self.dir = path if os.path.isdir(path) else None
        self.tf = None if self.dir else tarfile.open(path, "r:*")
        self.members = (
            {}
            if self.tf is None
            else {os.path.normpath(m.name): m for m in self.tf.getmembers() if m.isfile()}
        )

    def has(self, name: str) -> bool:
        if self.dir:
            return os.path.isfile(os.path.join(self.dir, name))
        return os.path.normpath(name) in self.members

    def open(self, name: str) -> IO[bytes]:
        if self.dir:
            p = os.path.realpath(os.path.join(self.dir, name))
            if not p.startswith(os.path.realpath(self.dir) + os.sep):
                raise ImageError(f"archive: {name!r} points outside the archive")
            try:
                return open(p, "rb")
            except OSError as e:
                raise ImageError(f"archive: {name!r}: {e.strerror}") from None
        m = self.members.get(os.path.normpath(name))
        if m is None:
            raise ImageError(f"archive: {name!r} is missing")
        f = self.tf.extractfile(m)  # type: ignore[union-attr]
        assert f is not None
        return f

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        if self.tf:
            self.tf.close()


def load(store: ImageStore, src: Any) -> list[Image]:
    tmp = None
    if not isinstance(src, str):
        fd, tmp = tempfile.mkstemp(prefix="load-", dir=store.blobs.tmp_dir)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        src = tmp
    try:
        try:
            s = _Source(src)
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"{src}: not a tar archive or OCI layout: {e}") from None
        try:
            with store.transaction():
                if s.has("index.json") and s.has("oci-layout"):
                    return _load_oci(store, s)
                if s.has("manifest.json"):
                    return _load_docker(store, s)
            raise ImageError(
                f"{src}: neither a docker-archive (manifest.json) nor an OCI layout "
                "(oci-layout + index.json)"
            )
        finally:
            s.close()
    finally:
        if tmp:
            os.unlink(tmp)


def _blob_name(digest: str, where: str) -> str:
    return f"blobs/sha256/{digest_hex(digest, where)}"


def _member(v: Any, where: str) -> str:
    """A file name inside the archive: relative, no '..', no NUL (it names a tar member or a
    file under the layout directory, never anything beside it)."""
    if not isinstance(v, str) or not v or "\0" in v or v.startswith("/"):
        raise ImageError(f"{where}: not a relative file name in the archive: {v!r:.200}")
    if ".." in v.split("/"):
        raise ImageError(f"{where}: {v!r:.200} has a '..' component")
    return v


def _read_verified(s: _Source, d: Descriptor, what: str) -> bytes:
    data = s.read(_blob_name(d.digest, f"{what}.digest"))
    if sha256_digest(data) != d.digest:
        raise ImageError(f"{what} {d.digest}: content does not match its digest")
    return data


def _copy_blob(store: ImageStore, s: _Source, d: Descriptor) -> None:
    name = _blob_name(d.digest, "digest")
    if store.blobs.has(d.digest):
        return
    with store.blobs.writer(d.digest, d.size) as w, s.open(name) as f:
        while b := f.read(1 << 20):
            w.write(b)
        w.commit()


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ImageError(f"{where}: not JSON: {e}") from None


def _load_oci(store: ImageStore, s: _Source) -> list[Image]:
    from isle.image.pull import default_platform

    index = Index.from_dict(_json(s.read("index.json"), "index.json"))
    out = []
    for d in index.manifests:
        mdesc = d
        if d.media_type in INDEX_TYPES:
            sub = parse_manifest_or_index(_read_verified(s, d, "index"), d.media_type)
            if not isinstance(sub, Index):
                raise ImageError(f"index {d.digest}: expected an image index")
            mdesc = sub.select(default_platform())
        mbytes = _read_verified(s, mdesc, "manifest")
        if store.blobs.put(mbytes) != mdesc.digest:
            raise ImageError(f"manifest {mdesc.digest}: digest mismatch")
        m = parse_manifest_or_index(mbytes, mdesc.media_type)
        if not isinstance(m, Manifest):
            raise ImageError(f"manifest {mdesc.digest}: expected an image manifest")
        _copy_blob(store, s, m.config)
        diff_ids = config_diff_ids(store.blobs.get(m.config.digest), f"config {m.config.digest}")
        if len(diff_ids) != len(m.layers):
            raise ImageError(f"config {m.config.digest}: diff_ids do not match the layers")
        for lay, did in zip(m.layers, diff_ids, strict=True):
            _copy_blob(store, s, lay)
            store.ensure_layer(lay, did)
        names = []
        for key in (CTRD_NAME, REF_NAME):
            n = d.annotations.get(key, "")
            if n and ("/" in n or ":" in n):
                try:
                    names = [str(Reference.parse(n))]
                    break
                except ConfigError:
                    pass
        out.append(store.add_image(mbytes, names))
    return out


def _load_docker(store: ImageStore, s: _Source) -> list[Image]:
    entries = _json(s.read("manifest.json"), "manifest.json")
    if not isinstance(entries, list):
        raise ImageError("manifest.json: expected a list")
    out = []
    for i, e in enumerate(entries):
        where = f"manifest.json[{i}]"
        if not isinstance(e, dict):
            raise ImageError(f"{where}: expected an object")
        paths = e.get("Layers") or []
        tags = e.get("RepoTags") or []
        if not isinstance(paths, list) or not isinstance(tags, list):
            raise ImageError(f"{where}: Layers and RepoTags must be lists")
        paths = [_member(p, f"{where}.Layers[{j}]") for j, p in enumerate(paths)]
        cfg_bytes = s.read(_member(e.get("Config"), f"{where}.Config"))
        diff_ids = config_diff_ids(cfg_bytes, f"{where}.Config")
        cfg_digest = store.blobs.put(cfg_bytes)
        if len(diff_ids) != len(paths):
            raise ImageError(
                f"{where}: {len(paths)} layers but config has {len(diff_ids)} diff_ids"
            )
        layers = []
        for path, did in zip(paths, diff_ids, strict=True):
            with s.open(path) as f, store.blobs.writer() as w:
                head = f.read(1 << 20)
                try:
                    mt = _sniff(head)
                except ImageError as exc:
                    raise ImageError(f"{where}: layer {path}: {exc}") from None
                while head:
                    w.write(head)
                    head = f.read(1 << 20)
                digest = w.commit()
            desc = Descriptor(media_type=mt, digest=digest, size=w.size)
            try:
                store.ensure_layer(desc, did)
            except ImageError as exc:
                raise ImageError(f"{where}: layer {path}: {exc}") from None
            layers.append(desc)
        manifest = Manifest(
            media_type="application/vnd.oci.image.manifest.v1+json",
            config=Descriptor(
                media_type="application/vnd.oci.image.config.v1+json",
                digest=cfg_digest,
                size=len(cfg_bytes),
            ),
            layers=tuple(layers),
        )
        if not all(isinstance(t, str) for t in tags):
            raise ImageError(f"{where}.RepoTags: expected a list of strings")
        names = [str(Reference.parse(t)) for t in tags]
        out.append(store.add_image(canonical_json(manifest.to_dict()), names))
    return out


def _sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return MT_OCI_LAYER_GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return MT_OCI_LAYER_ZSTD
    if len(head) >= 262 and head[257:262] == b"ustar" or not head.strip(b"\0"):
        return MT_OCI_LAYER
    raise ImageError("layer is neither tar, gzip nor zstd")


# -- import -----------------------------------------------------------------------------------
def import_rootfs(
    store: ImageStore, src: Any, ref: str | None, changes: list[str], message: str = ""
) -> Image:
    """A one-layer image from a rootfs tarball (plain, gzip or zstd)."""
    from isle.image.build.parser import apply_changes

    f = open(src, "rb") if isinstance(src, str) else src
    try:
        with store.transaction():
            with store.blobs.writer() as w:
                head = f.read(1 << 20)
                mt = _sniff(head)
                while head:
                    w.write(head)
                    head = f.read(1 << 20)
                digest = w.commit()
            desc = Descriptor(media_type=mt, digest=digest, size=w.size)
            diff_id = store.unpack_blob(desc)
            cfg: dict[str, Any] = {}
            apply_changes(cfg, changes)
            created = now_iso()
            config = one_layer_config(diff_id, created, cfg, "isle import", message or "")
            return store.write_image(config, [desc], [ref] if ref else [])
    finally:
        if isinstance(src, str):
            f.close()

