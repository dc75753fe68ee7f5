"""Templates the runtime makes on first use are labelled "auto" and evicted least recently used
first beyond a bound; those `isle vm template create` labelled are never evicted."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from isle.sys.fs import flock
from isle.vm import snapshot


def _tpl(base: Path, key: str, mtime: float, auto: bool) -> None:
    (base / key).mkdir(parents=True)
    (base / key / "vmstate").write_bytes(b"x")
    label = {"memory_mib": 128, "auto": True} if auto else {"image": "busybox"}
    (base / f"{key}.json").write_text(json.dumps(label))
    os.utime(base / key, (mtime, mtime))


def test_evict_drops_least_recently_used_auto_templates_only(tmp_path: Path) -> None:
    base = tmp_path / "templates"
    for i in range(5):
        _tpl(base, f"auto{i}", 1000 + i, auto=True)
    _tpl(base, "made", 10, auto=False)  # the oldest of all, but the engine's: kept
    gone = snapshot.evict(str(tmp_path), keep=3, spare="auto0")
    assert sorted(gone) == ["auto1", "auto2"]  # auto0 spared (just made), auto3/auto4 newest
    left = sorted(n for n in os.listdir(base) if not n.endswith((".json", ".lock")))
    assert left == ["auto0", "auto3", "auto4", "made"]
    assert not (base / "auto1.json").exists() and (base / "made.json").exists()
    assert snapshot.evict(str(tmp_path), keep=3) == []


def test_evict_of_an_empty_or_missing_cache_is_a_no_op(tmp_path: Path) -> None:
    assert snapshot.evict(str(tmp_path / "nothing"), keep=0) == []


def test_a_bad_templates_max_is_the_default_not_an_import_error() -> None:
    """ISLE_VM_TEMPLATES_MAX that is no count (a typo) leaves the default: it raised ValueError
    at import, so every command that loads the VM runtime failed with a traceback."""
    import subprocess
    import sys

    code = "from isle.vm import snapshot; print(snapshot.AUTO_KEEP)"
    for value, want in (("lots", "8"), ("-2", "8"), ("", "8"), (" 3 ", "3"), ("0", "0")):
        env = {**os.environ, "ISLE_VM_TEMPLATES_MAX": value}
        cp = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
        assert (cp.returncode, cp.stdout.strip()) == (0, want), (value, cp.stderr)


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_evict_waits_for_a_held_template_and_keeps_it_if_used_meanwhile(
        tmp_path: Path) -> None:
    """evict() takes the template's lock before removing it, and re-reads its last use under
    that lock: a restore that used it (ensure() records the use under the lock) while evict was
    waiting keeps it (evict had decided from a listing made before)."""
    base = tmp_path / "templates"
    _tpl(base, "auto0", 1000, auto=True)
    lock = flock(str(base / "auto0.lock"))  # (as ensure() holds it: restoring a clone)
    lock.__enter__()
    try:
        t, out = _in_thread(lambda: snapshot.evict(str(tmp_path), keep=0))
        t.join(0.3)
        assert t.is_alive()  # waits for the lock
        os.utime(base / "auto0")  # a use, under the lock
    finally:
        lock.__exit__()
    t.join(10)
    assert out == [[]] and (base / "auto0" / "vmstate").exists()
    os.utime(base / "auto0", (1000, 1000))  # unused again: it goes, with its lock file
    assert snapshot.evict(str(tmp_path), keep=0) == ["auto0"]
    assert sorted(os.listdir(base)) == []


def test_a_template_lock_unlinked_by_its_holder_is_taken_again_by_a_waiter(
        tmp_path: Path) -> None:
    """_remove_key (evict, remove) unlinks <key>.lock while holding it. A waiter blocked on that
    file then gets a lock nobody else contends for, while a newcomer locks a new file at the
    same path: both would make or remove the template at once. The waiter checks, once locked,
    that its file is still the one at the path, and else waits for the new one."""
    path = str(tmp_path / "k.lock")
    first = snapshot._keylock(path)
    first.__enter__()
    waiter, got = _in_thread(lambda: _locked_inode(path))
    waiter.join(0.2)
    assert waiter.is_alive()
    os.unlink(path)  # the holder removes the template and its lock file...
    newcomer = snapshot._keylock(path)
    newcomer.__enter__()  # ...someone locks a new file at the path...
    first.__exit__()  # ...and the holder lets go of the old one
    waiter.join(0.3)
    assert waiter.is_alive(), "the waiter holds the unlinked file's lock beside the newcomer"
    newcomer.__exit__()
    waiter.join(10)
    assert got == [os.stat(path).st_ino]


def _locked_inode(path: str) -> int:
    with snapshot._keylock(path) as fd:
        return os.fstat(fd).st_ino


def test_template_rm_waits_for_a_template_in_use_and_takes_its_lock_file(tmp_path: Path) -> None:
    """`isle vm template rm` / `system prune -a` remove a template under its lock, as evict()
    does: they unlinked its files and lock file while a clone was being made from it."""
    from isle.config import Settings
    from isle.engine.vms import VMs

    base = tmp_path / "cache" / "templates"
    _tpl(base, "k1", 1000, auto=False)
    vms = VMs(Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"),
                       cache=str(tmp_path / "cache")))
    lock = flock(str(base / "k1.lock"))  # (ensure() making or restoring it)
    lock.__enter__()
    try:
        t, out = _in_thread(lambda: vms.template_rm("k1"))
        t.join(0.3)
        assert t.is_alive() and (base / "k1" / "vmstate").exists()
    finally:
        lock.__exit__()
    t.join(10)
    assert out == [["k1"]] and sorted(os.listdir(base)) == []


@pytest.mark.root
def test_ram_of_a_deleted_cache_is_swept_and_others_are_kept(tmp_path, monkeypatch) -> None:
    """A template RAM file names its template directory; once that is gone (a scratch cache
    deleted without `vm template rm`), the next sweep frees it. Live ones and files that name
    nothing (older) stay."""
    from isle.vm import snapshot

    shm = tmp_path / "shm"
    shm.mkdir()
    live = tmp_path / "a" / "templates" / "k1"
    live.mkdir(parents=True)
    gone_cache = tmp_path / "b" / "templates" / "k2"  # its whole cache deleted
    half = tmp_path / "a" / "templates" / "k3"  # its cache is there, the template is not
    for k, owner in (("k1", live), ("k2", gone_cache), ("k3", half)):
        snapshot._ram_file(str(shm / f"isle-tpl-{k}.ram"), owner=str(owner))
    (shm / "isle-tpl-k4.ram").write_bytes(b"")  # no owner recorded: left alone
    (shm / "other.ram").write_bytes(b"")
    try:
        os.getxattr(shm / "isle-tpl-k1.ram", snapshot.OWNER_XATTR)
    except OSError:
        pytest.skip("no trusted.* xattrs on this filesystem")
    gone = snapshot.sweep_orphans(str(shm))
    assert sorted(os.path.basename(p) for p in gone) == ["isle-tpl-k2.ram", "isle-tpl-k3.ram"]
    assert sorted(os.listdir(shm)) == ["isle-tpl-k1.ram", "isle-tpl-k4.ram", "other.ram"]
    assert not (tmp_path / "a" / "templates" / "k3.lock").exists()  # no lock file made
