"""--isolation sandbox's runsc flags and settling (no runsc needed)."""

from __future__ import annotations

import os

import pytest

from isle.engine import sandbox
from isle.engine.options import RunOptions
from isle.errors import ConfigError, Unsupported


def test_global_args_by_network_mode(monkeypatch):
    monkeypatch.setattr(sandbox, "platform", lambda: ("ptrace", "no vmx/svm"))
    assert sandbox.global_args("none") == ["--platform=ptrace", "--network=none"]
    assert sandbox.global_args("host") == ["--platform=ptrace", "--network=host"]
    assert sandbox.global_args("bridge") == ["--platform=ptrace"]
    monkeypatch.setattr(sandbox, "platform", lambda: ("kvm", "CPU has vmx"))
    assert sandbox.global_args("mynet") == ["--platform=kvm"]


def test_oci_args_use_the_shim_only_with_a_network(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "platform", lambda: ("ptrace", ""))
    exe, root, args = sandbox.oci_args(str(tmp_path), "/usr/bin/runsc", "none")
    assert exe == "/usr/bin/runsc" and root == str(tmp_path / "runsc" / "state")
    exe, root, args = sandbox.oci_args(str(tmp_path), "/usr/bin/runsc", "bridge")
    assert exe == str(tmp_path / "runsc" / "runsc-netns")
    st = os.stat(exe)
    assert st.st_mode & 0o777 == 0o700 and os.stat(tmp_path / "runsc").st_mode & 0o777 == 0o700
    text = open(exe).read()
    assert "/proc/sys/net" in text and "/usr/bin/runsc" in text and "--propagation private" in text
    # rewritten when it differs (another runsc path), kept otherwise
    exe2, _, _ = sandbox.oci_args(str(tmp_path), "/opt/runsc", "bridge")
    assert exe2 == exe and "/opt/runsc" in open(exe).read()


def test_check_settles_runtime_and_level(monkeypatch):
    monkeypatch.setattr(sandbox, "runsc_path", lambda: "/usr/bin/runsc")
    o = RunOptions(image="busybox", isolation="sandbox")
    sandbox.check(o, rootless=False)
    assert (o.runtime, o.isolation) == ("/usr/bin/runsc", "sandbox")
    o = RunOptions(image="busybox", runtime="runsc")
    sandbox.check(o, rootless=False)
    assert (o.runtime, o.isolation) == ("runsc", "sandbox")
    with pytest.raises(ConfigError, match="runsc"):
        sandbox.check(RunOptions(image="busybox", isolation="sandbox", runtime="runc"), False)
    with pytest.raises(Unsupported, match="root"):
        sandbox.check(RunOptions(image="busybox", isolation="sandbox"), True)


def test_levels_say_why_not():
    lv = sandbox.levels(False, {"qemu": None}, True)
    assert lv["container"] == "" and "qemu" in lv["vm"]
    lv = sandbox.levels(True, {"qemu": "x", "guest_kernel": {"version": "6"}}, False)
    assert "isle-vm-runtime" in lv["vm"]
