"""runtime/vm/guestfs (pure parts) and the writable-layer disk: the guest scripts, the layer's
path from config.json, the refusals that need no VM, and the sparse layer file and its copy."""

from __future__ import annotations

import json
import os

import pytest

from isle.config import Settings
from isle.errors import ConfigError, Unsupported, VMError
from isle.runtime.vm import guestfs
from isle.vm import disk


def test_scripts_resolve_inside_the_root_and_quote_their_arguments() -> None:
    out = guestfs.script("out", ("/a b/$(reboot)",))
    assert "busybox chroot /isle-root" in out and "mount --bind /newroot /isle-root" in out
    assert "'/a b/$(reboot)'" in out  # one shell word, never expanded
    assert guestfs.script("in", ("/d/", "1", "0", "x y")).rstrip().endswith("/d/ 1 0 'x y'")
    assert "tar -c" in guestfs.script("upper") and "/rw/upper" in guestfs.script("upper")
    assert "--bind /newroot" in guestfs.script("export")
    for op, args in (("rm", ()), ("out", ()), ("in", ("/x",))):
        with pytest.raises(ConfigError):
            guestfs.script(op, args)


def test_upper_path_is_absolute_or_refused() -> None:
    assert guestfs.upper_path({}) == ""
    assert guestfs.upper_path({"annotations": {"org.isle.vm.upper": "/b/u.ext4"}}) == "/b/u.ext4"
    with pytest.raises(ConfigError, match="absolute"):
        guestfs.upper_path({"annotations": {"org.isle.vm.upper": "u.ext4"}})


def _bundle(tmp_path, ann: dict[str, str]) -> str:
    b = tmp_path / "b"
    (b / "rootfs").mkdir(parents=True)
    (b / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": ann,
                                               "root": {"path": "rootfs"},
                                               "process": {"args": ["true"], "cwd": "/"}}))
    return str(b)


def test_a_stopped_container_without_a_kept_layer_or_in_a_pod_is_refused(tmp_path) -> None:
    s = Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"))
    b = _bundle(tmp_path, {"io.kubernetes.cri.container-type": "container"})
    with pytest.raises(Unsupported, match="pod"):
        guestfs.run_op("c1", str(tmp_path / "state"), s, b, "upper", (), -1, 1)
    b2 = tmp_path / "b2"
    os.rename(b, b2)
    (b2 / "config.json").write_text((b2 / "config.json").read_text().replace(
        '"io.kubernetes.cri.container-type": "container"', '"x": "y"'))
    with pytest.raises(VMError, match="kept no writable layer"):
        guestfs.run_op("c1", str(tmp_path / "state"), s, str(b2), "upper", (), -1, 1)


def test_the_layer_file_is_sparse_bounded_and_copied_with_its_holes(tmp_path) -> None:
    p = str(tmp_path / "u.ext4")
    disk.upper_image(p, 64)
    st = os.stat(p)
    assert st.st_size == 64 << 20 and st.st_blocks * 512 < 4 << 20 and st.st_mode & 0o077 == 0
    disk.copy_sparse(p, str(tmp_path / "c.ext4"))
    c = os.stat(tmp_path / "c.ext4")
    assert c.st_size == st.st_size and c.st_blocks * 512 < 4 << 20
    assert (tmp_path / "c.ext4").read_bytes() == (tmp_path / "u.ext4").read_bytes()
    with pytest.raises(ConfigError, match="upper-size"):
        disk.upper_image(str(tmp_path / "x.ext4"), 4)
    assert not os.path.exists(tmp_path / "x.ext4")
