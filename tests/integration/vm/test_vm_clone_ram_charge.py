"""A pod clone's shared copy of its template's RAM (vm.snapshot._copy_ram_in) is made by a child
in the VM's cgroup: its tmpfs pages count against the container's memory limit, not the
runtime's (the copy is ~70 MiB per pod), and a copy the limit cannot hold fails cleanly."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from isle.errors import VMError
from isle.vm import snapshot

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]
MEM = "/sys/fs/cgroup/memory"
MiB = 1 << 20


@pytest.fixture
def memcg() -> Iterator[str]:
    if not os.path.isfile(os.path.join(MEM, "memory.limit_in_bytes")):
        pytest.skip("no cgroup v1 memory hierarchy here")
    d = os.path.join(MEM, f"isle-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(d)
    yield d
    for _ in range(100):
        try:
            os.rmdir(d)
            break
        except OSError:
            time.sleep(0.05)


@pytest.fixture
def ram() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:8]
    src, dest = f"/dev/shm/isle-test-{tag}.src", f"/dev/shm/isle-test-{tag}.dst"
    with open(src, "wb") as f:
        f.write(b"\x01" * (16 * MiB))
    yield src, dest
    for p in (src, dest):
        if os.path.lexists(p):
            os.unlink(p)


def _usage(d: str) -> int:
    with open(os.path.join(d, "memory.usage_in_bytes")) as f:
        return int(f.read())


def test_the_copy_is_charged_to_the_vms_cgroup(memcg: str, ram: tuple[str, str]) -> None:
    src, dest = ram
    before = _usage(memcg)
    snapshot._copy_ram_in(src, dest, (os.path.join(memcg, "cgroup.procs"),))
    with open(dest, "rb") as f:
        assert f.read() == b"\x01" * (16 * MiB)
    assert _usage(memcg) - before >= 15 * MiB  # the copy's pages are the container's
    with open(os.path.join(memcg, "cgroup.procs")) as f:
        assert f.read().split() == []  # only the child joined it, and it is gone


def test_a_copy_over_the_limit_fails_and_leaves_no_file(memcg: str,
                                                         ram: tuple[str, str]) -> None:
    src, dest = ram
    with open(os.path.join(memcg, "memory.limit_in_bytes"), "w") as f:
        f.write(str(4 * MiB))
    with open(os.path.join(memcg, "memory.memsw.limit_in_bytes")
              if os.path.exists(os.path.join(memcg, "memory.memsw.limit_in_bytes"))
              else os.devnull, "w") as f:
        f.write(str(4 * MiB))
    with pytest.raises(VMError, match="memory limit"):
        snapshot._copy_ram_in(src, dest, (os.path.join(memcg, "cgroup.procs"),))
    assert not os.path.lexists(dest)
