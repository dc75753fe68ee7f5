"""`isle kube down` leaves nothing of its node on the host, cgroups included: pods under the runc
and isle handlers, then down; `leftovers` (processes, mounts, leases, libcni cache, nat rules,
bridge, cgroups) is empty, and no hierarchy keeps a cgroup of the node's pods or an empty
/k8s.io parent (runc makes it and never removes it). crictl comes from PATH or scripts/critest's
build; without it, or without containerd, this skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from isle.kube import node as kube_node

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")
CRICTL = kube_node.crictl_path()

pytestmark = [
    pytest.mark.root, pytest.mark.netns, pytest.mark.slow,
    pytest.mark.skipif(CRICTL is None, reason="needs crictl (scripts/critest build)"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/containerd"), reason="needs containerd"),
]


def _cgroups_named(ids: set[str]) -> list[str]:
    root = Path("/sys/fs/cgroup")
    return [str(p) for h in root.iterdir() if (h / "k8s.io").is_dir()
            for p in (h / "k8s.io").iterdir() if p.name in ids]


@pytest.mark.timeout(150)
def test_down_removes_pod_cgroups_and_the_empty_parent(tmp_path: Path) -> None:
    d = tmp_path / "n"
    img = tmp_path / "busybox.tar"
    subprocess.run([ISLE, "--root", str(tmp_path / "r"), "--runroot", str(tmp_path / "rr"),
                    "save", "-o", str(img), "busybox"], check=True, capture_output=True,
                   timeout=120)
    sock = "unix://" + str(d / "containerd.sock")
    cri = [str(CRICTL), "-r", sock, "-i", sock, "--timeout", "50s"]
    ids: set[str] = set()
    left: dict[str, list[str]] | None = None
    kube_node.up(str(d))
    try:
        subprocess.run(["ctr", "-a", str(d / "containerd.sock"), "-n", "k8s.io", "images",
                        "import", str(img)], check=True, capture_output=True, timeout=120)
        c = tmp_path / "c.json"
        c.write_text(json.dumps({"metadata": {"name": "c"}, "command": ["sleep", "300"],
                                 "image": {"image": "docker.io/library/busybox:latest"},
                                 "log_path": "c.log", "linux": {}}))
        for h in ("runc", "isle"):
            p = tmp_path / f"{h}.pod.json"
            p.write_text(json.dumps({"metadata": {"name": h, "namespace": "t", "uid": h,
                                                  "attempt": 1},
                                     "log_directory": str(tmp_path / "logs" / h), "linux": {}}))
            pod = subprocess.run(cri + ["runp", "--runtime", h, str(p)], check=True,
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            cid = subprocess.run(cri + ["create", pod, str(c), str(p)], check=True,
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            subprocess.run(cri + ["start", cid], check=True, capture_output=True, timeout=60)
            ids |= {pod, cid}
        # the pods' containers sit in /k8s.io/<id> (containerd's default parent)
        assert len(_cgroups_named(ids)) >= 4
    finally:
        left = kube_node.down(str(d))
    assert left == {}  # down says what it could not remove
    assert kube_node.leftovers(str(d), ids) == {}
    st = kube_node.status(str(d))
    assert not st["running"] and st["leftovers"] == {}
    assert _cgroups_named(ids) == []
    for h in Path("/sys/fs/cgroup").iterdir():  # the parent goes unless another node uses it
        parent = h / "k8s.io"
        assert not parent.is_dir() or any(e.is_dir() for e in parent.iterdir()), parent
