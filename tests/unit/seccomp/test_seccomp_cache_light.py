"""The light cache path (isle.runtime.seccomp_cache): same entries as compile_filter, no heavy
imports, and the one-syscall install only where filter_flags would give 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isle.runtime import seccomp as S
from isle.runtime import seccomp_cache as C

pytestmark = pytest.mark.skipif(S._lib_path() is None, reason="needs libseccomp.so.2")

SMALL: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
     "comment": "é ünïcode", "args": []}]}


def test_canonical_form_is_json_dumps_sorted_compact() -> None:
    prof = S.default_profile()
    assert C._canonical(prof) == json.dumps(prof, sort_keys=True, separators=(",", ":"))
    assert C._canonical(SMALL) == json.dumps(SMALL, sort_keys=True, separators=(",", ":"))


def test_lookup_finds_what_compile_filter_cached(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISLE_SECCOMP_CACHE", str(tmp_path))
    assert C.lookup(SMALL) is None
    prog = S.compile_filter(SMALL)
    assert C.lookup(SMALL) == prog
    reordered = json.loads(json.dumps(SMALL, sort_keys=True))
    assert C.lookup(reordered) == prog
    assert C.lookup(dict(SMALL, defaultAction="SCMP_ACT_LOG")) is None
    assert C.lookup({"syscalls": {1, 2}}) is None  # not JSON: left to the full path's errors


def test_lookup_imports_neither_json_nor_re(tmp_path: Path) -> None:
    env = dict(os.environ, ISLE_SECCOMP_CACHE=str(tmp_path))
    src = str(Path(C.__file__).parents[2])
    code = ("import sys; sys.path.insert(0, %r); from isle.runtime import seccomp_cache as C; "
            "C.lookup({'defaultAction': 'SCMP_ACT_ALLOW'}); "
            "print(sorted(m for m in ('json', 're', 'typing', 'isle.runtime.seccomp') "
            "if m in sys.modules))" % src)
    out = subprocess.run([sys.executable, "-SE", "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("section", [
    {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]},
    {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x.sock"},
    {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"],
                                                      "action": "SCMP_ACT_NOTIFY"}]},
    {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "bad"},
])
def test_install_simple_declines_when_flags_would_not_be_zero(section: dict[str, Any]) -> None:
    assert C.install_simple(b"\0" * 8, section) is False  # nothing loaded: the prog is junk


def test_install_simple_loads_the_filter_in_a_child() -> None:
    prog = S.compile_filter(SMALL, use_cache=False)
    src = str(Path(C.__file__).parents[2])
    code = ("import sys, os, ctypes; sys.path.insert(0, %r)\n"
            "from isle.runtime import seccomp_cache as C\n"
            "from isle.sys import libc as L\n"
            "L.LinuxSyscalls().prctl(L.PR_SET_NO_NEW_PRIVS, 1)\n"
            "assert C.install_simple(bytes.fromhex(%r), %r)\n"
            "try:\n    os.mkdir('/tmp/never-made-%d')\nexcept OSError as e:\n"
            "    print(e.errno)\n" % (src, prog.hex(), SMALL, os.getpid()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "18"
