"""cp, export, diff and commit of a VM container (--isolation vm) keep the container-side rules
of test_copy_paths.py: the guest's files come out through the guest (its tar, unpacked on the host
by the layer unpacker) and go in through it (placed inside the container's root by the guest), so
symlinks the container plants towards host paths never reach the host, set-id bits are dropped
and device nodes are not recreated on the way out. One VM (TCG) serves every check."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(240)]

SECRET = "HOSTSECRET-" + uuid.uuid4().hex
HOSTONLY = "hostonly-" + uuid.uuid4().hex[:8]


def _tree(p: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for top, dirs, files in os.walk(p):
        for n in [top, *(os.path.join(top, x) for x in dirs + files)]:
            st = os.lstat(n)
            data = Path(n).read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out[n] = (st.st_mode, st.st_uid, st.st_mtime_ns, data)
    return out


def _leaked(path: Path) -> bool:
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(top, n)
            if HOSTONLY in n or (os.path.isfile(p) and not os.path.islink(p)
                                 and SECRET.encode() in Path(p).read_bytes()):
                return True
    return False


def test_vm_cp_paths_stay_inside_the_guest_container(isle, tmp_path: Path) -> None:
    d = tmp_path / "canary"
    d.mkdir()
    (d / HOSTONLY).write_text(SECRET)
    (d / "secret").write_text(SECRET)
    before = _tree(d)
    rel = "../" * 8 + str(d.relative_to("/"))
    isle("run", "-d", "--isolation", "vm", "--network", "none", "--name", "vc", "busybox", "sh",
         "-c", f"mkdir -p /d /x && ln -s {d} /d/abs && ln -s {rel} /d/rel && "
         f"ln -s {d}/secret /d/file && echo inner > /d/secret && "
         "cp /bin/busybox /x/suid && chmod 6755 /x/suid && mknod -m 666 /x/mem c 1 1 && "
         "mknod -m 666 /x/disk b 8 0 && mkfifo /x/fifo && echo up && sleep 300", timeout=120)
    for _ in range(300):
        if "up" in isle("logs", "vc").stdout:
            break
        import time

        time.sleep(0.2)
    out = tmp_path / "out"
    out.mkdir()
    # out of the container, through its symlinks: never the host's files
    for i, src in enumerate(["/d/abs", "/d/abs/", f"/d/abs/{HOSTONLY}", "/d/rel/.",
                             f"/d/rel/{HOSTONLY}", "/d/file", "/d"]):
        isle("cp", f"vc:{src}", str(out / f"o{i}"), check=False)
    assert not _leaked(out)
    assert os.readlink(out / "o6" / "abs") == str(d)  # a symlink in a tree stays a symlink
    # into the container, through them: lands inside it (the guest's root), never on the host
    host = tmp_path / "in.txt"
    host.write_text("INTRUDER")
    for dst in ("/d/abs/", "/d/abs/new", "/d/rel/", "/d/file", "/d/rel/sub/x"):
        r = isle("cp", str(host), f"vc:{dst}", check=False)
        assert "Traceback" not in r.stderr, r.stderr
    assert _tree(d) == before
    # where the symlink's target exists inside the container, the file lands there
    isle("exec", "vc", "mkdir", "-p", str(d))
    isle("cp", str(host), "vc:/d/rel/new")
    assert isle("exec", "vc", "cat", f"{d}/new").stdout == "INTRUDER"
    assert _tree(d) == before
    # set-id bits dropped and no device nodes on the way out; a FIFO is kept
    isle("cp", "vc:/x", str(out / "x"))
    isle("cp", "vc:/x/suid", str(out / "suid"))
    for p in (out / "x" / "suid", out / "suid"):
        assert os.stat(p).st_mode & 0o6000 == 0
    assert not (out / "x" / "mem").exists() and not (out / "x" / "disk").exists()
    assert stat.S_ISFIFO(os.lstat(out / "x" / "fifo").st_mode)
    r = isle("cp", "vc:/x/mem", str(out / "mem"), check=False)
    assert not os.path.lexists(out / "mem") or stat.S_ISREG(os.lstat(out / "mem").st_mode)
    # export, diff and commit carry the container's files, never the host's
    cp = subprocess.run(isle.argv("export", "vc"), capture_output=True, env=isle.env,
                        timeout=120)
    assert cp.returncode == 0 and SECRET.encode() not in cp.stdout
    names = tarfile.open(fileobj=io.BytesIO(cp.stdout)).getnames()
    assert "./d/abs" in names and not any(HOSTONLY in n for n in names)
    assert "A /d/abs" in isle("diff", "vc").stdout.split("\n")
    isle("commit", "vc", "vc-img")
    assert not _leaked(isle.root)
    assert _tree(d) == before
    isle("rm", "-f", "vc", timeout=60)
