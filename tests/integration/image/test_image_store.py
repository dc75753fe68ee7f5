"""The store on the real kernel: offline busybox, overlay rootfs, commit, names, rmi, prune, CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from isle.config import Settings
from isle.errors import InvalidState, NotFound
from isle.image.mount import is_mounted
from isle.image.store import ImageStore

pytestmark = pytest.mark.root


@pytest.fixture
def store(settings: Settings) -> ImageStore:
    return ImageStore.from_settings(settings)


def test_busybox_offline_is_reproducible_and_runs(store: ImageStore, tmp_path: Path) -> None:
    img = store.resolve("busybox")
    assert img.names == ["docker.io/library/busybox:latest"]
    assert img.config["config"]["Cmd"] == ["sh"]
    assert store.resolve("busybox:latest").id == img.id == store.resolve(img.short_id).id
    other = ImageStore(str(tmp_path / "other"))
    assert other.resolve("docker.io/library/busybox").id == img.id  # same bytes, same id
    work = tmp_path / "c1"
    rootfs = store.mount_rootfs(img, str(work))
    try:
        assert is_mounted(rootfs)
        out = subprocess.run(
            ["chroot", rootfs, "/bin/sh", "-c", "echo hi; id -u; cat /etc/passwd"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.startswith("hi\n0\nroot:x:0:0")
    finally:
        store.unmount_rootfs(str(work))
    assert not is_mounted(rootfs)
    with pytest.raises(NotFound, match="nosuch"):
        store.resolve("nosuch:1")


def test_commit_captures_changes_and_deletions(store: ImageStore, tmp_path: Path) -> None:
    base = store.resolve("busybox")
    work = tmp_path / "c"
    rootfs = store.mount_rootfs(base, str(work))
    try:
        subprocess.run(
            [
                "chroot",
                rootfs,
                "/bin/sh",
                "-c",
                "echo new > /new; rm /etc/hostname; rm -rf /home; mkdir /home; "
                "chmod 4711 /new; mknod /dev-null c 1 3",
            ],
            check=True,
        )
    finally:
        store.unmount_rootfs(str(work))
    img = store.commit(
        str(work / "upper"),
        base,
        {"Cmd": ["cat", "/new"], "User": "0"},
        names=["mine:v1"],
        created_by="test commit",
        comment="c",
    )
    assert img.config["config"]["Cmd"] == ["cat", "/new"]
    assert img.config["config"]["Env"] == base.config["config"]["Env"]
    assert len(img.layer_dirs) == 2 and img.layer_dirs[0] == base.layer_dirs[0]
    assert img.config["history"][-1]["created_by"] == "test commit"
    w2 = tmp_path / "c2"
    r2 = store.mount_rootfs(img, str(w2))
    try:
        assert (Path(r2) / "new").read_text() == "new\n"
        assert stat.S_IMODE(os.stat(Path(r2) / "new").st_mode) == 0o4711
        assert not (Path(r2) / "etc" / "hostname").exists()
        assert stat.S_ISCHR(os.stat(Path(r2) / "dev-null").st_mode)
    finally:
        store.unmount_rootfs(str(w2))


def test_copy_fallback_gives_the_same_tree(store: ImageStore, tmp_path: Path) -> None:
    img = store.resolve("busybox")
    rootfs = store.mount_rootfs(img, str(tmp_path / "cp"), copy=True)
    assert not is_mounted(rootfs)
    assert os.readlink(Path(rootfs) / "bin" / "ls") == "/bin/busybox"
    assert (Path(rootfs) / "etc" / "passwd").read_text().startswith("root:")
    store.unmount_rootfs(str(tmp_path / "cp"))  # a no-op, no error


def test_names_rmi_in_use_and_prune(store: ImageStore) -> None:
    img = store.resolve("busybox")
    store.tag("busybox", "localhost:5000/a/b:1")
    store.tag("busybox", "extra")
    assert sorted(store.resolve(img.id).names) == [
        "docker.io/library/busybox:latest",
        "docker.io/library/extra:latest",
        "localhost:5000/a/b:1",
    ]
    assert store.remove("extra") == ["Untagged: extra:latest"]
    with pytest.raises(InvalidState, match="several names"):
        store.remove(img.short_id)
    store.set_users_callback(lambda iid: ["c0ffee" * 4] if iid == img.id else [])
    store.remove("localhost:5000/a/b:1")
    with pytest.raises(InvalidState, match="in use by container.*c0ffeec0ffee"):
        store.remove("busybox")
    assert store.prune(all_images=True) == []  # in use: kept
    assert store.remove("busybox", force=True) == ["Untagged: busybox:latest"]
    kept = store.resolve(img.id)  # forced while in use: untagged, layers kept
    assert kept.names == [] and all(os.path.isdir(d) for d in kept.layer_dirs)
    assert store.prune() == []  # still in use
    store.set_users_callback(lambda iid: [])
    assert store.prune() == [img.id]
    assert store.list() == [] and os.listdir(store.layers_dir) == []
    assert store.blobs.all() == []  # gc removed the blobs


def test_prune_removes_dangling_only(store: ImageStore, tmp_path: Path) -> None:
    base = store.resolve("busybox")
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "f").write_text("x")
    dangling = store.commit(str(tmp_path / "u"), base, {})
    assert store.prune() == [dangling.id]
    assert [i.id for i in store.list()] == [base.id]


def test_cli_images_listing(tmp_root: Path, isle_at) -> None:
    isle_at(tmp_root, "image", "inspect", "busybox")  # materialises busybox
    isle_at(tmp_root, "tag", "busybox", "example.com/x/y:2")
    out = isle_at(tmp_root, "images").stdout.decode().splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert {tuple(line.split()[:2]) for line in out[1:]} == {
        ("busybox", "latest"),
        ("example.com/x/y", "2"),
    }
    ids = isle_at(tmp_root, "images", "-q").stdout.decode().split()
    assert len(ids) == 1 and len(ids[0]) == 12
    rows = [json.loads(x) for x in isle_at(tmp_root, "images", "--format", "json").stdout.splitlines()]
    assert {r["Repository"] for r in rows} == {"busybox", "example.com/x/y"}
    f = isle_at(tmp_root, "images", "--filter", "reference=example.com/*/*", "--format", "json").stdout
    assert [json.loads(x)["Tag"] for x in f.splitlines()] == ["2"]
    assert isle_at(tmp_root, "images", "--filter", "dangling=true", "-q").stdout == b""
    assert "DIGEST" in isle_at(tmp_root, "images", "--digests").stdout.decode()
    insp = json.loads(isle_at(tmp_root, "image", "inspect", "example.com/x/y:2").stdout)
    assert insp[0]["RepoTags"] == ["busybox:latest", "example.com/x/y:2"]
    assert insp[0]["Config"]["Cmd"] == ["sh"] and insp[0]["RootFS"]["Type"] == "layers"
    hist = isle_at(tmp_root, "history", "busybox").stdout.decode()
    assert "busybox-static" in hist
    bad = isle_at(tmp_root, "image", "inspect", "nope", check=False)
    assert bad.returncode == 1 and b"nope" in bad.stderr
    bad = isle_at(tmp_root, "images", "--filter", "colour=red", check=False)
    assert bad.returncode == 1 and b"filter" in bad.stderr
    assert b"Untagged: example.com/x/y:2" in isle_at(tmp_root, "rmi", "example.com/x/y:2").stdout


def test_many_layers_still_mount_with_overlay(store: ImageStore, tmp_path: Path) -> None:
    img = store.resolve("busybox")
    for i in range(60):  # > one page of absolute lowerdir paths
        u = tmp_path / f"u{i}"
        u.mkdir()
        (u / f"f{i}").write_text(str(i))
        img = store.commit(str(u), img, {}, names=["tall:1"])
    work = tmp_path / "w"
    rootfs = Path(store.mount_rootfs(img, str(work)))
    try:
        assert is_mounted(str(rootfs))
        assert (rootfs / "f0").read_text() == "0" and (rootfs / "f59").read_text() == "59"
    finally:
        store.unmount_rootfs(str(work))


def test_names_win_over_id_prefixes(store: ImageStore, tmp_path: Path) -> None:
    base = store.resolve("busybox")
    (tmp_path / "u").mkdir()
    other = store.commit(str(tmp_path / "u"), base, {"Cmd": ["x"]})
    prefix = other.id[7:11]
    store.tag("busybox", prefix)  # an image *named* like the other's id
    assert store.resolve(prefix).id == base.id
    assert store.resolve(other.id[7:20]).id == other.id
    assert store.resolve(other.id).id == other.id
    with pytest.raises(NotFound):
        store.resolve("sha256:" + "0" * 64)


def test_a_corrupt_record_is_reported_and_gc_deletes_nothing(
    store: ImageStore, tmp_path: Path
) -> None:
    from isle.errors import ImageError

    base = store.resolve("busybox")
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "f").write_text("x")
    other = store.commit(str(tmp_path / "u"), base, {"Cmd": ["y"]}, names=["other:1"])
    with open(store.blobs.path(other.id), "r+b") as f:  # corrupt its config
        f.write(b"#")
    with pytest.raises(ImageError, match=f"blob {other.id}: stored content is corrupt"):
        store.resolve("other:1")
    assert [i.id for i in store.list()] == [base.id]
    blobs, layers = sorted(store.blobs.all()), sorted(os.listdir(store.layers_dir))
    assert store.gc() == (0, 0)
    assert sorted(store.blobs.all()) == blobs and sorted(os.listdir(store.layers_dir)) == layers
