"""OCI image-spec and Docker v2 media types, descriptors, manifests and indexes as plain data.

Parsing raises ``ImageError`` naming the bad field (``manifest.layers[2].digest: ...``).
Image configs stay dicts (OCI ``config`` keys: Env, Cmd, Entrypoint, WorkingDir, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from isle.errors import ImageError

__all__ = [
    "MT_OCI_MANIFEST",
    "MT_OCI_INDEX",
    "MT_OCI_CONFIG",
    "MT_OCI_LAYER",
    "MT_OCI_LAYER_GZIP",
    "MT_OCI_LAYER_ZSTD",
    "MT_DOCKER_MANIFEST",
    "MT_DOCKER_LIST",
    "MT_DOCKER_CONFIG",
    "MT_DOCKER_LAYER_GZIP",
    "MANIFEST_TYPES",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "Descriptor",
    "Manifest",
    "Index",
    "Platform",
    "sha256_digest",
    "check_digest",
    "is_digest",
    "digest_hex",
    "config_diff_ids",
    "parse_manifest_or_index",
    "canonical_json",
    "host_arch",
    "one_layer_config",
    "layer_compression",
    "chain_ids",
]

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
#: layer media type -> compression ("gzip", "zstd", "")
LAYER_TYPES = {
    MT_OCI_LAYER: "",
    MT_OCI_LAYER_GZIP: "gzip",
    MT_OCI_LAYER_ZSTD: "zstd",
    MT_OCI_LAYER_ND_GZIP: "gzip",
    MT_DOCKER_LAYER_GZIP: "gzip",
    MT_DOCKER_LAYER_FOREIGN: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "",
}

#: the one digest syntax isle accepts anywhere a digest may become a path (blobs/sha256/<hex>,
#: layers/<hex>): ``sha256:`` and exactly 64 lowercase hex digits (fullmatch: no trailing newline)
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def check_digest(value: Any, where: str) -> str:
    """value if it is ``sha256:<64 hex>``, else ImageError naming where it came from."""
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise ImageError(f"{where}: not a sha256 digest (sha256:<64 hex digits>): {value!r:.200}")
    return value


def digest_hex(value: Any, where: str) -> str:
    """The hex part of a checked digest: the only way a digest becomes a file name."""
    return check_digest(value, where)[7:]


def config_diff_ids(config: Any, where: str = "config") -> list[str]:
    """rootfs.diff_ids of an image config (a dict or its JSON bytes), every one checked."""
    if isinstance(config, (bytes, str)):
        try:
            config = json.loads(config)
        except (ValueError, RecursionError) as exc:
            raise ImageError(f"{where}: not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ImageError(f"{where}: expected a JSON object")
    rootfs = config.get("rootfs", {})
    if not isinstance(rootfs, dict):
        raise ImageError(f"{where}.rootfs: expected an object")
    ids = rootfs.get("diff_ids", [])
    if not isinstance(ids, list):
        raise ImageError(f"{where}.rootfs.diff_ids: expected a list")
    return [check_digest(d, f"{where}.rootfs.diff_ids[{i}]") for i, d in enumerate(ids)]


def _strmap(v: Any, where: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise ImageError(f"{where}: expected an object of strings")
    return dict(v)


def _obj(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ImageError(f"{where}: expected a JSON object")
    return d


def _descriptors(d: dict[str, Any], key: str, where: str) -> tuple[Descriptor, ...]:
    """d[key] as descriptors, each error naming where.key[i]."""
    v = d.get(key)
    if not isinstance(v, list):
        raise ImageError(f"{where}.{key}: expected a list")
    return tuple(Descriptor.from_dict(x, f"{where}.{key}[{i}]") for i, x in enumerate(v))


def _media_type(d: dict[str, Any], given: str, default: str, where: str) -> str:
    mt = d.get("mediaType") or given or default
    if not isinstance(mt, str):
        raise ImageError(f"{where}.mediaType: expected a string")
    return mt


def _with_annotations(d: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    if annotations:
        d["annotations"] = dict(annotations)
    return d


def host_arch() -> str:
    """This machine's architecture as OCI names it (amd64, arm64, ...)."""
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def one_layer_config(diff_id: str, created: str, config: dict[str, Any], created_by: str,
                     comment: str = "") -> dict[str, Any]:
    """The image config of a one-layer image made here (import, the built-in images)."""
    hist: dict[str, Any] = {"created": created, "created_by": created_by}
    if comment:
        hist["comment"] = comment
    return {"architecture": host_arch(), "os": "linux", "created": created, "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [hist]}


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def layer_compression(media_type: str, where: str = "layer") -> str:
    try:
        return LAYER_TYPES[media_type]
    except KeyError:
        raise ImageError(f"{where}.mediaType: unknown layer media type {media_type!r}") from None


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI ChainID of each layer prefix (image-spec config.md)."""
    out: list[str] = []
    for i, d in enumerate(diff_ids):
        check_digest(d, f"rootfs.diff_ids[{i}]")
        out.append(d if not out else sha256_digest(f"{out[-1]} {d}".encode()))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "platform") -> Platform:
        vals = {}
        for k in ("os", "architecture", "variant"):
            v = d.get(k, "")
            if not isinstance(v, str):
                raise ImageError(f"{where}.{k}: expected a string")
            vals[k] = v
        return cls(**vals)

    def to_dict(self) -> dict[str, Any]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d

    @classmethod
    def parse(cls, s: str) -> Platform:
        parts = s.split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise ImageError(f"platform: expected os/arch[/variant], got {s!r}")
        return cls(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Descriptor:
        if not isinstance(d, dict):
            raise ImageError(f"{where}: expected an object")
        mt = d.get("mediaType")
        if not isinstance(mt, str):
            raise ImageError(f"{where}.mediaType: missing")
        size = d.get("size")
        if not isinstance(size, int) or size < 0:
            raise ImageError(f"{where}.size: expected a non-negative integer, got {size!r}")
        if isinstance(size, bool):
            raise ImageError(f"{where}.size: expected a non-negative integer, got {size!r}")
        plat = d.get("platform")
        urls = d.get("urls") or ()
        if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
            raise ImageError(f"{where}.urls: expected a list of strings")
        return cls(
            media_type=mt,
            digest=check_digest(d.get("digest"), f"{where}.digest"),
            size=size,
            platform=(
                Platform.from_dict(plat, f"{where}.platform") if isinstance(plat, dict) else None
            ),
            annotations=_strmap(d.get("annotations"), f"{where}.annotations"),
            urls=tuple(urls),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform.to_dict()
        return _with_annotations(d, self.annotations)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], media_type: str = "") -> Manifest:
        d = _obj(d, "manifest")
        mt = _media_type(d, media_type, MT_OCI_MANIFEST, "manifest")
        if d.get("schemaVersion") != 2:
            raise ImageError(f"manifest.schemaVersion: expected 2, got {d.get('schemaVersion')!r}")
        descs = _descriptors(d, "layers", "manifest")
        for i, ld in enumerate(descs):
            layer_compression(ld.media_type, f"manifest.layers[{i}]")
        return cls(
            media_type=mt,
            config=Descriptor.from_dict(d.get("config"), "manifest.config"),
            layers=descs,
            annotations=_strmap(d.get("annotations"), "manifest.annotations"),
        )

    def to_dict(self) -> dict[str, Any]:
        return _with_annotations({
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [x.to_dict() for x in self.layers],
        }, self.annotations)


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], media_type: str = "") -> Index:
        d = _obj(d, "index")
        manifests = _descriptors(d, "manifests", "index")
        return cls(
            media_type=_media_type(d, media_type, MT_OCI_INDEX, "index"),
            manifests=manifests,
            annotations=_strmap(d.get("annotations"), "index.annotations"),
        )

    def to_dict(self) -> dict[str, Any]:
        return _with_annotations({
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_dict() for m in self.manifests],
        }, self.annotations)

    def select(self, want: Platform) -> Descriptor:
        """The manifest for want (variant optional), else ImageError listing what exists."""
        for m in self.manifests:
            p = m.platform
            if (
                p
                and p.os == want.os
                and p.architecture == want.architecture
                and (not want.variant or p.variant == want.variant)
            ):
                return m
        have = [f"{m.platform.os}/{m.platform.architecture}" for m in self.manifests if m.platform]
        raise ImageError(
            f"no manifest for platform {want.os}/{want.architecture}; "
            f"index has {', '.join(have) or 'none'}"
        )


def parse_manifest_or_index(data: bytes, media_type: str = "") -> Manifest | Index:
    try:
        d = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ImageError(f"manifest: not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ImageError("manifest: expected a JSON object")
    mt = d.get("mediaType") or media_type
    if not isinstance(mt, str):
        raise ImageError("manifest.mediaType: expected a string")
    if mt in INDEX_TYPES or (not mt and "manifests" in d):
        return Index.from_dict(d, mt)
    if mt in MANIFEST_TYPES or (not mt and "layers" in d):
        return Manifest.from_dict(d, mt)
    raise ImageError(f"manifest.mediaType: unsupported {mt!r}")
