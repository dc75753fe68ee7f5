"""`isle vm template create/ls/rm`: `isle run --isolation vm` restores a matching template."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")


@pytest.fixture
def isle(tmp_path: Path, vm_cache: str, vmh):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
    env.update(ISLE_CACHE=vm_cache, ISLE_VM_READY_TIMEOUT="100")

    def call(*args: str, check: bool = True, timeout: float = 180,
             cold: bool = False) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([ISLE, "--root", str(tmp_path / "root"), "--runroot",
                             str(tmp_path / "run"), *args], capture_output=True, text=True,
                            env=dict(env, ISLE_VM_TEMPLATE="0") if cold else env,
                            timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"isle {' '.join(args)} -> {cp.returncode}\n{cp.stderr}")
        return cp

    tdir = Path(vm_cache) / "templates"  # (other parts of the suite make templates too)
    tpl_before = set(os.listdir(tdir)) if tdir.is_dir() else set()
    call.others = {n.split(".")[0] for n in tpl_before}  # type: ignore[attr-defined]
    yield call
    ids = call("ps", "-aq", "--no-trunc", check=False).stdout.split()
    if ids:
        call("rm", "-f", *ids, check=False)
    call("vm", "template", "rm", "busybox", check=False)
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
    assert vmh.qemus(vm_cache) == [], "QEMU left running"
    made = (set(os.listdir(tdir)) if tdir.is_dir() else set()) - tpl_before
    assert {n for n in made if not n.endswith(".lock")} == set(), made
    assert not [k for k in made if os.path.exists(f"/dev/shm/isle-tpl-{k}.ram")]


def _templates(isle) -> list[dict]:
    """`vm template ls` without the templates other tests left in the shared cache."""
    return [t for t in json.loads(isle("vm", "template", "ls", "--format", "json").stdout)
            if t["key"] not in isle.others]


def _timed(isle, *args: str, cold: bool = False) -> tuple[float, str]:
    t0 = time.monotonic()
    out = isle(*args, cold=cold).stdout
    return time.monotonic() - t0, out


def test_vm_run_uses_a_template_when_one_exists(isle, vm_cache: str) -> None:
    # no network: its set-up costs the same both ways and would only blur the boot's share
    run = ("run", "--rm", "--isolation", "vm", "--network", "none", "busybox", "echo", "hi")
    isle(*run, cold=True)  # warm the image disk and initramfs caches: boots compared only
    colds = [_timed(isle, *run, cold=True) for _ in range(2)]  # cold: asked for (no template)
    assert all(out == "hi\n" for _, out in colds)
    cold = min(t for t, _ in colds)
    assert _templates(isle) == []
    n0 = json.loads(isle("info", "--format", "json").stdout)["VM"]["templates"]

    key = isle("vm", "template", "create", "busybox", "--memory", "128M", "--network",
               "none").stdout.strip()
    ts = _templates(isle)
    assert [(t["key"], t["image"], t["memory_mib"]) for t in ts] == [(key, "busybox", 128)]
    assert os.path.exists(f"/dev/shm/isle-tpl-{key}.ram") and ts[0]["ram_bytes"] > 0
    assert json.loads(isle("info", "--format", "json").stdout)["VM"]["templates"] == n0 + 1
    assert f"Templates: {n0 + 1}" in isle("info").stdout

    warms = [_timed(isle, *run) for _ in range(2)]
    assert all(out == "hi\n" for _, out in warms)
    warm = min(t for t, _ in warms)  # the best of two either way: load on a shared host is noise
    assert cold / warm > 2, f"cold {cold:.2f}s vs template {warm:.2f}s"
    # the engine asked for it (and only for a matching size: 256 MiB has no template)
    cid = isle("run", "-d", "--isolation", "vm", "--network", "none", "busybox",
               "sleep", "60").stdout.strip()
    cfg = json.loads(open(Path(isle("inspect", cid).args[2]) / "containers" / cid
                          / "config.json").read())
    assert cfg["annotations"].get("org.isle.vm.template") == "true"
    # what the clone costs the host (QEMU's PSS) beside the guest's own memory figures
    table = isle("stats", "--no-stream", cid).stdout.splitlines()
    assert table[0].split()[-2:] == ["HOST", "PSS"] and table[1].split()[-1].endswith("B"), table
    isle("rm", "-f", cid)
    cid = isle("run", "-d", "--isolation", "vm", "--network", "none", "-m", "256m",
               "busybox", "sleep", "60", cold=True).stdout.strip()
    cfg = json.loads(open(Path(isle("inspect", cid).args[2]) / "containers" / cid
                          / "config.json").read())
    assert "org.isle.vm.template" not in cfg["annotations"]
    isle("rm", "-f", cid)

    assert isle("vm", "template", "rm", "busybox").stdout.split() == [key]
    assert not os.path.exists(f"/dev/shm/isle-tpl-{key}.ram")
    assert isle("vm", "template", "rm", "busybox", check=False).returncode != 0
    assert isle(*run, cold=True).stdout == "hi\n"  # cold when asked: no template made
    assert _templates(isle) == []
    # the default: the first run makes the template (labelled by its image), the next clone it
    assert isle(*run).stdout == "hi\n"
    ts = _templates(isle)
    assert [(t["image"], t["memory_mib"]) for t in ts] == [("busybox", 128)], ts
    assert os.path.exists(f"/dev/shm/isle-tpl-{ts[0]['key']}.ram")
    t, out = _timed(isle, *run)
    assert out == "hi\n" and t < cold, f"default run {t:.2f}s vs cold {cold:.2f}s"
    assert isle("vm", "template", "rm", "busybox").stdout.split() == [ts[0]["key"]]

    # system prune -a drops templates (their RAM files) too; without -a they stay, since the
    # cache they live in serves every --root on the host
    key = isle("vm", "template", "create", "busybox").stdout.strip()
    assert key not in isle("system", "prune", "-f").stdout
    assert os.path.exists(f"/dev/shm/isle-tpl-{key}.ram")
    assert key in isle("system", "prune", "-a", "-f").stdout
    assert not os.path.exists(f"/dev/shm/isle-tpl-{key}.ram")


def test_vm_template_of_unknown_image_fails_cleanly(isle, vm_cache: str) -> None:
    cp = isle("vm", "template", "create", "no-such-image:1", check=False)
    assert cp.returncode != 0 and "no-such-image" in cp.stderr
    assert _templates(isle) == []
