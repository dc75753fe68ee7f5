"""Pure planning: mount options, namespaces, devices, caps, signals, secure paths."""

from __future__ import annotations

import os
import stat

import pytest

from isle.errors import ConfigError
from isle.runtime import plan
from isle.sys import libc as L


def test_mount_options_split_flags_propagation_and_data():
    flags, prop, data = plan.parse_mount_options(
        ["nosuid", "noexec", "ro", "rw", "rbind", "rslave", "mode=755", "size=65536k", "tmpcopyup"])
    assert flags == L.MS_NOSUID | L.MS_NOEXEC | L.MS_BIND | L.MS_REC
    assert prop == [L.MS_SLAVE | L.MS_REC]
    assert data == "mode=755,size=65536k"


def test_mount_plan_binds_need_remount_and_relative_sources(tmp_path):
    ms = plan.mount_plan([
        {"destination": "/data", "type": "bind", "source": "vol", "options": ["rbind", "ro"]},
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "options": ["ro"]},
    ], "/r", "/bundle")
    assert ms[0].kind == "bind" and ms[0].source == "/bundle/vol"
    assert ms[0].remount == L.MS_RDONLY
    assert ms[1].kind == "fs" and ms[1].fstype == "proc" and ms[1].remount == 0
    assert ms[2].kind == "cgroup"
    with pytest.raises(ConfigError, match=r"mounts\[0\].type"):
        plan.mount_plan([{"destination": "/x", "source": "y"}], "/r", "/b")


def test_split_namespaces_puts_user_first():
    new, join = plan.split_namespaces([
        {"type": "pid"}, {"type": "network", "path": "/run/netns/x"},
        {"type": "user", "path": "/proc/1/ns/user"}, {"type": "mount"}])
    assert new == L.CLONE_NEWPID | L.CLONE_NEWNS
    assert join == [("user", "/proc/1/ns/user"), ("network", "/run/netns/x")]


def test_device_plan_defaults_spec_devices_and_userns_binds():
    steps = plan.device_plan([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                               "fileMode": 0o600, "uid": 0, "gid": 0}], in_userns=False)
    by = {s[1]: s for s in steps}
    assert set(by) >= {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                       "/dev/tty", "/dev/fuse"}
    assert by["/dev/fuse"][2] == stat.S_IFCHR | 0o600 and by["/dev/fuse"][3:5] == (10, 229)
    assert all(s[0] == "bind" for s in plan.device_plan([], in_userns=True))


def test_cap_mask_and_signals():
    assert plan.cap_mask(["CAP_KILL", "net_bind_service"]) == (1 << 5) | (1 << 10)
    assert plan.parse_signal("9") == plan.parse_signal("KILL") == plan.parse_signal("SIGKILL") == 9
    assert plan.parse_signal("sigterm") == 15
    assert plan.parse_signal("RTMIN+2") == 36
    for bad in ("0", "65", "SIGNOPE", "RTMIN+99"):
        with pytest.raises(ConfigError):
            plan.parse_signal(bad)
