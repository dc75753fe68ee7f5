"""Whole-OS VMs (engine/vms.VMs): what a verb holds while it works on a VM, and the cheap check
`isle ps` / `vm ls` make of every stopped VM for what it left on the host. No QEMU runs here."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from isle.config import Settings
from isle.engine.vms import VMs
from isle.errors import InvalidState
from isle.vm.machine import MachineSpec


def _vms(tmp_path: Path, tag: str = "a") -> VMs:
    return VMs(Settings(root=str(tmp_path / f"root-{tag}"), runroot=str(tmp_path / f"run-{tag}"),
                        cache=str(tmp_path / "cache")))


def _machine(vms: VMs, name: str, **kw: Any) -> MachineSpec:
    spec = MachineSpec(name=name, base="/nonexistent.qcow2", base_format="qcow2", **kw)
    d = Path(vms.store.root) / name
    d.mkdir(parents=True)
    (d / "machine.json").write_text(json.dumps(dataclasses.asdict(spec)))
    return spec


def test_migrate_takes_the_vms_lock_like_start_stop_and_rm(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """migrate holds the VM's lock: a reap (ls, inspect) that sees the source QEMU gone at
    switch-over would else give back the cgroup and network attachment being moved. Here it
    waits for a holder of the lock before it even looks at the VM's QEMU."""
    vms = _vms(tmp_path)
    _machine(vms, "mv")
    looked: list[str] = []
    monkeypatch.setattr(vms.store, "_pid", lambda n: looked.append(n) or 0)
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            vms.migrate("mv", str(tmp_path / "root-b"), str(tmp_path / "run-b"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    with vms._lock("mv"):
        t = threading.Thread(target=migrate, daemon=True)
        t.start()
        t.join(0.5)
        assert t.is_alive() and looked == []  # waiting for the lock
        with pytest.raises(BlockingIOError):  # (as a reap finds it: busy, skipped)
            with vms._lock("mv", wait=False):
                pass
    t.join(10)
    assert looked == ["mv"] and len(errors) == 1 and isinstance(errors[0], InvalidState)


def test_holds_looks_for_the_netns_where_the_network_manager_makes_it(tmp_path: Path) -> None:
    """_holds checks the VM's network namespace by path (no network manager: its import costs
    ~25 ms of every `isle ps`): the path is the network manager's own, in this root or, for a VM
    a live migration brought here, in the root that holds its attachment (spec.netroot)."""
    from isle.engine.networks import network_manager

    vms = _vms(tmp_path)
    other = _vms(tmp_path, "b")
    here = _machine(vms, "n1", network="net0")
    moved = _machine(vms, "n2", network="net0", netroot=[other.s.root, other.s.runroot])
    for name, spec, s in (("n1", here, vms.s), ("n2", moved, other.s)):
        want = network_manager(s).store.netns_path(vms._net_owner(name))
        assert vms._netns_path(name, spec) == want
        assert not vms._holds(name, spec)
        Path(want).write_bytes(b"")  # (a bind mount of the namespace, in real life)
        assert vms._holds(name, spec)
        os.unlink(want)
    os.makedirs(vms.store.runroot, exist_ok=True)
    Path(vms._cgroup_record("n1")).write_text("{}")
    assert vms._holds("n1", here)


def test_ls_of_stopped_vms_loads_no_network_code(tmp_path: Path) -> None:
    """`vm ls` (and `isle ps`) reap stopped VMs: checking what they hold imports nothing of
    isle.net (it built a NetworkManager per stopped VM before)."""
    vms = _vms(tmp_path)
    _machine(vms, "off", network="net0")
    code = ("import sys\n"
            "from isle.config import Settings\n"
            "from isle.engine.vms import VMs\n"
            f"s = Settings(root={vms.s.root!r}, runroot={vms.s.runroot!r}, "
            f"cache={vms.s.cache!r})\n"
            "assert [i.status for i in VMs(s).ls()] == ['stopped']\n"
            "print(sorted(m for m in sys.modules if m.startswith('isle.net')))\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (cp.returncode, cp.stdout.strip()) == (0, "[]"), cp.stderr


class _Registry:
    """A registry client that serves one image manifest (no layers) and counts its fetches."""

    def __init__(self) -> None:
        import hashlib

        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cdigest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cdigest, "size": len(self.config)},
            "layers": []}).encode()
        self.fetched: list[str] = []

    def __enter__(self) -> _Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        import hashlib

        self.fetched.append(f"{repo}:{ref}")
        return (self.manifest, "application/vnd.oci.image.manifest.v1+json",
                "sha256:" + hashlib.sha256(self.manifest).hexdigest())

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self.config


def test_vm_pull_fetches_the_manifest_once(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`vm pull` looks at the manifest for a disk artifact, and pulls an image with that same
    manifest (it fetched it a second time, through a second client)."""
    from isle.engine.images import Images
    from isle.errors import NotFound

    reg = _Registry()
    monkeypatch.setattr(Images, "client", lambda self, registry, **kw: reg)
    vms = _vms(tmp_path)
    with pytest.raises(NotFound, match="holds no VM disk"):  # (an image without /disk)
        vms.pull("localhost:5000/vms/empty:v1")
    assert reg.fetched == ["vms/empty:v1"]
    assert vms.ls() == [] and Images(vms.s).store.list() == []
