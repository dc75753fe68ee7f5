"""What containerd's runc shim (io.containerd.runc.v2) asks of isle-runtime beyond create/start:
update --resources - (CRI UpdateContainerResources), ps --format json (task Pids), events --stats,
features, and clear refusals (checkpoint/restore, --systemd-cgroup)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
RUNTIME = str(REPO / ".venv" / "bin" / "isle-runtime")

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


def rt(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # files, not pipes: a created container inherits the runtime's stdio
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([RUNTIME, "--root", str(root), *args], stdout=out, stderr=err,
                           input=stdin.encode() if stdin is not None else None, timeout=30)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(),
                                           err.read().decode())


def _bundle(tmp_path: Path, rootfs: str, edit: Any = None) -> Path:
    from isle.oci.runtime_spec import default_spec

    b = tmp_path / "b"
    b.mkdir()
    cfg = default_spec()
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"].update(terminal=False, args=["sleep", "60"])
    cfg["linux"]["cgroupsPath"] = f"/isle-test-kube/{tmp_path.name}"
    if edit:
        edit(cfg)
    (b / "config.json").write_text(json.dumps(cfg))
    return b


@pytest.fixture
def running(tmp_path: Path, busybox_rootfs: str) -> Any:
    b = _bundle(tmp_path, busybox_rootfs)
    root = tmp_path / "root"
    assert rt(root, "create", "--bundle", str(b), "c1").returncode == 0
    assert rt(root, "start", "c1").returncode == 0
    yield root, b
    rt(root, "delete", "--force", "c1")


def _cg(pid: int, ctrl: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrl in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{ctrls}{path}")
    raise AssertionError(f"no {ctrl} cgroup for {pid}")


def test_update_from_stdin_and_flags_ps_json_events_stats(running: Any) -> None:
    root, _ = running
    pid = json.loads(rt(root, "state", "c1").stdout)["pid"]
    # what the runc shim sends: specs.LinuxResources as JSON on stdin
    r = rt(root, "update", "--resources", "-", "c1",
           stdin=json.dumps({"memory": {"limit": 96 << 20}, "cpu": {"shares": 512}}))
    assert r.returncode == 0, r.stderr
    assert int((_cg(pid, "memory") / "memory.limit_in_bytes").read_text()) == 96 << 20
    assert int((_cg(pid, "cpu") / "cpu.shares").read_text()) == 512
    r = rt(root, "update", "--pids-limit", "77", "--memory", "128m", "c1")
    assert r.returncode == 0, r.stderr
    assert (_cg(pid, "pids") / "pids.max").read_text().strip() == "77"
    assert int((_cg(pid, "memory") / "memory.limit_in_bytes").read_text()) == 128 << 20
    # bad input: a clear error, exit 1, nothing changed
    r = rt(root, "update", "--resources", "-", "c1", stdin="{not json")
    assert r.returncode == 1 and "not JSON" in r.stderr
    r = rt(root, "update", "--memory", "lots", "c1")
    assert r.returncode == 1 and "--memory" in r.stderr
    assert int((_cg(pid, "memory") / "memory.limit_in_bytes").read_text()) == 128 << 20

    assert pid in json.loads(rt(root, "ps", "--format", "json", "c1").stdout)
    ev = json.loads(rt(root, "events", "--stats", "c1").stdout)
    assert ev["type"] == "stats" and ev["id"] == "c1"
    assert ev["data"]["memory"]["usage"]["usage"] > 0
    assert ev["data"]["pids"]["current"] >= 1


def test_refusals_are_clear(running: Any, tmp_path: Path) -> None:
    root, b = running
    for verb in ("checkpoint", "restore"):
        r = rt(root, verb, "c1")
        assert r.returncode == 1 and "not supported" in r.stderr, r.stderr
    r = rt(root, "--systemd-cgroup", "create", "--bundle", str(b), "c2")
    assert r.returncode == 1 and "systemd" in r.stderr
    assert rt(root, "state", "c2").returncode == 1  # nothing left behind
    feats = json.loads(rt(root, "features").stdout)
    assert feats["linux"]["cgroup"]["systemd"] is False
    assert "mount" in feats["linux"]["namespaces"]


def test_created_container_without_cgroup_mount_waits_for_start(tmp_path: Path,
                                                                busybox_rootfs: str) -> None:
    """containerd's pod sandbox spec has no /sys/fs/cgroup mount: the init, waiting for start
    after pivot_root, must not need a first import from the (now gone) host tree."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        cfg["annotations"] = {"io.kubernetes.cri.container-type": "sandbox"}

    b = _bundle(tmp_path, busybox_rootfs, edit)
    root = tmp_path / "root"
    try:
        assert rt(root, "create", "--bundle", str(b), "s1").returncode == 0
        assert json.loads(rt(root, "state", "s1").stdout)["status"] == "created"
        assert rt(root, "start", "s1").returncode == 0
        assert json.loads(rt(root, "state", "s1").stdout)["status"] == "running"
    finally:
        rt(root, "delete", "--force", "s1")


def test_rshared_root_propagation_with_rootfs_mounted(tmp_path: Path, busybox_rootfs: str) -> None:
    """containerd mounts the rootfs itself (overlay on bundle/rootfs); a Bidirectional volume
    makes the CRI ask rootfsPropagation rshared: pivot_root must still work, a mount made on
    the host under the volume afterwards shows inside, and one made inside shows on the host."""
    import subprocess as sp

    vol = tmp_path / "vol"
    vol.mkdir()
    b = tmp_path / "b"
    rootfs = b / "rootfs"
    rootfs.mkdir(parents=True)
    sp.run(["mount", "--bind", busybox_rootfs, str(rootfs)], check=True)
    sp.run(["mount", "--bind", str(vol), str(vol)], check=True)
    sp.run(["mount", "--make-rshared", str(vol)], check=True)
    root = tmp_path / "root"
    try:
        from isle.oci.runtime_spec import default_spec

        cfg = default_spec()
        cfg["root"] = {"path": "rootfs"}
        cfg["process"].update(terminal=False, args=["sleep", "60"])
        for k in ("bounding", "effective", "permitted"):  # to mount inside (critest: privileged)
            cfg["process"]["capabilities"][k].append("CAP_SYS_ADMIN")
        cfg["linux"]["rootfsPropagation"] = "rshared"
        cfg["mounts"].append({"destination": "/vol", "type": "bind", "source": str(vol),
                              "options": ["rbind", "rshared"]})
        (b / "config.json").write_text(json.dumps(cfg))
        r = rt(root, "create", "--bundle", str(b), "p1")
        assert r.returncode == 0, r.stderr
        assert rt(root, "start", "p1").returncode == 0
        (vol / "sub").mkdir()
        sp.run(["mount", "-t", "tmpfs", "-o", "size=1m", "isle-prop", str(vol / "sub")],
               check=True)
        out = rt(root, "exec", "p1", "cat", "/proc/self/mountinfo").stdout
        assert "/vol/sub" in out
        # and back: a mount made in the container under the volume shows on the host
        (vol / "back").mkdir()
        r = rt(root, "exec", "p1", "mount", "--bind", "/etc", "/vol/back")
        assert r.returncode == 0, r.stderr
        assert (vol / "back" / "passwd").exists()
    finally:
        rt(root, "delete", "--force", "p1")
        sp.run(["umount", "-R", str(vol)], check=False)
        sp.run(["umount", "-R", str(rootfs)], check=False)


def test_kill_errors_use_the_words_the_runc_shim_parses(tmp_path: Path,
                                                       busybox_rootfs: str) -> None:
    """containerd's runc shim (checkKillError) treats a kill error saying "container not
    running" or "does not exist" as 'already gone'; any other wording fails StopPodSandbox."""
    b = _bundle(tmp_path, busybox_rootfs, lambda c: c["process"].update(args=["true"]))
    root = tmp_path / "root"
    try:
        assert rt(root, "create", "--bundle", str(b), "k1").returncode == 0
        assert rt(root, "start", "k1").returncode == 0
        for _ in range(100):
            if json.loads(rt(root, "state", "k1").stdout)["status"] == "stopped":
                break
            import time

            time.sleep(0.05)
        r = rt(root, "kill", "k1", "KILL")
        assert r.returncode == 1 and "container not running" in r.stderr, r.stderr
        r = rt(root, "kill", "nosuch", "KILL")
        assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    finally:
        rt(root, "delete", "--force", "k1")
