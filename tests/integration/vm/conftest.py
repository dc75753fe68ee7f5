"""VM test plumbing: a private cache (real guest kernel linked in), busybox bundles, QEMU leaks."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from isle.oci.runtime_spec import default_spec

REPO = Path(__file__).resolve().parents[3]
RUNTIME = str(REPO / ".venv" / "bin" / "isle-vm-runtime")
REAL_KERNELS = "/var/cache/isle/kernel"



@pytest.fixture(scope="session")
def vm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.path.exists(os.path.join(REAL_KERNELS, "current", "vmlinuz")):
        pytest.skip("no guest kernel cached: run scripts/fetch-guest-kernel")
    c = tmp_path_factory.mktemp("vmcache")
    os.symlink(REAL_KERNELS, c / "kernel")
    yield str(c)
    from isle.vm import snapshot

    snapshot.remove(str(c))


def make_bundle(dest: Path, rootfs: str, args: list[str], **proc: object) -> str:
    dest.mkdir(parents=True, exist_ok=True)
    os.symlink(rootfs, dest / "rootfs")
    spec = default_spec()
    spec["process"].update({"args": args, "terminal": False, **proc})
    spec["root"]["readonly"] = False  # the guest honours it (isle-exec -O); tests write to /tmp
    spec.setdefault("annotations", {})["org.isle.isolation"] = "vm"
    (dest / "config.json").write_text(json.dumps(spec))
    return str(dest)


def qemus(marker: str) -> list[int]:
    """QEMU processes whose command line mentions marker (e.g. our cache dir)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if cmd.startswith(b"qemu-system") and marker.encode() in cmd:
                out.append(int(d))
    return out


#: isle-vm-runtime's default --root (podman and runtime-tools use it): a state root that stays,
#: like /run/runc, not a VM's run directory; what may not stay is a container's state in it
STATE_ROOT = "isle-vm-runtime"


def rundirs() -> set[str]:
    return (
        {p for p in os.listdir("/run") if p.startswith("isle-vm-") and p != STATE_ROOT}
        if os.path.isdir("/run")
        else set()
    )


def states() -> set[str]:
    """Container states in the VM runtime's default root."""
    d = os.path.join("/run", STATE_ROOT)
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def orphan_rundirs(before: set[str], grace: float = 3.0) -> set[str]:
    """Run directories made since `before` that no live QEMU names: ours, left behind. Another
    root's VMs on the same machine (their QEMU names its own run directory) do not count."""
    import time

    deadline = time.monotonic() + grace
    while True:
        live = b"".join(_cmdline(pid) for pid in qemus(""))
        left = {d for d in rundirs() - before if f"/{d}/".encode() not in live}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.fixture
def vm_env(vm_cache: str) -> Iterator[dict[str, str]]:
    """Environment for the runtime CLI; after the test no QEMU or run directory may remain."""
    before, states_before = rundirs(), states()
    env = dict(os.environ, ISLE_CACHE=vm_cache, ISLE_VM_READY_TIMEOUT="100")
    env.pop("ISLE_VM_TEMPLATE", None)
    yield env
    assert qemus(vm_cache) == [], "QEMU left running"
    assert orphan_rundirs(before) == set(), "run directory left behind"
    assert states() - states_before == set(), "container state left in /run/" + STATE_ROOT


class VMHelpers:
    runtime = RUNTIME
    make_bundle = staticmethod(make_bundle)
    qemus = staticmethod(qemus)


@pytest.fixture(scope="session")
def vmh() -> type[VMHelpers]:
    """Helpers for VM tests (test modules cannot import conftest under --import-mode=importlib)."""
    return VMHelpers
