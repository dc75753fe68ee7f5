"""Blobs are verified on write and read; auth.json round-trips in the containers format."""

import base64
import json
import os
from pathlib import Path

import pytest

from isle.errors import ImageError, NotFound
from isle.image.auth import get_credentials, remove_credentials, store_credentials
from isle.image.blobs import BlobStore
from isle.oci.image_spec import sha256_digest


def test_blob_write_verifies_digest_and_size(tmp_path: Path) -> None:
    bs = BlobStore(str(tmp_path))
    d = bs.put(b"hello")
    assert d == sha256_digest(b"hello") and bs.get(d) == b"hello"
    with pytest.raises(ImageError, match="digest mismatch"):
        bs.put(b"hello!", expected=sha256_digest(b"other"))
    with bs.writer(sha256_digest(b"abc"), size=4) as w:
        w.write(b"abc")
        with pytest.raises(ImageError, match="size 3, expected 4"):
            w.commit()
    assert sorted(bs.all()) == [d]
    assert os.listdir(bs.tmp_dir) == []  # nothing half-written left


def test_blob_read_detects_corruption(tmp_path: Path) -> None:
    bs = BlobStore(str(tmp_path))
    d = bs.put(b"x" * 5000)
    with open(bs.path(d), "r+b") as f:
        f.write(b"y")
    with pytest.raises(ImageError, match="corrupt"):
        bs.get(d)
    with pytest.raises(ImageError, match="corrupt"):
        b"".join(bs.iter_verified(d))
    with pytest.raises(NotFound):
        bs.get(sha256_digest(b"absent"))


def test_auth_json_roundtrip(tmp_path: Path) -> None:
    af = str(tmp_path / "auth.json")
    assert get_credentials("127.0.0.1:5000", af) is None
    store_credentials("127.0.0.1:5000", "u", "p:w", af)
    d = json.loads(Path(af).read_text())
    assert base64.b64decode(d["auths"]["127.0.0.1:5000"]["auth"]) == b"u:p:w"
    assert os.stat(af).st_mode & 0o777 == 0o600
    assert get_credentials("127.0.0.1:5000", af) == ("u", "p:w")
    assert remove_credentials("127.0.0.1:5000", af)
    assert not remove_credentials("127.0.0.1:5000", af)
    assert get_credentials("127.0.0.1:5000", af) is None
