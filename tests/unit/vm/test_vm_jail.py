"""vm.jail's parent-side half: disks become fd sets, missing files are named, uids are leased."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isle.errors import VMError
from isle.vm import jail, qemu
from isle.vm.config import Drive, MachineConfig


def test_disks_become_fd_sets_read_write_ones_with_a_read_only_twin(tmp_path: Path) -> None:
    base, over, code, vars_ = (tmp_path / n for n in ("base", "over", "code", "vars"))
    for p in (base, over, code, vars_):
        p.write_bytes(b"x")
    cfg = MachineConfig(name="m", machine="q35", pflash=(str(code), str(vars_)),
                        drives=(Drive(id="d", path=str(over), format="qcow2",
                                      backing=str(base)),))
    out, fds = jail.drives_by_fd(cfg)
    try:
        d = out.drives[0]
        assert d.path.startswith("/dev/fdset/") and d.backing.startswith("/dev/fdset/")
        assert out.pflash[0] == str(code) and out.pflash[1].startswith("/dev/fdset/")
        import fcntl

        modes = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE for fd in fds}
        sets = {s if isinstance(s, tuple) else (s, s) for s in out.fdsets}
        rw_set = int(d.path.rsplit("/", 1)[1])
        members = {fd for fd, s in sets if s == rw_set}
        assert sorted(modes[fd] for fd in members) == [os.O_RDONLY, os.O_RDWR]
        assert {modes[fd] for fd, s in sets if s == int(d.backing.rsplit("/", 1)[1])} == {
            os.O_RDONLY}
        a = qemu.argv(out)
        assert str(over) not in " ".join(a) and str(base) not in " ".join(a)
    finally:
        for fd in fds:
            os.close(fd)


def test_a_missing_disk_is_named(tmp_path: Path) -> None:
    cfg = MachineConfig(name="m", machine="q35",
                        drives=(Drive(id="d", path=str(tmp_path / "nope")),))
    with pytest.raises(VMError, match="cannot open a disk of VM m"):
        jail.drives_by_fd(cfg)


@pytest.mark.root
def test_plan_names_a_missing_kernel_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    run = tmp_path / "run"
    run.mkdir()
    cfg = MachineConfig(name="m", kernel=str(tmp_path / "vmlinuz"))
    with pytest.raises(VMError, match="vmlinuz, which does not exist"):
        jail.plan(cfg, str(run))


@pytest.mark.root
def test_leases_are_exclusive_while_held() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a, fa = jail.lease()
    b, fb = jail.lease()
    try:
        assert a != b and jail.UID_BASE <= min(a, b) and max(a, b) < jail.UID_BASE + 65536
    finally:
        os.close(fa)
        os.close(fb)
    c, fc = jail.lease()  # released with the fd: free again (unless another VM took it since)
    os.close(fc)
    assert c <= max(a, b)
