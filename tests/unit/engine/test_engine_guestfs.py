"""engine/guestfs (host side): the private directory a guest's files land in, and export."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from isle.engine import guestfs

pytestmark = pytest.mark.timeout(20)


def _t(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(ctx=SimpleNamespace(s=SimpleNamespace(root=str(tmp_path / "data"),
                                                   runroot=str(tmp_path / "run"))))


def test_private_dir_tightens_an_existing_guest_files_dir(tmp_path: Path) -> None:
    """A guest-files directory left world-readable (an older install, an admin's mkdir) is
    made 0700 before a guest's files are unpacked below it."""
    base = tmp_path / "data" / "guest-files"
    base.mkdir(parents=True)
    base.chmod(0o755)
    d = guestfs._private_dir(_t(tmp_path))
    assert os.path.dirname(d) == str(base)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    os.rmdir(d)


def test_export_passes_the_guests_tar_through_and_leaves_nothing(tmp_path: Path,
                                                                 monkeypatch) -> None:
    blob = os.urandom(3 << 20)

    def fake_guest(t, rec, op, args, in_fd, out_fd):
        assert op == "export"
        os.write(out_fd, blob)
        return ""

    monkeypatch.setattr(guestfs, "_guest", fake_guest)
    out = io.BytesIO()
    guestfs.export(_t(tmp_path), None, out)
    assert out.getvalue() == blob
    assert os.listdir(tmp_path / "data" / "guest-files") == []
