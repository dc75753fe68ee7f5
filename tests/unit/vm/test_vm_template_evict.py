"""Templates the runtime makes on first use are labelled "auto" and evicted least recently used
first beyond a bound; those `isle vm template create` labelled are never evicted."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
