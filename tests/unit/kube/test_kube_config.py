"""isle kube config: containerd's config.toml and the CNI conflist (pure), the pause archive."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from isle.kube.config import HANDLERS, PAUSE_IMAGE, Node, cni_conflist, containerd_config

REPO = Path(__file__).resolve().parents[3]
CRI = "io.containerd.grpc.v1.cri"


def test_private_node_config_keeps_everything_under_its_dir(tmp_path: Path) -> None:
    d = str(tmp_path / "node")
    n = Node.under(d, registries=("127.0.0.1:5000",),
                   mirrors=(("registry.k8s.io", "127.0.0.1:5000"),))
    cfg = tomllib.loads(containerd_config(n))
    assert cfg["version"] == 2
    assert cfg["root"].startswith(d) and cfg["state"].startswith(d)
    assert cfg["grpc"]["address"] == d + "/containerd.sock"
    cri = cfg["plugins"][CRI]
    assert cri["sandbox_image"] == PAUSE_IMAGE
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni" and cri["cni"]["conf_dir"].startswith(d)
    rts = cri["containerd"]["runtimes"]
    assert set(rts) == set(HANDLERS) == {"runc", "isle", "isle-vm"}
    for h, binary in HANDLERS.items():
        assert rts[h]["runtime_type"] == "io.containerd.runc.v2"
        opts = rts[h]["options"]
        assert opts["BinaryName"].endswith("/" + binary) and opts["BinaryName"].startswith("/")
        assert opts["Root"].startswith(d) and opts["SystemdCgroup"] is False
    assert cri["registry"]["mirrors"]["registry.k8s.io"]["endpoint"] == ["http://127.0.0.1:5000"]
    other = Node.under(str(tmp_path / "other"))
    assert other.bridge != n.bridge and len(n.bridge) <= 15  # IFNAMSIZ


def test_system_node_and_cli(tmp_path: Path) -> None:
    cfg = tomllib.loads(containerd_config(Node.system()))
    assert cfg["grpc"]["address"] == "/run/containerd/containerd.sock"
    assert cfg["plugins"][CRI]["netns_mounts_under_state_dir"] is False
    out = subprocess.run([str(REPO / ".venv/bin/isle"), "kube", "config"], capture_output=True,
                         text=True, check=True).stdout
    assert tomllib.loads(out)["plugins"][CRI]["containerd"]["runtimes"]["isle-vm"]
    bad = subprocess.run([str(REPO / ".venv/bin/isle"), "kube", "config", "--mirror", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 125 and "NAME=HOST:PORT" in bad.stderr


def test_cni_conflist_is_bridge_hostlocal_portmap(tmp_path: Path) -> None:
    n = Node.under(str(tmp_path / "n"))
    c = cni_conflist(n)
    assert [p["type"] for p in c["plugins"]] == ["bridge", "portmap"]
    br = c["plugins"][0]
    assert br["bridge"] == n.bridge and br["ipam"]["type"] == "host-local"
    assert br["ipam"]["dataDir"] == n.cni_ipam_dir
    json.dumps(c)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_pause_archive_is_reproducible_oci(tmp_path: Path) -> None:
    from isle.kube.pause import build_pause, pause_archive

    binary = build_pause(str(tmp_path / "pause"))
    assert subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.startswith(
        "isle-pause")
    d1 = pause_archive(binary, str(tmp_path / "a.tar"))
    d2 = pause_archive(binary, str(tmp_path / "b.tar"))
    assert d1 == d2 and (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == PAUSE_IMAGE
        assert "oci-layout" in tf.getnames()
    # SIGTERM ends it with 0 (the kubelet's stop), as PID 1 or not
    p = subprocess.Popen([binary], stderr=subprocess.DEVNULL)
    import time

    time.sleep(0.1)
    p.terminate()
    assert p.wait(5) == 0
