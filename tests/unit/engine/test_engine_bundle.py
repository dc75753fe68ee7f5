"""engine/bundle: the image's files the start path reads (user db, argv[0]) are looked up inside
the container's root, once, and only regular files are read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isle.engine.bundle import precheck_command, read_in_root
from isle.engine.reports import CannotInvoke, CommandNotFound

pytestmark = pytest.mark.timeout(20)


def _root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "bin").mkdir(parents=True)
    (r / "usr").mkdir()
    (r / "bin" / "tool").write_text("#!/bin/sh\n")
    (r / "bin" / "tool").chmod(0o755)
    (r / "bin" / "data").write_text("x\n")
    (r / "bin" / "data").chmod(0o644)
    (r / "etc").mkdir()
    return r


def _proc(*args: str, path: str = "/bin", cwd: str = "/") -> dict:
    return {"args": list(args), "env": [f"PATH={path}"], "cwd": cwd}


def test_precheck_finds_runs_and_refuses_like_docker(tmp_path: Path) -> None:
    r = str(_root(tmp_path))
    precheck_command(r, _proc("tool"))
    precheck_command(r, _proc("/bin/tool"))
    precheck_command(r, _proc("./tool", cwd="/bin"))
    with pytest.raises(CommandNotFound, match="in \\$PATH"):
        precheck_command(r, _proc("nosuch"))
    with pytest.raises(CannotInvoke, match="permission denied"):
        precheck_command(r, _proc("/bin/data"))
    with pytest.raises(CannotInvoke, match="is a directory"):
        precheck_command(r, _proc("/usr"))
    precheck_command(str(tmp_path / "missing"), _proc("tool"))  # the runtime says that


def test_precheck_resolves_argv0_inside_the_root(tmp_path: Path) -> None:
    """A PATH entry or argv[0] that is a symlink (absolute, or climbing) to the host's files
    is followed within the root: the host's executable is never what the check finds."""
    r = _root(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (host / "hosttool").write_text("#!/bin/sh\n")
    (host / "hosttool").chmod(0o755)
    (r / "hostbin").symlink_to(host)  # absolute: inside the root, /<tmp>/host is missing
    (r / "up").symlink_to("../../../../../../../../../../.." + str(host))
    with pytest.raises(CommandNotFound):
        precheck_command(str(r), _proc("hosttool", path="/hostbin:/up"))
    with pytest.raises(CommandNotFound):
        precheck_command(str(r), _proc("/up/hosttool"))
    (r / "bin" / "ln").symlink_to("/bin/tool")  # absolute, inside: found as in the container
    precheck_command(str(r), _proc("ln"))


def test_precheck_judges_a_rootfs_by_its_own_bin(tmp_path: Path) -> None:
    """No /bin or /usr in the root: nothing to judge by (a scratch image's static binary may
    be elsewhere); a /bin symlinked to a host directory does not count as the root's."""
    r = tmp_path / "rootfs"
    r.mkdir()
    (r / "bin").symlink_to(str(tmp_path))
    precheck_command(str(r), _proc("nosuch"))


def test_user_db_fifo_or_link_out_reads_nothing(tmp_path: Path) -> None:
    r = _root(tmp_path)
    os.mkfifo(r / "etc" / "passwd")  # opening it for reading would wait for a writer
    host = tmp_path / "hostgroup"
    host.write_text("hostonly:x:4242:\n")
    (r / "etc" / "group").symlink_to(host)
    assert read_in_root(str(r), "/etc/passwd") == ""
    assert read_in_root(str(r), "/etc/group") == ""
    (r / "etc" / "shadow").symlink_to("passwd")
    assert read_in_root(str(r), "/etc/shadow") == ""
