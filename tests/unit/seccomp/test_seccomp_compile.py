"""Compiling with the real libseccomp (no privileges needed) and the compiled-program cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isle.errors import ConfigError
from isle.runtime import seccomp as S

pytestmark = pytest.mark.skipif(S._lib_path() is None, reason="needs libseccomp.so.2")

SMALL: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]}


def _entries(d: Path) -> list[Path]:
    return sorted(d.glob("*.bpf"))


def test_compiles_to_sock_filter_array_and_caches(tmp_path: Path) -> None:
    prog = S.compile_filter(SMALL, cache_dir=str(tmp_path))
    assert prog and len(prog) % 8 == 0
    # the last instruction of a seccomp program is a BPF_RET (class 0x06)
    assert int.from_bytes(prog[-8:-6], "little") & 0x07 == 0x06
    [entry] = _entries(tmp_path)
    assert entry == Path(S.cache_path(SMALL, cache_dir=str(tmp_path)))
    assert entry.read_bytes()[40:] == prog
    assert entry.stat().st_mode & 0o777 == 0o600


def test_a_hit_is_served_from_the_file_without_recompiling(tmp_path: Path) -> None:
    S.compile_filter(SMALL, cache_dir=str(tmp_path))
    [entry] = _entries(tmp_path)
    fake = b"\x06\x00\x00\x00\x00\x00\xff\x7f"  # a one-instruction "return ALLOW"
    entry.write_bytes(b"ISLEBPF1" + hashlib.sha256(fake).digest() + fake)
    assert S.compile_filter(SMALL, cache_dir=str(tmp_path)) == fake


@pytest.mark.parametrize("damage", [
    lambda b: b[:-3],                      # truncated
    lambda b: b[:45] + b"\xff" + b[46:],   # one byte flipped in the program
    lambda b: b"garbage",
    lambda b: b"",
])
def test_a_corrupt_entry_is_ignored_and_rebuilt(tmp_path: Path, damage: Any) -> None:
    good = S.compile_filter(SMALL, cache_dir=str(tmp_path))
    [entry] = _entries(tmp_path)
    entry.write_bytes(damage(entry.read_bytes()))
    assert S.compile_filter(SMALL, cache_dir=str(tmp_path)) == good
    assert entry.read_bytes()[40:] == good


def test_an_entry_others_could_write_is_not_trusted(tmp_path: Path) -> None:
    good = S.compile_filter(SMALL, cache_dir=str(tmp_path))
    [entry] = _entries(tmp_path)
    fake = b"\x06\x00\x00\x00\x00\x00\xff\x7f"
    entry.write_bytes(b"ISLEBPF1" + hashlib.sha256(fake).digest() + fake)
    entry.chmod(0o666)
    assert S.compile_filter(SMALL, cache_dir=str(tmp_path)) == good
    assert entry.stat().st_mode & 0o777 == 0o600


def test_key_is_canonical_and_covers_content(tmp_path: Path) -> None:
    reordered = json.loads(json.dumps(SMALL))
    reordered = {"syscalls": reordered["syscalls"], "defaultAction": "SCMP_ACT_ALLOW"}
    c = str(tmp_path)
    assert S.cache_path(reordered, cache_dir=c) == S.cache_path(SMALL, cache_dir=c)
    other = {**SMALL, "defaultAction": "SCMP_ACT_LOG"}
    assert S.cache_path(other, cache_dir=c) != S.cache_path(SMALL, cache_dir=c)
    ignoring = S.cache_path(SMALL, cache_dir=c, unknown_names="ignore")
    assert ignoring != S.cache_path(SMALL, cache_dir=c)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISLE_SECCOMP_CACHE", str(tmp_path / "env-cache"))
    S.compile_filter(SMALL)
    assert len(_entries(tmp_path / "env-cache")) == 1


def test_unwritable_cache_still_compiles(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert S.compile_filter(SMALL, cache_dir=str(blocker / "sub")) == \
        S.compile_filter(SMALL, use_cache=False)


def test_cache_hit_loads_neither_ctypes_nor_libseccomp(tmp_path: Path) -> None:
    S.compile_filter(S.default_profile(), cache_dir=str(tmp_path))
    code = ("import sys; from isle.runtime import seccomp as S; "
            f"p = S.compile_filter(S.default_profile(), cache_dir={str(tmp_path)!r}); "
            "print(len(p), 'ctypes' in sys.modules, 'isle.sys.seccomp_lib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    assert out[1:] == ["False", "False"] and int(out[0]) > 0


def test_unknown_name_is_an_error_naming_the_field_unless_ignored() -> None:
    bad = {"defaultAction": "SCMP_ACT_ALLOW",
           "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
                        {"names": ["mkdir", "mkdri"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(ConfigError, match=r'^linux.seccomp.syscalls\[1\].names\[1\]: unknown '
                                          r'syscall "mkdri" \(libseccomp 2\.\d+\.\d+ knows'):
        S.compile_filter(bad, use_cache=False)
    assert S.compile_filter(bad, use_cache=False, unknown_names="ignore") == \
        S.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}, use_cache=False)


def test_names_of_other_arches_are_accepted() -> None:
    # socketcall/chown32 do not exist on x86_64; libseccomp applies them to x86 only
    sec = {"defaultAction": "SCMP_ACT_ALLOW",
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
           "syscalls": [{"names": ["socketcall", "chown32"], "action": "SCMP_ACT_ERRNO"}]}
    with_x86 = S.compile_filter(sec, use_cache=False)
    native_only = S.compile_filter({**sec, "architectures": []}, use_cache=False)
    assert len(with_x86) > len(native_only)


def test_arch_unknown_to_this_libseccomp_names_the_field() -> None:
    from isle.sys.seccomp_lib import Libseccomp

    lib = Libseccomp(S._lib_path() or "")
    if lib.arch_token("loongarch64"):
        pytest.skip("this libseccomp knows loongarch64")
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_LOONGARCH64"]}
    with pytest.raises(ConfigError, match=r"^linux.seccomp.architectures\[0\]: architecture "
                                          r"loongarch64 is not supported by libseccomp"):
        S.compile_filter(sec, use_cache=False)


def test_docker_default_compiles_and_bad_action_never_reaches_libseccomp(tmp_path: Path) -> None:
    assert len(S.compile_filter(S.default_profile(), use_cache=False)) > 8 * 300
    with pytest.raises(ConfigError, match='unknown action "SCMP_ACT_FOO"'):
        S.compile_filter({**SMALL, "defaultAction": "SCMP_ACT_FOO"}, cache_dir=str(tmp_path))
    assert _entries(tmp_path) == []  # nothing cached for a bad profile
    assert os.listdir(tmp_path) == []


def test_features_describe_this_host() -> None:
    f = S.features()
    assert f["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in f["actions"] and "SCMP_CMP_MASKED_EQ" in f["operators"]
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= set(f["archs"])
    assert set(f["supportedFlags"]) <= set(f["knownFlags"]) == set(S.FLAGS)
    assert "SECCOMP_FILTER_FLAG_TSYNC" in f["supportedFlags"]  # Linux >= 3.17
