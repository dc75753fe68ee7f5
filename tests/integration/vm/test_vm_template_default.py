"""The cheap path is the default: isle-vm-runtime starts a VM as a clone of the template of its
boot identity (made on the first start, labelled, reused after); org.isle.vm.template=false asks
for a cold boot. A clone maps its template's RAM file privately (copy-on-write): what it writes
never reaches the template or another clone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]

RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime")


def rt(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    if args[0] != "create":
        return subprocess.run([RUNTIME, "--root", str(root), *args], env=env, timeout=150,
                              capture_output=True, stdin=subprocess.DEVNULL)
    with open(root.parent / "create.err", "w+b") as err:  # (not a pipe: the monitor keeps it)
        cp = subprocess.run([RUNTIME, "--root", str(root), *args], env=env, timeout=150,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        err.seek(0)
        cp.stderr = err.read()
    return cp


def _qemu(root: Path, cid: str) -> tuple[int, str, str]:
    """(QEMU's pid, its command line, its mappings of a template RAM file) of a created VM."""
    pid = json.loads((root / cid / "state.json").read_text())["qemu_pid"]
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    maps = "".join(ln for ln in Path(f"/proc/{pid}/maps").read_text().splitlines(keepends=True)
                   if "isle-tpl-" in ln)
    return pid, cmd, maps


def test_default_start_is_a_private_clone_of_a_template_made_on_first_use(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    cache = Path(vm_env["ISLE_CACHE"])
    root = tmp_path / "root"
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["echo", "hi"])
    cfg = json.loads((Path(b) / "config.json").read_text())
    cfg["annotations"]["org.isle.vm.memory"] = "160"  # a size no other test uses: its own
    (Path(b) / "config.json").write_text(json.dumps(cfg))
    r = rt(root, "run", "-b", b, "first", env=vm_env)  # nothing asks for a template
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr
    made = [json.loads(p.read_text()) | {"key": p.stem}
            for p in (cache / "templates").glob("*.json")]
    made = [m for m in made if m["memory_mib"] == 160]
    assert len(made) == 1 and made[0]["auto"] is True, made  # made on first use, labelled
    key = made[0]["key"]
    assert os.path.exists(f"/dev/shm/isle-tpl-{key}.ram")

    # two clones of it: each maps the template's RAM privately (MAP_PRIVATE: 'p', never 's'),
    # so a clone's writes land in its own pages, never in the template's file or another clone
    try:
        for cid in ("c1", "c2"):
            r = rt(root, "create", "-b", b, cid, env=vm_env)
            assert r.returncode == 0, r.stderr
            _, cmd, maps = _qemu(root, cid)
            assert "-incoming defer" in cmd and f"isle-tpl-{key}.ram,share=off" in cmd, cmd
            assert maps and all(ln.split()[1].endswith("p") for ln in maps.splitlines()), maps
        # a cold boot when asked for: no template involved, none made
        r = rt(root, "create", "-b", b, "cold", env=dict(vm_env, ISLE_VM_TEMPLATE="0"))
        assert r.returncode == 0, r.stderr
        _, cmd, maps = _qemu(root, "cold")
        assert "-incoming" not in cmd and "isle-tpl-" not in cmd and not maps, cmd
    finally:
        for cid in ("c1", "c2", "cold"):
            rt(root, "delete", "--force", cid, env=vm_env)
    assert [p.stem for p in (cache / "templates").glob("*.json")
            if json.loads(p.read_text())["memory_mib"] == 160] == [key]  # still the one
    assert vmh.qemus(str(cache)) == []
