"""Volumes: named volumes filled from the image on first use, survive rm unless -v; binds; tmpfs; ro."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.root]


def test_named_volume_filled_from_image_and_survives_rm(isle):
    cid = isle("run", "-d", "-v", "etcvol:/etc", "busybox", "sh", "-c",
               "echo hi > /etc/new; exec sleep 30").stdout.strip()
    isle("rm", "-f", cid)
    vols = isle("volume", "ls", "-q").stdout.split()
    assert vols == ["etcvol"]
    cp = isle("run", "--rm", "-v", "etcvol:/data:ro", "busybox", "sh", "-c",
              "cat /data/passwd | head -1; ls /data/new; touch /data/x 2>/dev/null || echo ro")
    assert cp.stdout.splitlines() == ["root:x:0:0:root:/root:/bin/sh", "/data/new", "ro"]
    info = json.loads(isle("volume", "inspect", "etcvol").stdout)[0]
    assert info["Name"] == "etcvol" and info["Driver"] == "local"
    cp = isle("volume", "rm", "nosuchvol", check=False)
    assert cp.returncode == 1 and "nosuchvol" in cp.stderr
    isle("volume", "rm", "etcvol")
    assert isle("volume", "ls", "-q").stdout == ""


def test_anonymous_volume_removed_with_rm_v(isle, tmp_path):
    cid = isle("create", "-v", "/data", "busybox", "true").stdout.strip()
    assert len(isle("volume", "ls", "-q").stdout.split()) == 1
    cp = isle("volume", "rm", isle("volume", "ls", "-q").stdout.strip(), check=False)
    assert cp.returncode == 1 and "in use" in cp.stderr
    isle("rm", "-v", cid)
    assert isle("volume", "ls", "-q").stdout == ""


def test_bind_tmpfs_readonly_rootfs(isle, tmp_path):
    (tmp_path / "in.txt").write_text("from host\n")
    cp = isle("run", "--rm", "--read-only", "-v", f"{tmp_path}:/host",
              "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m", "busybox", "sh", "-c",
              "cat /host/in.txt; echo out > /host/out.txt; echo t > /scratch/t && echo tmpfs-ok; "
              "touch /nope 2>/dev/null || echo rootfs-ro")
    assert cp.stdout.splitlines() == ["from host", "tmpfs-ok", "rootfs-ro"]
    assert (tmp_path / "out.txt").read_text() == "out\n"
    cp = isle("run", "--rm", "-v", "/no/such/dir:/x", "busybox", "true", check=False)
    assert cp.returncode == 125 and "/no/such/dir" in cp.stderr
