"""The rootfs executor against FakeSyscalls: which mounts, in which order, with which flags."""

from __future__ import annotations

import errno
import os

import pytest

from isle.errors import ConfigError
from isle.runtime import process, rootfs
from isle.sys import libc as L
from isle.sys.libc import FakeSyscalls


def _mounts(fake):
    return [c[1] for c in fake.calls if c[0] == "mount"]


class _ByFd(FakeSyscalls):
    """Records a mount target given by fd (/proc/self/fd/N) as 'fd:' + the path it held."""

    def mount(self, source, target, fstype, flags=0, data=None):
        if target.startswith("/proc/self/fd/"):
            target = "fd:" + os.readlink(target)
        super().mount(source, target, fstype, flags, data)


def test_prepare_root_makes_slave_then_binds_rootfs(tmp_path):
    fake = FakeSyscalls()
    rootfs.prepare_root(fake, str(tmp_path), None)
    assert _mounts(fake) == [(None, "/", None, L.MS_SLAVE | L.MS_REC, None),
                             (str(tmp_path), str(tmp_path), None, L.MS_BIND | L.MS_REC, None)]


def test_do_mounts_fs_bind_remount_and_propagation(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    src = tmp_path / "data"
    src.mkdir()
    fake = _ByFd()
    rootfs.do_mounts(fake, [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "mode=755"]},
        {"destination": "/data", "type": "bind", "source": str(src),
         "options": ["rbind", "ro", "nosuid", "rprivate"]},
    ], str(root), str(tmp_path))
    ms = _mounts(fake)
    assert ms[0] == ("proc", f"fd:{root}/proc", "proc", 0, None)
    assert ms[1] == ("tmpfs", f"fd:{root}/dev", "tmpfs", L.MS_NOSUID, "mode=755")
    assert ms[2] == (str(src), f"fd:{root}/data", None, L.MS_BIND | L.MS_REC, None)
    assert ms[3] == (None, f"fd:{root}/data", None,
                     L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID, None)
    assert ms[4] == (None, f"fd:{root}/data", None, L.MS_PRIVATE | L.MS_REC, None)
    assert (root / "data").is_dir() and (root / "proc").is_dir()


@pytest.mark.parametrize("link", ["{host}", "../../../../../../../..{host}"])
def test_do_mounts_resolves_symlinked_targets_inside_the_root(tmp_path, link):
    root = tmp_path / "root"
    host = tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (root / "dev").symlink_to(link.format(host=host))  # absolute / climbing: the host's dir
    (root / "file").write_text("x")
    (root / "up").symlink_to("../../../")
    fake = _ByFd()
    rootfs.do_mounts(fake, [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}],
                     str(root), str(tmp_path))
    inside = root / str(host).lstrip("/")
    assert _mounts(fake) == [("tmpfs", f"fd:{inside}", "tmpfs", 0, None)]
    assert inside.is_dir() and os.listdir(host) == []
    with pytest.raises(ConfigError, match=r"mounts\[0\]: mounting tmpfs on /file/x: Not a dir"):
        rootfs.do_mounts(fake, [{"destination": "/file/x", "type": "tmpfs", "source": "tmpfs"}],
                         str(root), str(tmp_path))
    with pytest.raises(ConfigError, match=r"/up resolves to the container's root"):
        rootfs.do_mounts(fake, [{"destination": "/up", "type": "tmpfs", "source": "tmpfs"}],
                         str(root), str(tmp_path))


def test_setup_dev_makes_nodes_and_links_in_the_resolved_dev(tmp_path, monkeypatch):
    root = tmp_path / "root"
    host = tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (root / "dev").symlink_to(str(host))
    made = []
    monkeypatch.setattr("os.mknod", lambda name, mode, dev, dir_fd: made.append(
        os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)))
    monkeypatch.setattr("os.chown", lambda *a, **k: None)
    rootfs.setup_dev(FakeSyscalls(), str(root), [], in_userns=False)
    inside = root / str(host).lstrip("/")
    assert os.listdir(host) == []
    assert made and all(m.startswith(str(inside) + "/") for m in made)
    assert os.readlink(inside / "ptmx") == "pts/ptmx"


def test_bind_of_missing_source_names_the_mount(tmp_path):
    with pytest.raises(ConfigError) as ei:
        rootfs.do_mounts(FakeSyscalls(), [{"destination": "/x", "type": "bind",
                                           "source": "/no/such", "options": ["bind"]}],
                         str(tmp_path), str(tmp_path))
    assert ei.value.field == "mounts[0].source"


def test_kernel_refusal_names_the_mount(tmp_path):
    fake = FakeSyscalls()
    fake.fail["mount"] = errno.EINVAL
    with pytest.raises(ConfigError, match=r"mounts\[0\]: mounting proc on /proc: Invalid"):
        rootfs.do_mounts(fake, [{"destination": "/proc", "type": "proc", "source": "proc"}],
                         str(tmp_path), str(tmp_path))


def test_pivot_uses_dot_dot_trick_and_no_pivot_moves(tmp_path, monkeypatch):
    monkeypatch.setattr("os.chdir", lambda p: None)
    monkeypatch.setattr("os.chroot", lambda p: None)
    fake = FakeSyscalls()
    rootfs.pivot(fake, str(tmp_path), no_pivot=False)
    assert [c[0] for c in fake.calls] == ["pivot_root", "mount", "umount2"]
    assert fake.calls[2] == ("umount2", (".", L.MNT_DETACH))
    fake = FakeSyscalls()
    rootfs.pivot(fake, str(tmp_path), no_pivot=True)
    assert fake.calls == [("mount", (str(tmp_path), "/", None, L.MS_MOVE, None))]


def test_set_user_and_caps_order(monkeypatch):
    calls = []
    monkeypatch.setattr("os.setgroups", lambda g: calls.append(("setgroups", g)))
    monkeypatch.setattr("os.setresgid", lambda *a: calls.append(("setresgid", a)))
    monkeypatch.setattr("os.setresuid", lambda *a: calls.append(("setresuid", a)))
    monkeypatch.setattr("os.umask", lambda m: calls.append(("umask", m)))
    fake = FakeSyscalls()
    caps = {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]}
    process.set_user_and_caps(fake, {"capabilities": caps, "user": {
        "uid": 1000, "gid": 100, "additionalGids": [5], "umask": 0o27}})
    names = [c[0] for c in fake.calls]
    drops = [c[1][1] for c in fake.calls if c[0] == "prctl" and c[1][0] == L.PR_CAPBSET_DROP]
    assert 5 not in drops and len(drops) == process.LAST_CAP
    assert names.index("capset") > names.index("prctl")
    assert fake.caps == (1 << 5, 1 << 5, 1 << 5)
    assert ("prctl", (L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, 5, 0, 0)) in fake.calls
    assert calls == [("setgroups", [5]), ("setresgid", (100, 100, 100)),
                     ("setresuid", (1000, 1000, 1000)), ("umask", 0o27)]


def test_lookup_exec_names_missing_program(tmp_path):
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o755)
    assert process.lookup_exec("tool", [f"PATH=/nope:{tmp_path}"]) == f"{tmp_path}/tool"
    with pytest.raises(ConfigError, match='exec: "nosuch": executable file not found'):
        process.lookup_exec("nosuch", [f"PATH={tmp_path}"])


def test_lsm_labels_are_unsupported_only_when_set_and_absent(monkeypatch):
    from isle.errors import Unsupported

    process.lsm_labels({})  # nothing asked: nothing to do
    monkeypatch.setattr("os.path.exists", lambda p: False)
    monkeypatch.setattr("os.path.isdir", lambda p: False)
    with pytest.raises(Unsupported, match="process.apparmorProfile: 'x': AppArmor is unsupported"):
        process.lsm_labels({"apparmorProfile": "x"})
    with pytest.raises(Unsupported, match="process.selinuxLabel"):
        process.lsm_labels({"selinuxLabel": "system_u:system_r:container_t:s0"})
