"""The integration leak check's scoping: a test answers only for mounts under its run's roots,
its own processes, and mounts/cgroups/links/netns naming its ids (another run's, a benchmark's or
a conformance suite's containers on the same host are not its leaks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_p = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("isle_leaks_under_test", _p)
assert _spec and _spec.loader
leaks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(leaks)


def test_scoped_keeps_only_what_the_test_made(tmp_path: Path) -> None:
    cid = "0123456789abcdef" * 4
    (tmp_path / "containers" / cid).mkdir(parents=True)
    ids = leaks.own_ids([tmp_path])
    assert ids == {cid[:12], cid[:8]}
    leaked = {
        "mounts": [f"{tmp_path}/containers/{cid}/rootfs", "/tmp/pytest-of-root/other/rootfs"],
        "cgroups": [f"/sys/fs/cgroup/memory/isle/{cid}", "/sys/fs/cgroup/memory/isle/fedcba987654"],
        "links": [f"isle-{cid[:8]}", "isle-8d4bd9d1", "veth0"],
        "children": ["4242"],
    }
    assert leaks.scoped(leaked, [tmp_path], ids) == {
        "mounts": [f"{tmp_path}/containers/{cid}/rootfs"],
        "cgroups": [f"/sys/fs/cgroup/memory/isle/{cid}"],
        "links": [f"isle-{cid[:8]}"],
        "children": ["4242"],
    }


def test_a_roots_default_bridge_and_its_nft_table_are_the_tests(tmp_path: Path) -> None:
    """A root's default bridge is named after a hash of its network store's path
    (isle<6 hex>d), not after an id: its bridge, taps and nft table still count as the test's."""
    import hashlib

    from isle.net.networks import Networks

    store = tmp_path / "root" / "networks"
    store.mkdir(parents=True)
    bridge = Networks(str(store), str(tmp_path / "run" / "networks")).default_bridge
    tag = hashlib.sha256(str(store).encode()).hexdigest()
    assert bridge == f"isle{tag[:6]}d"
    ids = leaks.own_ids([tmp_path])
    leaked = {"links": [bridge, "isle0a0b0cd"],
              "nft": [f"table inet isle-{bridge}", "table inet isle-isle0a0b0cd"]}
    assert leaks.scoped(leaked, [tmp_path], ids) == {
        "links": [bridge], "nft": [f"table inet isle-{bridge}"]}
