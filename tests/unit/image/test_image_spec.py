"""Manifest/index parsing: errors name the field; platform selection; chain ids."""

import json

import pytest

from isle.errors import ImageError
from isle.oci.image_spec import (
    MT_DOCKER_LIST,
    Index,
    Manifest,
    Platform,
    chain_ids,
    parse_manifest_or_index,
    sha256_digest,
)

D = "sha256:" + "b" * 64


def manifest(**over: object) -> dict:
    m = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": D,
            "size": 10,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D, "size": 5}
        ],
    }
    m.update(over)
    return m


def test_manifest_roundtrip() -> None:
    m = parse_manifest_or_index(json.dumps(manifest()).encode())
    assert isinstance(m, Manifest)
    assert m.layers[0].size == 5
    assert Manifest.from_dict(m.to_dict()) == m


def test_unknown_layer_media_type_names_the_layer() -> None:
    bad = manifest(layers=[{"mediaType": "application/x-rar", "digest": D, "size": 1}])
    with pytest.raises(ImageError, match=r"manifest.layers\[0\].mediaType"):
        parse_manifest_or_index(json.dumps(bad).encode())


def test_bad_digest_and_size_name_the_field() -> None:
    bad = manifest(config={"mediaType": "x", "digest": "md5:abc", "size": 1})
    with pytest.raises(ImageError, match=r"manifest.config.digest"):
        parse_manifest_or_index(json.dumps(bad).encode())
    bad = manifest(
        layers=[{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D, "size": -1}]
    )
    with pytest.raises(ImageError, match=r"layers\[0\].size"):
        parse_manifest_or_index(json.dumps(bad).encode())


def test_not_json_and_unknown_type() -> None:
    with pytest.raises(ImageError, match="not JSON"):
        parse_manifest_or_index(b"{nope")
    with pytest.raises(ImageError, match="unsupported"):
        parse_manifest_or_index(b'{"mediaType": "text/plain"}')


def test_index_platform_selection() -> None:
    idx = {
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_LIST,
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": D,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": "sha256:" + "c" * 64,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
    i = parse_manifest_or_index(json.dumps(idx).encode())
    assert isinstance(i, Index)
    assert i.select(Platform(architecture="amd64")).digest == "sha256:" + "c" * 64
    assert i.select(Platform.parse("linux/arm64")).digest == D
    with pytest.raises(ImageError, match="linux/s390x.*linux/arm64, linux/amd64"):
        i.select(Platform.parse("linux/s390x"))
    with pytest.raises(ImageError, match="platform"):
        Platform.parse("linux")


def test_chain_ids_follow_the_spec() -> None:
    a, b = sha256_digest(b"a"), sha256_digest(b"b")
    assert chain_ids([a, b]) == [a, sha256_digest(f"{a} {b}".encode())]
