"""sys/proc: programs in Debian's sbin directories are found for users whose PATH lacks them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isle.sys import proc


def test_sbin_tools_are_found_without_sbin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    path = next((d for d in proc.SBIN if os.access(os.path.join(d, "mkfs.ext4"), os.X_OK)), None)
    if path is None:
        pytest.skip("no mkfs.ext4 in an sbin directory")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # an ordinary user's (rootless isle)
    assert proc.which("mkfs.ext4") == os.path.join(path, "mkfs.ext4")
    cp = proc.run([proc.MKFS_EXT4, "-V"], check=False)
    assert cp.returncode == 0 and b"mke2fs" in cp.stdout + cp.stderr


def test_a_missing_program_is_still_a_clear_127(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert proc.which("isle-no-such-tool") is None
    with pytest.raises(Exception) as e:
        proc.run(["isle-no-such-tool"])
    assert "not found" in str(e.value)


def test_a_program_on_path_stays_bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # exec looks it up (in env's PATH when one is given); only a name PATH lacks is resolved
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    (tmp_path / "mkfs.ext4").mkdir()  # a directory is not a program: still looked up in sbin
    assert proc._resolved(["true", "x"]) == ["true", "x"]
    assert proc._resolved(["isle-no-such-tool"]) == ["isle-no-such-tool"]
    found = proc._resolved(["mkfs.ext4"])[0]
    assert found == "mkfs.ext4" if proc.which("mkfs.ext4") is None else found.startswith("/")
