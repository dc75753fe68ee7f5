"""The pod sandbox image, made offline: a static pause binary from isle's own C source
(kube/pause.c, ``gcc -static``) in a one-layer OCI image, written as an OCI archive that
``ctr -n k8s.io images import`` takes. Same source, same bytes: the layer is reproducible
(fixed mtime, owner and order), so the image id only changes when the binary does."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

from isle.errors import ConfigError
from isle.kube.config import PAUSE_IMAGE
from isle.sys import proc

__all__ = ["SOURCE", "build_pause", "pause_archive"]

SOURCE = os.path.join(os.path.dirname(__file__), "pause.c")


def build_pause(out: str) -> str:
    """Compile kube/pause.c to a static binary at out (kept if already newer than the source)."""
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(SOURCE):
        return out
    if proc.which("gcc") is None:
        raise ConfigError("", "making the pause image needs gcc (Debian: gcc, libc6-dev)")
    tmp = out + ".tmp"
    proc.run(["gcc", "-static", "-O2", "-s", "-o", tmp, SOURCE], timeout=120)
    os.replace(tmp, out)
    return out


def _blob(tf: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _add(tf, "blobs/sha256/" + digest[7:], data)
    return digest, len(data)


def _add(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, 0
    tf.addfile(ti, io.BytesIO(data))


def _layer(binary: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "pause", binary, 0o755)
    return buf.getvalue()


def pause_archive(binary_path: str, out: str, name: str = PAUSE_IMAGE) -> str:
    """Write an OCI archive (oci-layout + index.json + blobs) of the pause image to out;
    returns the manifest digest."""
    with open(binary_path, "rb") as f:
        raw = _layer(f.read())
    gz = gzip.compress(raw, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": ["/pause"], "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"created_by": "isle kube: static pause from kube/pause.c"}]}
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        ldig, lsize = _blob(tf, gz)
        cdig, csize = _blob(tf, json.dumps(config, sort_keys=True).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": cdig, "size": csize},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": ldig, "size": lsize}]}
        mdig, msize = _blob(tf, json.dumps(manifest, sort_keys=True).encode())
        tag = name.rpartition(":")[2]
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": mdig, "size": msize,
                                "platform": {"architecture": "amd64", "os": "linux"},
                                "annotations": {"io.containerd.image.name": name,
                                                "org.opencontainers.image.ref.name": tag}}]}
        _add(tf, "index.json", json.dumps(index, sort_keys=True).encode())
    os.replace(tmp, out)
    return mdig
