"""Store integrity and state permissions (review findings 4, 6 and 10).

Each test is a real attempt, on the real filesystem and kernel, that must fail:

- finding 4: an unprivileged host user runs a set-uid binary out of a running container's
  rootfs (or an image layer), opens an image's device node, reads `-e` secrets from
  config.json, the engine db or the logs;
- finding 6: `isle load` of archives whose digests (diff_ids, descriptors, Layers paths) name
  paths outside the store, or whose layers do not match their digests;
- finding 10: whiteouts (`.wh...`, `.wh..`, `.wh.`) that reach outside the layer being applied.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from isle.errors import ImageError
from isle.image.layers import unpack_layer

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"
SUID_TEE = "/usr/bin/tee"


# -- helpers --------------------------------------------------------------------------------
def _ti(name: str, type_: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = 0o644 if type_ == tarfile.REGTYPE else 0o755
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _tree(d: Path) -> dict[str, tuple]:
    out = {}
    for top, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(top, n)
            s = os.lstat(p)
            out[p] = (s.st_mode, s.st_size, s.st_mtime_ns)
    return out


def _docker_archive(path: Path, layers: list[bytes], diff_ids: list[str], *,
                    layer_names: list[str] | None = None, tag: str = "evil:1") -> Path:
    """A docker-archive (docker save format) with the given layer files and config diff_ids."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    names = layer_names or [f"{_sha(b)[7:]}/layer.tar" for b in layers]
    cfg_name = _sha(cfg)[7:] + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in [(cfg_name, cfg), *zip(names, layers), ("manifest.json", manifest)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def _oci_archive(path: Path, layers: list[tuple[str, bytes]], diff_ids: list[str], *,
                 tag: str = "evil:1", layer_digests: list[str] | None = None) -> Path:
    """An OCI archive; layers are (media type, blob) pairs."""
    blobs: dict[str, bytes] = {}
    descs = []
    for i, (mt, b) in enumerate(layers):
        d = (layer_digests or [])[i] if layer_digests else _sha(b)
        blobs[d] = b
        descs.append({"mediaType": mt, "digest": d, "size": len(b)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    blobs[_sha(cfg)] = cfg
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": _sha(cfg), "size": len(cfg)},
                      "layers": descs}).encode()
    blobs[_sha(man)] = man
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(man),
         "size": len(man), "annotations": {"org.opencontainers.image.ref.name": tag}}]}).encode()
    with tarfile.open(path, "w") as tf:
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        files += [(f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items() if d.startswith("sha256:")
                  and "/" not in d[7:]]
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def _store_state(root: Path) -> tuple[set[str], set[str]]:
    images = root / "images"
    blobs = set(os.listdir(images / "blobs" / "sha256")) if (images / "blobs").exists() else set()
    layers = set(os.listdir(images / "layers")) if (images / "layers").exists() else set()
    return blobs, layers


# -- finding 10: whiteouts stay inside the layer ----------------------------------------------
@pytest.fixture
def layer_in_store(tmp_path: Path) -> tuple[Path, Path]:
    """(a layer dir inside a fake store tmp/, the store's tmp/ with in-progress work in it)."""
    tmpdir = tmp_path / "store" / "tmp"
    (tmpdir / "pull-in-progress").mkdir(parents=True)
    (tmpdir / "pull-in-progress" / "blob").write_text("partial")
    (tmp_path / "store" / "canary").write_text("canary")
    layer = tmpdir / "layer-x"
    layer.mkdir()
    (layer / "keep").write_text("keep")
    return layer, tmp_path / "store"


@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh.", "sub/.wh...", "a/b/.wh..",
                                  "./.wh...", "sub/../.wh..."])
def test_whiteout_cannot_remove_outside_its_directory(layer_in_store, name: str) -> None:
    layer, store = layer_in_store
    before = _tree(store)
    data = _tar([(_ti("sub", tarfile.DIRTYPE), None), (_ti("a/b", tarfile.DIRTYPE), None),
                 (_ti(name), b"")])
    try:
        unpack_layer(io.BytesIO(data), str(layer), "")
    except ImageError as e:
        assert "whiteout" in str(e)
    after = _tree(store)
    # nothing outside the layer changed, and inside only what the layer itself made
    def outside(t: dict[str, tuple]) -> dict[str, tuple]:
        return {p: v for p, v in t.items() if not p.startswith(str(layer))}

    assert outside(after) == outside(before)
    assert (store / "tmp" / "pull-in-progress" / "blob").read_text() == "partial"
    assert (layer / "keep").read_text() == "keep"


def test_load_with_dotdot_whiteout_is_refused_and_store_tmp_survives(isle, tmp_path: Path) -> None:
    isle("images")
    tmpdir = isle.root / "images" / "tmp"
    (tmpdir / "build-in-progress").mkdir(parents=True, exist_ok=True)
    (tmpdir / "build-in-progress" / "canary").write_text("canary")
    before = _store_state(isle.root)
    layer = _tar([(_ti("etc", tarfile.DIRTYPE), None), (_ti(".wh..."), b""),
                  (_ti("etc/.wh.."), b"")])
    arc = _docker_archive(tmp_path / "evil.tar", [layer], [_sha(layer)])
    cp = isle("load", "-i", str(arc), check=False)
    assert cp.returncode != 0
    assert "whiteout" in cp.stderr and "Traceback" not in cp.stderr
    assert (tmpdir / "build-in-progress" / "canary").read_text() == "canary"
    assert _store_state(isle.root) == before
    assert "evil" not in isle("images").stdout


# -- finding 6: digests are validated before they become paths; layers verified ----------------
@pytest.mark.parametrize("bad", ["sha256:../../../../{victim}", "sha256:" + "a" * 63,
                                 "sha256:" + "A" * 64, "sha256:" + "a" * 64 + "\n",
                                 "sha512:" + "a" * 64, "../" + "a" * 64, "sha256:/" + "a" * 63])
def test_load_refuses_diff_ids_that_are_not_digests(isle, tmp_path: Path, bad: str) -> None:
    victim = tmp_path / "host" / "dir"
    (victim / "diff").mkdir(parents=True)
    (victim / "diff" / "secret").write_text("host secret")
    isle("images")
    before = _store_state(isle.root)
    rel = os.path.relpath(victim, isle.root / "images" / "layers")
    layer = _tar([(_ti("hello"), b"hi")])
    arc = _docker_archive(tmp_path / "evil.tar", [layer], [bad.format(victim=rel)])
    cp = isle("load", "-i", str(arc), check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "digest" in cp.stderr
    assert _store_state(isle.root) == before
    assert (victim / "diff" / "secret").read_text() == "host secret"
    assert "evil" not in isle("images").stdout


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "a/../../x"])
def test_load_refuses_layer_paths_outside_the_archive(isle, tmp_path: Path, path: str) -> None:
    layer = _tar([(_ti("hello"), b"hi")])
    arc = _docker_archive(tmp_path / "evil.tar", [layer], [_sha(layer)], layer_names=[path])
    isle("images")
    before = _store_state(isle.root)
    cp = isle("load", "-i", str(arc), check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert _store_state(isle.root) == before


def _zstd(b: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(b)


@pytest.mark.parametrize("comp", ["", "gzip", "zstd"])
def test_docker_archive_layers_are_verified_against_diff_ids(isle, tmp_path: Path,
                                                             comp: str) -> None:
    isle("images")
    before = _store_state(isle.root)
    real = _tar([(_ti("hello"), b"real")])
    evil = _tar([(_ti("hello"), b"evil")])
    blob = {"": evil, "gzip": gzip.compress(evil, mtime=0), "zstd": _zstd(evil)}[comp]
    arc = _docker_archive(tmp_path / "evil.tar", [blob], [_sha(real)])
    cp = isle("load", "-i", str(arc), check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "does not match" in cp.stderr and "layer" in cp.stderr
    assert _store_state(isle.root) == before
    assert "evil" not in isle("images").stdout


def test_archive_cannot_pass_its_layer_off_as_an_existing_one(isle, tmp_path: Path) -> None:
    """A layer of the same diff_id already in the store must not excuse the check."""
    good = _tar([(_ti("hello"), b"good")])
    isle("load", "-i", str(_docker_archive(tmp_path / "good.tar", [good], [_sha(good)],
                                             tag="good:1")))
    evil = _tar([(_ti("hello"), b"evil")])
    for fmt, blob in (("docker", evil), ("docker", gzip.compress(evil, mtime=0)),
                      ("oci", gzip.compress(evil, mtime=0)), ("oci", _zstd(evil))):
        before = _store_state(isle.root)
        if fmt == "docker":
            arc = _docker_archive(tmp_path / "evil.tar", [blob], [_sha(good)])
        else:
            mt = ("application/vnd.oci.image.layer.v1.tar+gzip" if blob[:2] == b"\x1f\x8b"
                  else "application/vnd.oci.image.layer.v1.tar+zstd")
            arc = _oci_archive(tmp_path / "evil.tar", [(mt, blob)], [_sha(good)],
                               tag="docker.io/library/evil:1")
        cp = isle("load", "-i", str(arc), check=False)
        assert cp.returncode != 0 and "Traceback" not in cp.stderr, (fmt, cp.stderr)
        assert "does not match" in cp.stderr
        assert _store_state(isle.root) == before
        assert "evil" not in isle("images").stdout


def test_oci_archive_blob_must_match_its_descriptor(isle, tmp_path: Path) -> None:
    isle("images")
    before = _store_state(isle.root)
    real = gzip.compress(_tar([(_ti("hello"), b"real")]), mtime=0)
    evil = gzip.compress(_tar([(_ti("hello"), b"evil")]), mtime=0)
    diff = _sha(_tar([(_ti("hello"), b"evil")]))
    arc = _oci_archive(tmp_path / "evil.tar",
                       [("application/vnd.oci.image.layer.v1.tar+gzip", evil)], [diff],
                       layer_digests=[_sha(real)], tag="docker.io/library/evil:1")
    cp = isle("load", "-i", str(arc), check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "digest" in cp.stderr
    assert _store_state(isle.root) == before


@pytest.mark.parametrize("bad", ["sha256:../../../etc/passwd", "sha256:" + "0" * 63 + "/"])
def test_oci_descriptor_digests_are_validated(isle, tmp_path: Path, bad: str) -> None:
    layer = gzip.compress(_tar([(_ti("hello"), b"x")]), mtime=0)
    arc = _oci_archive(tmp_path / "evil.tar",
                       [("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
                       [_sha(_tar([(_ti("hello"), b"x")]))], layer_digests=[bad])
    isle("images")
    before = _store_state(isle.root)
    cp = isle("load", "-i", str(arc), check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "not a sha256 digest" in cp.stderr
    assert _store_state(isle.root) == before


# -- finding 4: state is private ----------------------------------------------------------------
@pytest.fixture
def unpriv() -> Iterator[tuple[int, int]]:
    """A throwaway unprivileged host user (uid, gid), removed afterwards."""
    import grp
    import pwd

    name = "islesec" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name).pw_uid, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def _as(user: tuple[int, int], *argv: str, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """argv as the user. The user's own shell resolves and execs argv[0]: setpriv itself
    would exec a path its (root) caller can reach but the user cannot."""
    return subprocess.run(["setpriv", "--reuid", str(user[0]), "--regid", str(user[1]),
                           "--clear-groups", "--", "/bin/sh", "-c", 'exec "$0" "$@"', *argv],
                          capture_output=True, text=True, timeout=30, input=input)


def _suid_image_tar(path: Path) -> Path:
    bb = Path(BUSYBOX).read_bytes()
    data = _tar([
        (_ti("bin", tarfile.DIRTYPE), None),
        (_ti("bin/busybox", mode=0o755), bb),
        (_ti("bin/sh", tarfile.SYMTYPE, linkname="busybox"), None),
        # a set-uid root tee (a host binary: busybox would drop the privilege for its applets)
        (_ti("bin/suid-tee", mode=0o4755, uid=0, gid=0), Path(SUID_TEE).read_bytes()),
        (_ti("opt", tarfile.DIRTYPE), None),
        (_ti("opt/hostnull", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
        (_ti("tmp", tarfile.DIRTYPE, mode=0o1777), None),
    ])
    path.write_bytes(data)
    return path


@pytest.mark.timeout(120)
def test_unprivileged_user_cannot_reach_container_state(tmp_path: Path, unpriv, isle) -> None:
    base = Path(tempfile.mkdtemp(prefix="isle-sec-", dir="/var/tmp"))
    os.chmod(base, 0o755)  # pytest's tmp dirs are 0700: they would hide the state anyway
    isle = type(isle)(base / "root", base / "run")
    canary = tmp_path / "canary"  # root's, 0644: only a euid-0 process can write it
    canary.write_text("untouched")
    os.chmod(canary, 0o644)
    for d in (tmp_path, *tmp_path.parents):  # let the user reach the canary (not the state)
        if str(d) in ("/", "/tmp"):
            break
        os.chmod(d, os.stat(d).st_mode | 0o011)
    secret = "s3cr3t-" + uuid.uuid4().hex
    try:
        isle("import", str(_suid_image_tar(tmp_path / "rootfs.tar")), "suidimg:1")
        cid = isle("run", "-d", "-e", f"SECRET={secret}", "suidimg:1",
                   "/bin/busybox", "sh", "-c", f"echo {secret}; exec sleep 300").stdout.strip()
        assert cid
        root = isle.root
        bundle = root / "containers" / cid
        rootfs = bundle / "rootfs"
        assert (rootfs / "bin" / "suid-tee").exists()  # the container runs: rootfs mounted
        layers = list((root / "images" / "layers").glob("*/diff"))
        targets_exec = [rootfs / "bin" / "suid-tee"] + [
            d / "bin" / "suid-tee" for d in layers if (d / "bin" / "suid-tee").exists()]
        assert len(targets_exec) >= 2
        # 1. a set-uid root binary from the rootfs or a layer: not even reachable
        for t in targets_exec:
            cp = _as(unpriv, str(t), str(canary), input="pwned\n")
            assert cp.returncode != 0, (t, cp.stdout, cp.stderr)
            assert canary.read_text() == "untouched", t
        # 2. an image-supplied device node
        nodes = [rootfs / "opt" / "hostnull"] + [d / "opt" / "hostnull" for d in layers]
        for n in nodes:
            cp = _as(unpriv, BUSYBOX, "sh", "-c", f"echo x > {n} && echo opened")
            assert "opened" not in cp.stdout, n
        # 3. records, specs, logs: the secret is read nowhere
        readable = [bundle / "config.json", root / "isle.db", bundle / "ctr.log",
                    root / "images" / "repositories.json"]
        readable += [p for p in bundle.glob("*") if p.is_file()]
        readable += [p for p in (base / "run").rglob("*") if p.is_file()]
        for f in readable:
            cp = _as(unpriv, BUSYBOX, "cat", str(f))
            assert cp.returncode != 0 and secret not in cp.stdout, f
        cp = _as(unpriv, BUSYBOX, "grep", "-r", secret, str(root), str(base / "run"))
        assert secret not in cp.stdout
        # 4. the modes themselves (podman's: 0700 roots, 0600 records)
        for d in (root, base / "run", root / "images"):
            assert stat.S_IMODE(os.stat(d).st_mode) & 0o077 == 0, d
        for f in (bundle / "config.json", root / "isle.db"):
            assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f
    finally:
        isle.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_existing_world_readable_install_is_tightened_on_next_use(isle) -> None:
    isle("images")
    isle("ps", "-a")
    # an install made by an older isle: world-readable everywhere
    for p in (isle.root, isle.runroot, isle.root / "images"):
        os.chmod(p, 0o755)
    os.chmod(isle.root / "isle.db", 0o644)
    isle("ps", "-a")
    isle("images")
    for p in (isle.root, isle.runroot, isle.root / "images"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o700, p
    assert stat.S_IMODE(os.stat(isle.root / "isle.db").st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        p = isle.root / ("isle.db" + suffix)
        if p.exists():
            assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0


def test_runtime_root_is_private_and_userns_containers_still_start(rt, bundle) -> None:
    """isle-runtime's own --root is 0700 like runc's /run/runc (an older 0711 one is tightened);
    a container whose root maps to an unprivileged host uid still creates and starts (its init
    reaches exec.fifo by fd, not by path)."""
    rt.root.mkdir(mode=0o711)
    os.chmod(rt.root, 0o711)

    def edit(c):
        c["process"]["env"].append("SECRET=runtime-secret")
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]

    b = bundle(["sh", "-c", "sleep 30"], edit)
    rt("create", "-b", str(b), "priv1", stdout=None)
    try:
        assert stat.S_IMODE(os.stat(rt.root).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(rt.root / "priv1").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(rt.root / "priv1" / "state.json").st_mode) == 0o600
        rt("start", "priv1")
        assert rt.state("priv1")["status"] == "running"
    finally:
        rt("delete", "--force", "priv1")


def test_private_bundle_still_serves_the_container_its_etc_files(isle) -> None:
    """config.json is 0600, but the files the container reads through bind mounts (hosts,
    resolv.conf, hostname) stay readable by a non-root user inside it."""
    cp = isle("run", "--rm", "--network", "none", "--user", "1000:1000", "busybox", "sh", "-c",
              "cat /etc/hosts /etc/hostname /etc/resolv.conf >/dev/null && echo ok")
    assert cp.stdout.strip() == "ok"


@pytest.mark.parametrize("link, target", [("d", "d/f"), ("d/f", "d/f"), ("d", "d/e/f")])
def test_hard_link_replacing_its_own_target_is_dropped_cleanly(tmp_path: Path, link: str,
                                                              target: str) -> None:
    """A hard link whose name is its target's directory removed that directory (and the fd the
    link was to be made from) first: it is dropped, not an OSError (found by hypothesis)."""
    (tmp_path / "root").mkdir()
    data = _tar([(_ti("d/e", tarfile.DIRTYPE), None), (_ti("d/f"), b"x"), (_ti("d/e/f"), b"y"),
                 (_ti(link, tarfile.LNKTYPE, linkname=target), None), (_ti("after"), b"ok")])
    _, _, skipped = unpack_layer(io.BytesIO(data), str(tmp_path / "root"), "")
    assert any(n == link for n, _ in skipped)
    assert (tmp_path / "root" / "after").read_text() == "ok"


def test_hard_links_land_in_their_own_directory_past_the_fd_cache_limit(tmp_path: Path) -> None:
    """The unpacker caches directory fds and trims the cache past 200; a trim between resolving
    a hard link's directory and its target's closed the first fd (its number then reused for
    another directory): links failed or landed elsewhere. Every cache size around the limit."""
    for n in range(392, 402):  # (with a limit of 200, n = 397 trimmed mid-link)
        root = tmp_path / f"r{n}"
        root.mkdir()
        entries = [(_ti("p", tarfile.DIRTYPE), None), (_ti("x/y/z/f"), b"target")]
        entries += [(_ti(f"d{i}/f"), b"") for i in range(n)]
        entries += [(_ti("p/q/f"), b""), (_ti("p/q/link", tarfile.LNKTYPE, linkname="x/y/z/f"),
                                            None)]
        _, _, skipped = unpack_layer(io.BytesIO(_tar(entries)), str(root), "")
        assert skipped == [], (n, skipped)
        assert (root / "p" / "q" / "link").read_bytes() == b"target", n
        assert os.stat(root / "p" / "q" / "link").st_ino == os.stat(root / "x/y/z/f").st_ino
        assert sorted(p.name for p in root.rglob("link")) == ["link"], n


def test_oci_layout_dir_with_missing_or_outside_blobs_is_refused(isle, tmp_path: Path) -> None:
    """An OCI layout directory whose blob is missing, or a symlink out of the layout."""
    layer = gzip.compress(_tar([(_ti("hello"), b"x")]), mtime=0)
    arc = _oci_archive(tmp_path / "a.tar", [("application/vnd.oci.image.layer.v1.tar+gzip",
                                             layer)], [_sha(_tar([(_ti("hello"), b"x")]))])
    isle("images")
    before = _store_state(isle.root)
    for attack in ("missing", "symlink"):
        d = tmp_path / f"layout-{attack}"
        with tarfile.open(arc) as tf:
            tf.extractall(d, filter="data")
        blob = d / "blobs" / "sha256" / _sha(layer)[7:]
        blob.unlink()
        if attack == "symlink":
            (tmp_path / "outside").write_bytes(layer)
            blob.symlink_to(tmp_path / "outside")
        cp = isle("load", "-i", str(d), check=False)
        assert cp.returncode != 0 and "Traceback" not in cp.stderr, cp.stderr
        assert _sha(layer)[7:] in cp.stderr
        assert _store_state(isle.root) == before
