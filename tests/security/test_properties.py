"""Property-based tests (hypothesis): whatever the input, the store's parsers and the layer
unpacker stay inside their bounds.

- the unpacker (and the copy fallback that merges layers) never creates, changes or removes
  anything outside the directory it unpacks into, whatever names (``..``, ``/``, ``.wh.``
  variants), symlinks, hard links, directories and devices a tar stream holds;
- digests and references: parsing never raises anything but isle's error, and round-trips;
- image and runtime configs: arbitrary JSON gives isle's error (ImageError / ConfigError), never
  another exception.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isle.errors import ConfigError, ImageError, IsleError
from isle.image.layers import apply_layers, unpack_layer
from isle.image.reference import Reference
from isle.oci import runtime_spec
from isle.oci.image_spec import (
    Index,
    Manifest,
    check_digest,
    config_diff_ids,
    digest_hex,
    is_digest,
    parse_manifest_or_index,
)

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# pure parsing: no mount, cgroup, link or process to leak, so no turn at the host-wide leak-check
# lock (other engineers' runs hold it for minutes)
PURE = pytest.mark.leaks_ok

# -- the layer unpacker ---------------------------------------------------------------------
COMPONENTS = ["a", "b", "c", "..", ".", "", ".wh.", ".wh..", ".wh...", ".wh.a", ".wh.b",
              ".wh..wh..opq", ".wh..wh.x", "link", "canary", "x\\y", "é", " "]
TYPES = ["file", "dir", "symlink", "hardlink", "fifo", "chr", "blk"]


def _names(outside: str) -> st.SearchStrategy[str]:
    rel = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=5).map("/".join)
    return st.one_of(
        rel,
        rel.map(lambda s: "/" + s),  # absolute
        rel.map(lambda s: s + "/"),
        st.just(outside),  # the canary's own absolute path
        st.just(outside + "/victim"),
        st.just("../canary/victim"),
        st.just("../../canary"),
    )


@st.composite
def tar_streams(draw: st.DrawFn, outside: str) -> bytes:
    entries = draw(st.lists(st.tuples(st.sampled_from(TYPES), _names(outside), _names(outside),
                                      st.sampled_from([0o644, 0o755, 0o4755, 0o777, 0o000])),
                            min_size=1, max_size=12))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for kind, name, target, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            data = None
            if kind == "file":
                data = b"pwned " + name.encode("utf-8", "surrogateescape")
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, target
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, target
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                ti.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = (1, 3)  # /dev/null's numbers: harmless if they leak
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _snapshot(top: str, skip: str) -> dict[str, tuple]:
    """Every entry under top except under skip: type, mode, owner, size, mtime, content hash."""
    out: dict[str, tuple] = {}
    for d, dirs, files in os.walk(top):
        if d == skip or d.startswith(skip + "/"):
            dirs[:] = []
            continue
        for n in dirs + files:
            p = os.path.join(d, n)
            if p == skip:
                continue
            s = os.lstat(p)
            h = ""
            if stat.S_ISREG(s.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(s.st_mode):
                h = os.readlink(p)
            out[p] = (s.st_mode, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns, h)
    return out


def _jail() -> tuple[str, str, str]:
    """(base, base/root to unpack into, base/canary beside it) with a canary tree."""
    base = tempfile.mkdtemp(prefix="isle-prop-")
    root = os.path.join(base, "root")
    canary = os.path.join(base, "canary")
    os.makedirs(os.path.join(canary, "dir", "sub"))
    for p in ("victim", "dir/file", "dir/sub/deep"):
        with open(os.path.join(canary, p), "w") as f:
            f.write("canary " + p)
    os.symlink("victim", os.path.join(canary, "ln"))
    os.mkdir(root)
    return base, root, canary


def _unpack(data: bytes, dest: str) -> None:
    try:
        unpack_layer(io.BytesIO(data), dest, "")
    except ImageError:
        pass  # refusing a hostile layer is fine; anything but isle's error is a failure


@pytest.mark.root
@given(data=st.data())
@FAST
def test_unpacker_never_writes_outside_its_root(data: st.DataObject) -> None:
    base, root, canary = _jail()
    try:
        outside = canary  # names and link targets aim at it, absolutely and relatively
        before = _snapshot(base, root)
        _unpack(data.draw(tar_streams(outside)), root)
        assert _snapshot(base, root) == before
        assert sorted(os.listdir(base)) == ["canary", "root"]
    finally:
        shutil.rmtree(base)


@pytest.mark.root
@given(data=st.data())
@FAST
def test_layers_applied_by_copy_never_write_outside_dest(data: st.DataObject) -> None:
    """Two hostile layers unpacked, then merged by the copy fallback (apply_layers)."""
    base, root, canary = _jail()
    try:
        layers = []
        for i in range(2):
            d = os.path.join(root, f"l{i}")
            os.mkdir(d)
            _unpack(data.draw(tar_streams(canary)), d)
            layers.append(d)
        dest = os.path.join(root, "dest")
        os.mkdir(dest)
        before = _snapshot(base, root)
        try:
            apply_layers(layers, dest)
        except OSError:
            pass
        assert _snapshot(base, root) == before
        assert sorted(os.listdir(base)) == ["canary", "root"]
    finally:
        shutil.rmtree(base)


# -- digests and references ----------------------------------------------------------------
HEX = "0123456789abcdef"
digests = st.text(alphabet=HEX, min_size=64, max_size=64).map(lambda h: "sha256:" + h)
digestish = st.one_of(
    digests,
    st.text(max_size=80),
    st.builds(lambda a, h: f"{a}:{h}", st.sampled_from(["sha256", "sha512", "SHA256", "", "md5"]),
              st.text(alphabet=HEX + "ABCDEF/.\n\0-", min_size=0, max_size=130)),
    digests.map(lambda d: d + "\n"),
    digests.map(lambda d: d[:-1] + "/"),
)


@PURE
@given(digestish)
@FAST
def test_digest_validation_admits_only_sha256_hex(v: str) -> None:
    try:
        hexpart = digest_hex(v, "field")
    except ImageError as e:
        assert "field" in str(e)
        assert not is_digest(v)
        return
    assert is_digest(v) and check_digest(v, "x") == v
    assert len(hexpart) == 64 and set(hexpart) <= set(HEX)
    assert os.path.basename(hexpart) == hexpart and ".." not in hexpart


components = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True).filter(
    lambda s: len(s) < 40)
registries = st.one_of(st.just(""), st.sampled_from(["localhost", "localhost:5000", "quay.io",
                                                     "127.0.0.1:5000", "registry-1.docker.io",
                                                     "index.docker.io", "docker.io", "a.b-c.d"]))
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True)


@st.composite
def references(draw: st.DrawFn) -> str:
    reg = draw(registries)
    parts = draw(st.lists(components, min_size=1, max_size=3))
    if not reg and len(parts) > 1 and ("." in parts[0] or parts[0] == "localhost"):
        reg = "docker.io"  # a first component with a dot names a registry (Docker's rule)
    repo = "/".join(parts)
    s = f"{reg}/{repo}" if reg else repo
    if draw(st.booleans()):
        s += ":" + draw(tags)
    if draw(st.booleans()):
        s += "@" + draw(digests)
    return s


def _check_roundtrip(r: Reference) -> None:
    again = Reference.parse(str(r))
    assert again == r
    assert Reference.parse(r.familiar) == r
    assert "\n" not in str(r) and " " not in str(r)


@PURE
@given(st.one_of(st.text(max_size=120), references()))
@FAST
def test_reference_parse_raises_only_config_error_and_round_trips(s: str) -> None:
    try:
        r = Reference.parse(s)
    except ConfigError:
        return
    _check_roundtrip(r)


@PURE
@given(references())
@FAST
def test_valid_references_parse_and_round_trip(s: str) -> None:
    _check_roundtrip(Reference.parse(s))


# -- configs: arbitrary JSON gives isle's error ----------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20) | digests,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)

MANIFEST_KEYS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "annotations",
                 "digest", "size", "platform", "urls", "rootfs", "diff_ids", "os",
                 "architecture"]


@st.composite
def shaped(draw: st.DrawFn) -> object:
    """JSON that looks like a manifest/index/descriptor/config, with random values."""
    keys = st.sampled_from(MANIFEST_KEYS)
    leaf = st.one_of(json_values, st.sampled_from([
        2, "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip", "sha256:../../etc",
    ]), digests)
    obj = st.recursive(leaf, lambda c: st.lists(c, max_size=3)
                       | st.dictionaries(keys, c, max_size=6), max_leaves=30)
    return draw(st.dictionaries(keys, obj, max_size=6))


@PURE
@given(st.one_of(json_values, shaped()))
@FAST
def test_image_spec_parsers_raise_only_image_error(v: object) -> None:
    raw = json.dumps(v).encode()
    for fn in (lambda: parse_manifest_or_index(raw),
               lambda: parse_manifest_or_index(raw, "application/vnd.oci.image.index.v1+json"),
               lambda: Manifest.from_dict(v),  # type: ignore[arg-type]
               lambda: Index.from_dict(v),  # type: ignore[arg-type]
               lambda: config_diff_ids(v),
               lambda: config_diff_ids(raw)):
        try:
            out = fn()
        except ImageError:
            continue
        if isinstance(out, list):
            assert all(is_digest(d) for d in out)
        elif isinstance(out, Manifest):
            assert all(is_digest(d.digest) for d in (out.config, *out.layers))
        elif isinstance(out, Index):
            assert all(is_digest(d.digest) for d in out.manifests)


@PURE
@given(st.binary(max_size=200))
@FAST
def test_image_spec_parsers_take_any_bytes(raw: bytes) -> None:
    for fn in (lambda: parse_manifest_or_index(raw), lambda: config_diff_ids(raw)):
        try:
            fn()
        except ImageError:
            pass


RUNTIME_KEYS = ["ociVersion", "process", "root", "hostname", "mounts", "linux", "hooks",
                "annotations", "args", "env", "cwd", "user", "uid", "gid", "capabilities",
                "rlimits", "namespaces", "type", "path", "uidMappings", "resources",
                "devices", "seccomp", "maskedPaths", "readonlyPaths", "destination", "source",
                "options", "terminal", "noNewPrivileges", "sysctl", "cgroupsPath"]


@st.composite
def runtime_shaped(draw: st.DrawFn) -> object:
    keys = st.sampled_from(RUNTIME_KEYS)
    leaf = st.one_of(json_values, st.sampled_from(["1.0.2", "/", "/proc", "proc", "pid",
                                                   "network", "CAP_SYS_ADMIN", "RLIMIT_NOFILE"]))
    obj = st.recursive(leaf, lambda c: st.lists(c, max_size=3)
                       | st.dictionaries(keys, c, max_size=6), max_leaves=40)
    return draw(st.dictionaries(keys, obj, max_size=8))


@PURE
@given(st.one_of(json_values, runtime_shaped()))
@FAST
def test_runtime_spec_validate_raises_only_config_error(v: object) -> None:
    try:
        runtime_spec.validate(v)
    except ConfigError:
        pass


@PURE
@given(st.one_of(json_values, runtime_shaped()), st.binary(max_size=60))
@FAST
def test_runtime_spec_load_raises_only_config_error(v: object, junk: bytes) -> None:
    fd, path = tempfile.mkstemp(prefix="isle-prop-", suffix=".json")
    try:
        os.write(fd, json.dumps(v).encode() + (junk if junk[:1] == b"\xff" else b""))
        os.close(fd)
        try:
            runtime_spec.load(path)
        except ConfigError:
            pass
    finally:
        os.unlink(path)


@PURE
def test_errors_are_isle_errors() -> None:
    assert issubclass(ImageError, IsleError) and issubclass(ConfigError, IsleError)


# -- the archive loader: any docker-archive gives a loaded image or isle's error, and a failed
# -- load leaves the store (and everything beside it) as it was
def _member_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["layer.tar", "l/layer.tar", "../layer.tar", "/etc/passwd",
                                      "a/../../x", "", ".", "cfg.json", "manifest.json"]),
                     st.text(max_size=12))


@st.composite
def docker_archives(draw: st.DrawFn) -> bytes:
    good = _plain_tar(draw(st.sampled_from([b"a", b"b"])))
    layer = draw(st.sampled_from([good, gzip_bytes(good), b"junk" * 200, b"",
                                  _plain_tar(b"c", ".wh..."), _plain_tar(b"d", "../x")]))
    real_diff = "sha256:" + hashlib.sha256(good).hexdigest()
    diff = draw(st.one_of(st.just(real_diff), digestish))
    cfg_obj = draw(st.one_of(
        st.just({"rootfs": {"type": "layers", "diff_ids": [diff]}}),
        st.just({"rootfs": {"diff_ids": [diff, diff]}}), json_values, shaped()))
    cfg = json.dumps(cfg_obj).encode()
    cfg_name = draw(st.one_of(st.just("cfg.json"), _member_names()))
    layer_name = draw(st.one_of(st.just("l/layer.tar"), _member_names()))
    entry = draw(st.one_of(
        st.just({"Config": cfg_name, "RepoTags": ["prop:1"], "Layers": [layer_name]}),
        st.fixed_dictionaries({"Config": st.one_of(st.just(cfg_name), json_values),
                               "RepoTags": st.one_of(st.just(["prop:1"]), json_values),
                               "Layers": st.one_of(st.just([layer_name]), json_values)}),
        json_values))
    manifest = json.dumps(draw(st.one_of(st.just([entry]), json_values))).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("cfg.json", cfg), ("l/layer.tar", layer), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _plain_tar(content: bytes, name: str = "f") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime = len(content), 0
        tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def gzip_bytes(b: bytes) -> bytes:
    import gzip

    return gzip.compress(b, mtime=0)


@pytest.mark.root
@given(docker_archives())
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_load_of_any_docker_archive_is_all_or_nothing(arc: bytes) -> None:
    from isle.image.archive import load
    from isle.image.store import ImageStore

    base, root, canary = _jail()
    try:
        store = ImageStore(os.path.join(root, "images"))
        before_out = _snapshot(base, root)
        store_dirs = [store.blobs.dir, store.layers_dir]
        before = [sorted(os.listdir(d)) for d in store_dirs]
        index_before = store._read_index()
        try:
            load(store, io.BytesIO(arc))
        except IsleError:
            assert [sorted(os.listdir(d)) for d in store_dirs] == before
            assert store._read_index() == index_before
            assert os.listdir(store.blobs.tmp_dir) == [] or all(
                not n.startswith(("blob-", "load-")) for n in os.listdir(store.blobs.tmp_dir))
        assert _snapshot(base, root) == before_out
        assert sorted(os.listdir(base)) == ["canary", "root"]
    finally:
        shutil.rmtree(base)
