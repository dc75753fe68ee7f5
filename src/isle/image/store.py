"""The image store: blobs, unpacked layers, image records and names, overlay rootfs mounts.

Layout under ``images_dir``::

    blobs/sha256/<hex>        manifests, configs, compressed layers (content-addressed)
    layers/<diffid-hex>/diff  each layer unpacked once, in overlayfs form (a lowerdir)
    layers/<diffid-hex>/size  its uncompressed size
    repositories.json         {"images": {id: {manifest, names, repo_digests, added}}}
    store.lock / gc.lock      flock: record updates / garbage collection vs. writers

Image ids are config digests (Docker's convention). Example::

    store = ImageStore(settings.images_dir)
    img = store.resolve("busybox")           # made offline on first use
    rootfs = store.mount_rootfs(img, workdir)
    store.unmount_rootfs(workdir)
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as _dt
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from isle.errors import ConfigError, ImageError, InvalidState, NotFound
from isle.image.blobs import BlobStore
from isle.image.layers import HashReader, apply_layers, spread_subdirs, tar_dir, unpack_layer
from isle.image.reference import Reference
from isle.oci.image_spec import (
    MT_OCI_CONFIG,
    MT_OCI_LAYER_GZIP,
    MT_OCI_MANIFEST,
    Descriptor,
    Manifest,
    canonical_json,
    config_diff_ids,
    digest_hex,
    host_arch,
    layer_compression,
    parse_manifest_or_index,
)
from isle.sys.fs import atomic_write, flock, private_dir

__all__ = ["ImageStore", "Image", "now_iso"]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True, kw_only=True)
class Image:
    id: str  # config digest
    names: list[str]  # full references, e.g. docker.io/library/busybox:latest
    digest: str  # manifest digest
    config: dict[str, Any]  # the OCI image config (whole document)
    layer_dirs: list[str]  # unpacked layers, lowest first
    size: int  # uncompressed bytes
    manifest: Manifest
    repo_digests: list[str] = field(default_factory=list)
    added: str = ""

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


class ImageStore:
    def __init__(self, root: str) -> None:
        self.root = root
        private_dir(root)  # 0700: layers hold set-uid binaries and device nodes of images
        self.blobs = BlobStore(root)
        spread_subdirs(self.blobs.tmp_dir)  # layers unpack in tmp/layer-*: fresh inode groups
        self.layers_dir = os.path.join(root, "layers")
        os.makedirs(self.layers_dir, exist_ok=True)
        self.index_path = os.path.join(root, "repositories.json")
        self._lock_path = os.path.join(root, "store.lock")
        self._gc_lock_path = os.path.join(root, "gc.lock")
        self._users: Callable[[str], list[str]] = lambda image_id: []
        self._txn: list[tuple[str, str]] | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> ImageStore:
        return cls(settings.images_dir)

    # -- records -------------------------------------------------------------------------
    def set_users_callback(self, fn: Callable[[str], list[str]]) -> None:
        """fn(image_id) -> container ids using it; rmi/prune refuse those unless forced."""
        self._users = fn

    def _read_index(self) -> dict[str, Any]:
        try:
            with open(self.index_path) as f:
                d: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            d = {}
        d.setdefault("images", {})
        return d

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        with flock(self._lock_path):
            d = self._read_index()
            yield d
            atomic_write(self.index_path, json.dumps(d, indent=1, sort_keys=True).encode())
            self._write_oci_index(d)

    def _write_oci_index(self, d: dict[str, Any]) -> None:
        """Keep images_dir a valid OCI image layout too (``skopeo inspect oci:<dir>:<name>``)."""
        manifests = []
        for rec in d["images"].values():
            try:
                size = self.blobs.size(rec["manifest"])
            except NotFound:
                continue
            for n in rec.get("names") or [""]:
                desc: dict[str, Any] = {
                    "mediaType": rec.get("media_type") or MT_OCI_MANIFEST,
                    "digest": rec["manifest"],
                    "size": size,
                }
                if n:
                    desc["annotations"] = {"org.opencontainers.image.ref.name": n}
                manifests.append(desc)
        layout = os.path.join(self.root, "oci-layout")
        if not os.path.exists(layout):
            atomic_write(layout, b'{"imageLayoutVersion":"1.0.0"}')
        atomic_write(
            os.path.join(self.root, "index.json"),
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": manifests,
                }
            ),
        )

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) by anything adding blobs or layers, so gc never deletes them midway."""
        with flock(self._gc_lock_path, shared=True):
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """writing() + undo: if the block fails, blobs and layers it added that no image
        references are removed again, so a failed pull/load/build leaves the store as it was."""
        if self._txn is not None:
            yield
            return
        created: list[tuple[str, str]] = []
        self._txn = created
        self.blobs.on_new = created.append
        try:
            with self.transaction():
                yield
        except BaseException:
            self._undo(created)
            raise
        finally:
            self._txn = None
            self.blobs.on_new = None

    def _undo(self, created: list[tuple[str, str]]) -> None:
        with flock(self._lock_path):
            refs = self._referenced()
            if refs is None:
                return
            keep_blobs, keep_layers = refs
            for kind, digest in created:
                if kind == "blob" and digest not in keep_blobs:
                    self.blobs.delete(digest)
                elif kind == "layer" and digest not in keep_layers:
                    shutil.rmtree(os.path.dirname(self.layer_dir(digest)), ignore_errors=True)

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layers_dir, digest_hex(diff_id, "diff_id"), "diff")

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_dir(diff_id))

    def layer_size(self, diff_id: str) -> int:
        try:
            with open(os.path.join(os.path.dirname(self.layer_dir(diff_id)), "size")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return 0

    def _load(self, image_id: str, rec: dict[str, Any]) -> Image:
        mdata = self.blobs.get(rec["manifest"])
        m = parse_manifest_or_index(mdata)
        if not isinstance(m, Manifest):
            raise ImageError(f"image {image_id}: record points at an index, not a manifest")
        config = json.loads(self.blobs.get(image_id))
        diff_ids = config_diff_ids(config, f"config {image_id}")
        return Image(
            id=image_id,
            names=list(rec.get("names", [])),
            digest=rec["manifest"],
            config=config,
            layer_dirs=[self.layer_dir(d) for d in diff_ids],
            size=sum(self.layer_size(d) for d in diff_ids),
            manifest=m,
            repo_digests=list(rec.get("repo_digests", [])),
            added=rec.get("added", ""),
        )

    def list(self) -> list[Image]:
        """Every readable image (one whose manifest or config is corrupt is left out)."""
        out = []
        for i, r in self._read_index()["images"].items():
            try:
                out.append(self._load(i, r))
            except (ImageError, NotFound, ValueError, KeyError):
                continue
        return out

    def _referenced(self) -> tuple[set[str], set[str]] | None:
        """(blob digests, layer diff_ids) that images and the build cache use; None if some
        record is unreadable (then nothing may be deleted: we cannot tell what it needs)."""
        keep_blobs: set[str] = set()
        keep_layers: set[str] = set()
        for i, r in self._read_index()["images"].items():
            try:
                img = self._load(i, r)
            except (ImageError, NotFound, ValueError, KeyError):
                return None
            keep_blobs |= {img.id, img.digest, *(x.digest for x in img.manifest.layers)}
            keep_layers |= set(img.diff_ids)
        for e in self._build_cache().values():
            keep_blobs.add(e["layer"]["digest"])
            keep_layers.add(e["diff_id"])
        return keep_blobs, keep_layers

    def _find(self, ref: str, idx: dict[str, Any]) -> str | None:
        """Image id for a name (first), name@digest, or a full/short id."""
        images: dict[str, dict[str, Any]] = idx["images"]
        r: Reference | None
        try:
            r = Reference.parse(ref)
        except ConfigError:
            r = None
        if r is not None and r.digest:
            for i, rec in images.items():
                if f"{r.name}@{r.digest}" in rec.get("repo_digests", []):
                    return i
            for i, rec in images.items():
                if rec["manifest"] == r.digest and (
                    any(n.startswith(r.name + "@") for n in rec.get("repo_digests", []))
                    or any(Reference.parse(n).name == r.name for n in rec.get("names", []))
                ):
                    return i
            return None
        if r is not None:
            full = str(r)
            for i, rec in images.items():
                if full in rec.get("names", []):
                    return i
        s = ref.removeprefix("sha256:")
        if len(s) >= 3 and all(c in "0123456789abcdef" for c in s):
            hits = [i for i in images if i.split(":", 1)[1].startswith(s)]
            if len(hits) > 1:
                raise ConfigError(
                    "image", f"{ref!r} matches {len(hits)} images; use more of the id"
                )
            if hits:
                return hits[0]
        if r is None and not ref.startswith("sha256:"):
            Reference.parse(ref)  # raises the reference error
        return None

    def resolve(self, ref: str) -> Image:
        """An image by name, name@digest, full or short id; NotFound if absent.

        ``busybox`` / ``busybox:latest`` is made offline from the host's busybox-static.
        """
        idx = self._read_index()
        image_id = self._find(ref, idx)
        if image_id is None:
            from isle.image import defaults

            if defaults.is_default(ref):
                return defaults.ensure(self, ref)
            raise NotFound(f"image {ref!r} not found")
        return self._load(image_id, idx["images"][image_id])

    def exists(self, ref: str) -> bool:
        return self._find(ref, self._read_index()) is not None

    # -- adding ----------------------------------------------------------------------------
    def add_image(
        self,
        manifest_bytes: bytes,
        names: builtins.list[str],
        repo_digest: str = "",
        *,
        replace_names: bool = True,
    ) -> Image:
        """Record an image whose manifest, config and layers are already in the store.

        Names move to this image from whatever image had them (Docker's tag semantics).
        """
        m = parse_manifest_or_index(manifest_bytes)
        if not isinstance(m, Manifest):
            raise ImageError("add_image: expected an image manifest, got an index")
        mdigest = self.blobs.put(manifest_bytes)
        diff_ids = config_diff_ids(self.blobs.get(m.config.digest), f"config {m.config.digest}")
        if len(diff_ids) != len(m.layers):
            raise ImageError(
                f"config {m.config.digest}: rootfs.diff_ids does not match "
                f"the manifest's {len(m.layers)} layers"
            )
        for i, d in enumerate(diff_ids):
            if not self.has_layer(d):
                raise ImageError(f"layer {i} ({d}) is not unpacked in the store")
        full = [str(Reference.parse(n)) for n in names]
        with self._edit() as idx:
            for rec in idx["images"].values():
                rec["names"] = [n for n in rec.get("names", []) if n not in full]
            rec = idx["images"].setdefault(m.config.digest, {"names": [], "added": now_iso()})
            rec["manifest"] = mdigest
            rec["media_type"] = m.media_type
            for n in full:
                if n not in rec["names"]:
                    rec["names"].append(n)
            if repo_digest and repo_digest not in rec.setdefault("repo_digests", []):
                rec["repo_digests"].append(repo_digest)
            saved = dict(rec)
        return self._load(m.config.digest, saved)

    def add_layer_dir(self, diff_id: str, src_dir: str, size: int) -> str:
        """Move an unpacked layer (overlay form) into place; keep the existing one on a race."""
        final = os.path.dirname(self.layer_dir(diff_id))
        if os.path.isdir(final):
            shutil.rmtree(src_dir, ignore_errors=True)
            return self.layer_dir(diff_id)
        tmp = tempfile.mkdtemp(prefix="new-", dir=self.blobs.tmp_dir)
        os.rename(src_dir, os.path.join(tmp, "diff"))
        with open(os.path.join(tmp, "size"), "w") as f:
            f.write(str(size))
        try:
            os.rename(tmp, final)
            if self._txn is not None:
                self._txn.append(("layer", diff_id))
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(final):
                raise
        return self.layer_dir(diff_id)

    def unpack_blob(self, layer: Descriptor, expected_diff_id: str | None = None) -> str:
        """Unpack a layer blob already in the store (verifying it) and return its diff_id."""
        comp = layer_compression(layer.media_type)
        tmpd = tempfile.mkdtemp(prefix="layer-", dir=self.blobs.tmp_dir)
        try:
            with open(self.blobs.path(layer.digest), "rb") as f:
                src = HashReader(f)
                try:
                    diff_id, size, _ = unpack_layer(src, tmpd, comp)
                except ImageError as e:
                    raise ImageError(f"layer {layer.digest}: {e}") from None
                src.drain()
            if src.digest != layer.digest:
                raise ImageError(f"blob {layer.digest}: stored content is corrupt")
            if expected_diff_id and diff_id != expected_diff_id:
                raise ImageError(
                    f"layer {layer.digest}: diff_id {diff_id} does not match the "
                    f"config's {expected_diff_id}"
                )
            self.add_layer_dir(diff_id, tmpd, size)
            return diff_id
        finally:
            shutil.rmtree(tmpd, ignore_errors=True)

    def layer_diff_id(self, layer: Descriptor) -> str:
        """The uncompressed digest of a stored layer blob (which is verified on the way)."""
        from isle.image.layers import decompressor

        comp = layer_compression(layer.media_type)
        try:
            f = open(self.blobs.path(layer.digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {layer.digest} not in store") from None
        with f:
            src = HashReader(f)
            raw = HashReader(decompressor(src, comp))
            try:
                raw.drain()
                src.drain()
            except Exception as e:  # zlib.error, EOFError, ZstdError: a corrupt stream
                raise ImageError(
                    f"layer {layer.digest}: corrupt {comp or 'tar'} stream: {e}"
                ) from None
        if src.digest != layer.digest:
            raise ImageError(f"blob {layer.digest}: stored content is corrupt")
        return raw.digest

    def ensure_layer(self, layer: Descriptor, diff_id: str) -> None:
        """Make the stored blob ``layer`` available unpacked as ``diff_id``, verified: unpacked
        (compressed digest and diff_id checked) when new; when a layer of that diff_id already
        exists, the blob's own uncompressed digest must still be diff_id, so an archive cannot
        pass one layer off as another."""
        digest_hex(diff_id, "diff_id")
        if not self.has_layer(diff_id):
            self.unpack_blob(layer, diff_id)
        elif (got := self.layer_diff_id(layer)) != diff_id:
            raise ImageError(
                f"layer {layer.digest}: its content's diff_id {got} does not match the "
                f"config's {diff_id}"
            )

    def write_layer_from_dir(
        self, src: str, *, overlay_whiteouts: bool, level: int = 3
    ) -> tuple[Descriptor, str]:
        """tar+gzip a directory into a layer blob, unpack it in the store; (descriptor, diff_id)"""
        with self.blobs.writer() as w:
            gz = gzip.GzipFile(fileobj=w, mode="wb", compresslevel=level, mtime=0)  # type: ignore[call-overload]
            diff = _HashWriter(gz)
            tar_dir(src, diff, overlay_whiteouts=overlay_whiteouts)  # type: ignore[arg-type]
            gz.close()
            digest = w.commit()
        desc = Descriptor(media_type=MT_OCI_LAYER_GZIP, digest=digest, size=w.size)
        diff_id = self.unpack_blob(desc)
        if diff_id != diff.digest:
            raise ImageError(f"layer {digest}: re-read diff_id {diff_id} != written {diff.digest}")
        return desc, diff_id

    def write_image(
        self, config: dict[str, Any], layers: builtins.list[Descriptor], names: builtins.list[str]
    ) -> Image:
        cbytes = canonical_json(config)
        cdigest = self.blobs.put(cbytes)
        manifest = Manifest(
            media_type=MT_OCI_MANIFEST,
            config=Descriptor(media_type=MT_OCI_CONFIG, digest=cdigest, size=len(cbytes)),
            layers=tuple(layers),
        )
        return self.add_image(canonical_json(manifest.to_dict()), names)

    def commit(
        self,
        upper_dir: str,
        parent_image: Image | None,
        config_changes: dict[str, Any] | None = None,
        *,
        names: builtins.list[str] | None = None,
        created_by: str = "",
        comment: str = "",
        author: str = "",
        empty_layer: bool = False,
    ) -> Image:
        """A new image = parent + the overlay upper dir as one layer, with config_changes merged
        into ``config`` (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, ...)."""
        with self.transaction():
            base: dict[str, Any] = (
                json.loads(json.dumps(parent_image.config))
                if parent_image
                else {
                    "architecture": host_arch(),
                    "os": "linux",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }
            )
            layers = list(parent_image.manifest.layers) if parent_image else []
            cfg = base.setdefault("config", {})
            for k, v in (config_changes or {}).items():
                if v is None:
                    cfg.pop(k, None)
                else:
                    cfg[k] = v
            hist: dict[str, Any] = {"created": now_iso(), "created_by": created_by}
            if comment:
                hist["comment"] = comment
            if author:
                base["author"] = author
                hist["author"] = author
            if empty_layer:
                hist["empty_layer"] = True
            else:
                desc, diff_id = self.write_layer_from_dir(upper_dir, overlay_whiteouts=True)
                layers.append(desc)
                base.setdefault("rootfs", {"type": "layers"}).setdefault("diff_ids", []).append(
                    diff_id
                )
            base.setdefault("history", []).append(hist)
            base["created"] = hist["created"]
            return self.write_image(base, layers, names or [])

    # -- names and removal ----------------------------------------------------------------
    def tag(self, ref: str, new_name: str) -> Image:
        img = self.resolve(ref)
        full = str(Reference.parse(new_name))
        with self._edit() as idx:
            for rec in idx["images"].values():
                rec["names"] = [n for n in rec.get("names", []) if n != full]
            idx["images"][img.id]["names"].append(full)
        return self.resolve(img.id)

    def add_repo_digest(self, image_id: str, repo_digest: str, *, move: bool = False) -> None:
        """Record name@digest for an image; with move, take it from any other image (an index
        digest belongs to whichever platform was pulled last)."""
        with self._edit() as idx:
            if move:
                for other in idx["images"].values():
                    if repo_digest in other.get("repo_digests", []):
                        other["repo_digests"].remove(repo_digest)
            rec = idx["images"].get(image_id)
            if rec is not None and repo_digest not in rec.setdefault("repo_digests", []):
                rec["repo_digests"].append(repo_digest)

    def remove(self, ref: str, force: bool = False) -> builtins.list[str]:
        """rmi: untag a name (the image goes when its last name does) or remove by id.

        Returns Docker-style lines (``Untagged: x``, ``Deleted: sha256:...``).
        """
        out: list[str] = []
        with self._edit() as idx:
            image_id = self._find(ref, idx)
            if image_id is None:
                raise NotFound(f"image {ref!r} not found")
            rec = idx["images"][image_id]
            try:
                full = str(Reference.parse(ref))
            except ConfigError:
                full = ""
            if full in rec["names"] and len(rec["names"]) > 1:
                rec["names"].remove(full)
                return [f"Untagged: {Reference.parse(full).familiar}"]
            if full not in rec["names"] and len(rec["names"]) > 1 and not force:
                raise InvalidState(
                    f"image {ref} is referenced by several names "
                    f"({', '.join(rec['names'])}); use -f to remove it"
                )
            users = self._users(image_id)
            if users and not force:
                raise InvalidState(
                    f"image {ref} is in use by container(s) "
                    f"{', '.join(u[:12] for u in users)}; use -f to remove it"
                )
            out += [f"Untagged: {Reference.parse(n).familiar}" for n in rec["names"]]
            if users:
                # forced while containers use it: untag only; the layers stay under their
                # overlays and `image prune` removes the image once nothing uses it
                rec["names"] = []
                return out
            del idx["images"][image_id]
            out.append(f"Deleted: {image_id}")
        self.gc()
        return out

    def build_cache_usage(self) -> tuple[int, int]:
        """(entries, bytes of their layer blobs no image uses): system df's Build Cache."""
        entries = self._build_cache()
        used: set[str] = set()
        for i, r in self._read_index()["images"].items():
            with contextlib.suppress(ImageError, NotFound, ValueError, KeyError):
                img = self._load(i, r)
                used |= {x.digest for x in img.manifest.layers}
        size = 0
        for e in entries.values():
            d = e.get("layer", {}).get("digest", "")
            if d and d not in used:
                with contextlib.suppress(OSError, ImageError, NotFound):
                    size += os.stat(self.blobs.path(d)).st_size
        return len(entries), size

    def _build_cache(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.root, "buildcache.json")) as f:
                d: dict[str, Any] = json.load(f)
                return d
        except (OSError, ValueError):
            return {}

    def prune(self, all_images: bool = False) -> builtins.list[str]:
        """Remove images without names (with all_images: every unused one, and the build cache)."""
        removed = []
        if all_images:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.root, "buildcache.json"))
        for img in self.list():
            if (not img.names or all_images) and not self._users(img.id):
                with self._edit() as idx:
                    if img.id in idx["images"]:
                        del idx["images"][img.id]
                        removed.append(img.id)
        self.gc()
        return removed

    def gc(self) -> tuple[int, int]:
        """Delete blobs and layers no image refers to; (blobs, layers) removed."""
        with flock(self._gc_lock_path):
            refs = self._referenced()
            if refs is None:
                return 0, 0
            keep_blobs = refs[0]
            keep_layers = {d.split(":", 1)[1] for d in refs[1]}
            nb = nl = 0
            for d in self.blobs.all():
                if d not in keep_blobs:
                    self.blobs.delete(d)
                    nb += 1
            for h in os.listdir(self.layers_dir):
                if h not in keep_layers:
                    shutil.rmtree(os.path.join(self.layers_dir, h), ignore_errors=True)
                    nl += 1
            ldir = os.path.join(self.root, "l")  # short overlay names (mount.py)
            for link in os.listdir(ldir) if os.path.isdir(ldir) else []:
                if not os.path.exists(os.path.join(ldir, link)):
                    os.unlink(os.path.join(ldir, link))
            # what killed pulls/builds left; never a live writer's, nor under a live mount (a
            # running build's RUN overlay: deleting its upper/work broke the build)
            from isle.image.blobs import sweep_tmp

            sweep_tmp(self.blobs.tmp_dir)
            return nb, nl

    def disk_usage(self) -> dict[str, int]:
        def du(p: str) -> int:
            total = 0
            for top, _, files in os.walk(p):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(top, f)).st_blocks * 512
            return total

        return {
            "images": len(self._read_index()["images"]),
            "blobs_bytes": du(self.blobs.dir),
            "layers_bytes": du(self.layers_dir),
        }

    # -- rootfs ------------------------------------------------------------------------------
    def mount_rootfs(self, img: Image, workdir: str, *, copy: bool = False) -> str:
        """workdir/rootfs = overlay(lower=layers, upper=workdir/upper); a copy if overlay fails."""
        from isle.image import mount

        return mount.mount_rootfs(img.layer_dirs, workdir, copy=copy)

    def unmount_rootfs(self, workdir: str) -> None:
        from isle.image import mount

        mount.unmount_rootfs(workdir)

    # -- tar helpers for export/import ------------------------------------------------------
    @staticmethod
    def tar_directory(src: str, out: Any) -> None:
        """Write a plain rootfs tar of src (``isle export``): no whiteout conversion."""
        tar_dir(src, out, overlay_whiteouts=False)

    @staticmethod
    def flatten(layer_dirs: builtins.list[str], dest: str) -> None:
        apply_layers(layer_dirs, dest)


class _HashWriter:
    def __init__(self, out: Any) -> None:
        import hashlib

        self.out, self.h = out, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return int(self.out.write(b))

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


