"""Whole-OS VMs (engine/vms.VMs): what a verb holds while it works on a VM. No QEMU runs here."""

from __future__ import annotations

import dataclasses
import json
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
