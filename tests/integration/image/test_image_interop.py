"""Interop with the ecosystem's own tools: skopeo, podman, and archives in both directions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from isle.image.build.runspec import run_in_bundle, run_spec
from isle.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.podman]


@pytest.fixture
def podman(podman_prefix) -> list[str]:
    d = tempfile.mkdtemp(prefix="ipod", dir="/tmp")  # podman wants a runroot < 50 chars
    prefix = podman_prefix(d)
    yield prefix
    subprocess.run([*prefix, "rm", "-af"], capture_output=True, timeout=60)
    subprocess.run([*prefix, "system", "reset", "-f"], capture_output=True, timeout=60)
    shutil.rmtree(d, ignore_errors=True)


def sh(*argv: str, timeout: float = 120) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, f"{argv}: {cp.stderr[-1500:]}"
    return cp.stdout


def run_with_runc(store: ImageStore, ref: str, work: Path, args: list[str]) -> str:
    """Run an isle image's rootfs under runc, as the engine would (bundle + config.json)."""
    img = store.resolve(ref)
    store.mount_rootfs(img, str(work))
    lines: list[str] = []
    try:
        env = img.config.get("config", {}).get("Env") or ["PATH=/bin:/usr/bin"]
        run_in_bundle(
            "runc",
            str(work / "state"),
            str(work),
            "isle-test-" + os.urandom(4).hex(),
            run_spec(args, env, "/", 0, 0),
            lines.append,
        )
    finally:
        store.unmount_rootfs(str(work))
    return "\n".join(lines)


@pytest.mark.registry
def test_isle_push_skopeo_copy_podman_run(registry, tmp_path: Path, isle_at, podman) -> None:
    root = tmp_path / "isle"
    ref = f"{registry.addr}/interop/from-isle:1"
    isle_at(root, "tag", "busybox", ref)
    isle_at(root, "push", ref, "--tls-verify=false")
    oci = tmp_path / "oci"
    sh("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:x")
    idx = json.loads((oci / "index.json").read_text())
    assert idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "x"
    sh(*podman, "pull", "--tls-verify=false", ref)
    out = sh(
        *podman,
        "run",
        "--rm",
        "--network=none",
        ref,
        "sh",
        "-c",
        "echo ran-under-podman; ls /bin | wc -l",
    )
    assert out.split()[0] == "ran-under-podman" and int(out.split()[1]) > 50


@pytest.mark.registry
def test_skopeo_push_isle_pull_and_run(registry, tmp_path: Path, isle_at) -> None:
    root = tmp_path / "isle"
    store = ImageStore(str(root / "images"))
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "unique").write_bytes(os.urandom(64))  # new blobs: skopeo must recompress
    store.commit(str(tmp_path / "u"), store.resolve("busybox"), {}, names=["uniq:1"])
    isle_at(root, "save", "-o", str(tmp_path / "bb.tar"), "uniq:1")
    isle_at(root, "save", "--format", "oci-archive", "-o", str(tmp_path / "bb-oci.tar"), "busybox")
    ref1 = f"{registry.addr}/interop/from-skopeo-docker:1"
    ref2 = f"{registry.addr}/interop/from-skopeo-oci:1"
    sh(
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress",
        "--dest-compress-format=zstd",
        f"docker-archive:{tmp_path / 'bb.tar'}",
        f"docker://{ref1}",
    )
    sh(
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        f"oci-archive:{tmp_path / 'bb-oci.tar'}:docker.io/library/busybox:latest",
        f"docker://{ref2}",
    )
    other = tmp_path / "other"
    for ref in (ref1, ref2):
        isle_at(other, "pull", ref, "--tls-verify=false")
    store = ImageStore(str(other / "images"))
    zimg = store.resolve(ref1)
    assert zimg.manifest.layers[-1].media_type.endswith("+zstd")  # the new layer; the base
    # layer skopeo found in the registry already, gzip: one image, mixed compression
    out = run_with_runc(store, ref1, tmp_path / "w1", ["sh", "-c", "echo isle-ran-it"])
    assert out.strip() == "isle-ran-it"
    out = run_with_runc(store, ref2, tmp_path / "w2", ["cat", "/etc/hostname"])
    assert out.strip() == "busybox"


def test_save_load_with_podman_both_ways(tmp_path: Path, isle_at, podman) -> None:
    root = tmp_path / "isle"
    isle_at(root, "tag", "busybox", "example.org/isle/saved:3")
    dock, oci, ocidir = tmp_path / "d.tar", tmp_path / "o.tar", tmp_path / "odir"
    isle_at(root, "save", "-o", str(dock), "example.org/isle/saved:3")
    isle_at(root, "save", "--format", "oci-archive", "-o", str(oci), "example.org/isle/saved:3")
    isle_at(root, "save", "--format", "oci-dir", "-o", str(ocidir), "busybox")
    names = tarfile.open(dock).getnames()
    assert "manifest.json" in names and any(n.endswith("/layer.tar") for n in names)
    assert "example.org/isle/saved:3" in sh(*podman, "load", "-i", str(dock))
    sh(*podman, "rmi", "example.org/isle/saved:3")
    assert "example.org/isle/saved:3" in sh(*podman, "load", "-i", str(oci))
    out = sh(
        *podman, "run", "--rm", "--network=none", "example.org/isle/saved:3", "echo", "loaded-ok"
    )
    assert out.strip() == "loaded-ok"
    insp = json.loads(sh("skopeo", "inspect", f"oci:{ocidir}:docker.io/library/busybox:latest"))
    assert insp["Layers"] and insp["Architecture"] == "amd64"
    # and back: what podman writes, isle loads
    sh(*podman, "tag", "example.org/isle/saved:3", "localhost/from-podman:1")
    for fmt in ("docker-archive", "oci-archive"):
        p = tmp_path / f"pod-{fmt}.tar"
        sh(*podman, "save", "--format", fmt, "-o", str(p), "localhost/from-podman:1")
        fresh = tmp_path / f"fresh-{fmt}"
        out = isle_at(fresh, "load", "-i", str(p)).stdout.decode()
        assert "localhost/from-podman:1" in out
        img = ImageStore(str(fresh / "images")).resolve("localhost/from-podman:1")
        assert (Path(img.layer_dirs[0]) / "bin" / "busybox").exists()
    bad = isle_at(
        tmp_path / "x", "load", "-i", str(tmp_path / "pod-docker-archive.tar") + "nope", check=False
    )
    assert bad.returncode != 0


def test_import_rootfs_tarball(tmp_path: Path, isle_at) -> None:
    src = tmp_path / "rootfs"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("imported\n")
    os.symlink("motd", src / "etc" / "link")
    tgz = tmp_path / "rootfs.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(src, ".")
    root = tmp_path / "isle"
    iid = (
        isle_at(
            root,
            "import",
            str(tgz),
            "imported:1",
            "-c",
            'CMD ["/bin/cat", "/etc/motd"]',
            "-c",
            "ENV A=b",
            "-m",
            "from a tarball",
        )
        .stdout.decode()
        .strip()
    )
    img = ImageStore(str(root / "images")).resolve("imported:1")
    assert img.id == iid and img.config["config"] == {
        "Cmd": ["/bin/cat", "/etc/motd"],
        "Env": ["A=b"],
    }
    assert (Path(img.layer_dirs[0]) / "etc" / "motd").read_text() == "imported\n"
    assert os.readlink(Path(img.layer_dirs[0]) / "etc" / "link") == "motd"
    assert img.config["history"][0]["comment"] == "from a tarball"
    with open(tgz, "rb") as f:
        iid2 = isle_at(root, "import", "-", input=f.read()).stdout.decode().strip()
    assert iid2.startswith("sha256:")
    bad = isle_at(root, "import", "-", input=b"this is not a tarball" * 50, check=False)
    assert bad.returncode != 0 and b"neither tar" in bad.stderr
    # export helper: a directory as a plain rootfs tar
    out = tmp_path / "export.tar"
    with open(out, "wb") as f:
        ImageStore.tar_directory(str(src), f)
    assert sorted(tarfile.open(out).getnames()) == ["etc", "etc/link", "etc/motd"]


def test_the_store_is_an_oci_layout_skopeo_reads(tmp_path: Path, isle_at) -> None:
    root = tmp_path / "isle"
    isle_at(root, "tag", "busybox", "example.org/layout/x:5")
    insp = json.loads(sh("skopeo", "inspect", f"oci:{root / 'images'}:example.org/layout/x:5"))
    img = ImageStore(str(root / "images")).resolve("example.org/layout/x:5")
    assert insp["Digest"] == img.digest and insp["Layers"] == [img.manifest.layers[0].digest]
    sh(
        "skopeo",
        "copy",
        f"oci:{root / 'images'}:docker.io/library/busybox:latest",
        f"dir:{tmp_path / 'copy'}",
    )
    assert (tmp_path / "copy" / img.manifest.layers[0].digest[7:]).exists()


def test_load_rejects_a_tampered_archive_and_leaves_the_store_alone(tmp_path: Path, isle_at) -> None:
    import io

    src = tmp_path / "src"
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "f").write_text("second layer")
    st = ImageStore(str(src / "images"))
    st.commit(str(tmp_path / "u"), st.resolve("busybox"), {}, names=["two:1"])
    good = tmp_path / "good.tar"
    isle_at(src, "save", "-o", str(good), "two:1")
    bad = tmp_path / "bad.tar"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as t:
        ti = tarfile.TarInfo("f")
        ti.size = 5
        t.addfile(ti, io.BytesIO(b"evil!"))
    with tarfile.open(good) as tin, tarfile.open(bad, "w") as tout:
        layers = json.load(tin.extractfile("manifest.json"))[0]["Layers"]
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if m.name == layers[-1]:  # swap the last layer's content
                data = evil.getvalue()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    dst = tmp_path / "dst"
    isle_at(dst, "image", "inspect", "busybox")
    before = sorted(p for p in os.listdir(dst / "images" / "blobs" / "sha256"))
    cp = isle_at(dst, "load", "-i", str(bad), check=False)
    assert cp.returncode != 0 and b"does not match" in cp.stderr
    assert sorted(os.listdir(dst / "images" / "blobs" / "sha256")) == before
    assert len(os.listdir(dst / "images" / "layers")) == 1
    assert [i.names for i in ImageStore(str(dst / "images")).list()] == [
        ["docker.io/library/busybox:latest"]
    ]
    assert b"two:1" in isle_at(dst, "load", "-i", str(good)).stdout
