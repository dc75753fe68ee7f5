"""Guest pieces built on the host: cpio newc archives, module order, job scripts, disks."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from isle.errors import ConfigError, VMError
from isle.vm import disk, initramfs, kernel
from isle.vm.job import GuestMount, Job, render


def test_newc_is_read_back_by_cpio(tmp_path: Path) -> None:
    if not shutil.which("cpio"):
        pytest.skip("needs cpio")
    data = initramfs.newc(
        [
            initramfs.Entry("bin", stat.S_IFDIR | 0o755),
            initramfs.Entry("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
            initramfs.Entry("bin/sh", stat.S_IFLNK | 0o777, target="busybox"),
        ]
    )
    assert len(data) % 512 == 0
    out = subprocess.run(
        ["cpio", "-t", "-v"], input=data, capture_output=True, check=True
    ).stdout.decode()
    assert "bin/hello" in out and "bin/sh -> busybox" in out
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.readlink(tmp_path / "bin/sh") == "busybox"


def _fake_ko(d: Path, name: str, deps: str) -> None:
    (d / f"{name}.ko").write_bytes(
        b"\x7fELF....\0license=GPL\0depends=" + deps.encode() + b"\0name=x\0"
    )


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    _fake_ko(tmp_path, "virtio_ring", "")
    _fake_ko(tmp_path, "virtio", "virtio_ring")
    _fake_ko(tmp_path, "virtio_blk", "virtio,virtio_ring")
    _fake_ko(tmp_path, "overlay", "")
    assert kernel.module_load_order(str(tmp_path), ("virtio_blk", "overlay")) == [
        "virtio_ring",
        "virtio",
        "virtio_blk",
        "overlay",
    ]


def test_missing_module_is_named(tmp_path: Path) -> None:
    _fake_ko(tmp_path, "virtio_blk", "virtio")
    with pytest.raises(VMError, match="virtio missing"):
        kernel.module_load_order(str(tmp_path), ("virtio_blk",))


def test_no_kernel_cached_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(VMError, match="scripts/fetch-guest-kernel"):
        kernel.find(str(tmp_path))


def test_fetch_keeps_a_cached_kernel_when_an_optional_module_cannot_be_had(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A cached kernel that boots is returned even when its package (for an optional module it
    lacks) cannot be downloaded: a warning names the module, no marker stops the next try."""
    from isle.errors import CommandError

    d = tmp_path / "kernel" / "6.1.0-9-cloud-amd64"
    (d / "modules").mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"x")
    os.symlink("6.1.0-9-cloud-amd64", tmp_path / "kernel" / "current")
    for m in kernel.MODULES:
        _fake_ko(d / "modules", m, "")
    asked: list[list[str]] = []

    def run(argv: list[str], **_: object) -> None:
        asked.append(list(argv))
        raise CommandError(list(argv), 100, "E: Can't find a source to download")

    monkeypatch.setattr(kernel.proc, "run", run)
    k = kernel.fetch(str(tmp_path), package="linux-image-6.1.0-99-cloud-amd64")
    assert k.version == "6.1.0-9-cloud-amd64"
    assert asked == [["apt-get", "download", "-q", "linux-image-6.1.0-9-cloud-amd64"]]
    err = capsys.readouterr().err
    assert "virtio_balloon" in err and "not added" in err
    assert not [f for f in os.listdir(d) if f.startswith(".optional-")]


def test_job_script_quotes_everything_and_keeps_stdio_apart() -> None:
    job = Job(
        args=("sh", "-c", "echo 'a b'; exit 3"),
        env=("A=x y", "B=$(reboot)"),
        cwd="/w d",
        uid=1000,
        gid=100,
        additional_gids=(5, 6),
        hostname="h'x",
        rlimits=((7, 64, 128),),
        no_new_privs=True,
        mounts=(
            GuestMount(type="proc", destination="/proc", source="proc",
                       options=("nosuid", "hidepid=2")),
            GuestMount(type="bind", destination="/etc/hosts", source="/x", options=("rbind",)),
        ),
    )
    s = render(job)
    assert "echo 'h'\"'\"'x' > /proc/sys/kernel/hostname" in s
    # not the standard one
    assert "inroot /newroot /proc && " in s and 'mount -t proc -o nosuid,hidepid=2 proc "$R"' in s
    # standard mounts the job did not ask for go
    assert '{ inroot /newroot /dev/mqueue && umount "$R"; }' in s
    assert "/etc/hosts" not in s  # host paths cannot reach a VM
    assert "-e 'B=$(reboot)'" in s and "-e 'A=x y'" in s
    assert "-w '/w d' -u 1000 -g 100 -G 5,6 -l 7:64:128 -n" in s
    assert '<"$in" >"$out" 2>"$err" &' in s
    assert s.rstrip().endswith("poweroff -f")


def test_job_script_is_valid_sh() -> None:
    sh = shutil.which("sh")
    assert sh
    s = render(Job(args=("true",), hostname="x"))
    subprocess.run([sh, "-n", "-c", s], check=True)


def test_rootfs_image_cached_by_content(tmp_path: Path) -> None:
    if not shutil.which("mkfs.erofs"):
        pytest.skip("needs erofs-utils")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("x\n")
    a = disk.rootfs_image(str(root), str(tmp_path / "c"))
    assert a == disk.rootfs_image(str(root), str(tmp_path / "c"))
    with open(a, "rb") as f:
        f.seek(1024)
        assert f.read(4) == bytes.fromhex("e2e1f5e0")  # erofs superblock magic
    (root / "etc/hostname").write_text("changed\n")
    assert disk.rootfs_image(str(root), str(tmp_path / "c")) != a
    assert not [p for p in os.listdir(tmp_path / "c" / "disks") if ".tmp." in p]


def test_rootfs_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="root.path"):
        disk.rootfs_image(str(tmp_path / "nope"), str(tmp_path))


def test_not_a_disk_image(tmp_path: Path) -> None:
    if not shutil.which("qemu-img"):
        pytest.skip("needs qemu-img")
    p = tmp_path / "notes.txt"
    p.write_text("hello, I am not a disk\n" * 100)
    with pytest.raises(VMError, match="not a disk image"):
        disk.check_bootable(str(p))
    with pytest.raises(ConfigError):
        disk.check_bootable(str(tmp_path / "missing.img"))


def test_standard_mounts_are_not_mounted_twice() -> None:
    from isle.vm.job import STANDARD_MOUNTS, premount_script

    s = render(Job(args=("true",), mounts=STANDARD_MOUNTS))
    assert "mount -t" not in s and "umount" not in s
    assert premount_script().count("mount -t") == len(STANDARD_MOUNTS)


def test_proc_with_dockers_or_no_flags_is_the_premounted_one() -> None:
    """runc's bare proc and Docker's nosuid,noexec,nodev proc both cost no fork in the guest."""
    for opts in ((), ("nosuid", "noexec", "nodev"), ("nodev", "nosuid")):
        job = Job(args=("true",), mounts=(
            GuestMount(type="proc", destination="/proc", source="proc", options=opts),))
        s = render(job)
        assert "/newroot/proc" not in s.replace("umount /newroot/dev", ""), s


def test_rootfs_image_found_by_key_without_building(tmp_path: Path) -> None:
    """The engine names a fresh container's rootfs by its image: the cached disk is found by
    that name; a key that could escape the cache directory is refused."""
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "cache" / "disks").mkdir(parents=True)
    cached = tmp_path / "cache" / "disks" / "k-abc123.erofs"
    cached.write_bytes(b"disk")
    got = disk.rootfs_image(str(tmp_path / "rootfs"), str(tmp_path / "cache"), key="abc123")
    assert got == str(cached)
    with pytest.raises(ConfigError, match="rootfs-key"):
        disk.rootfs_image(str(tmp_path / "rootfs"), str(tmp_path / "cache"), key="../x")
