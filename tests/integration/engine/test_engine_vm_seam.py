"""A VM container through the engine's runtime seam (QEMU; TCG here): before its first start the
bundle's rootfs is what the guest gets, so `cp` into it works; once the guest runs, its writable
layer is a host file only the guest mounts, so cp/diff/commit/export ask the guest (an exec
slot while it runs, a maintenance boot once stopped) and act on what it sees; top and stats ask
the guest's kernel (the runtime's agent), with the host's PSS of the VM beside the guest's own
memory figures."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(240)]


def test_vm_container_files_through_its_guest_running_and_stopped(isle, tmp_path):
    src = tmp_path / "greeting"
    src.write_text("hello from the host\n")
    isle("create", "--isolation", "vm", "--network", "none", "--name", "vs", "busybox", "sh",
         "-c", "cat /greeting; echo guest-made > /made; rm /bin/ls; rm -rf /var; mkdir /var; "
         ">/var/new; echo up; sleep 100")
    isle("cp", str(src), "vs:/greeting")              # created, never started: the disk-to-be
    isle("start", "vs", timeout=120)
    for _ in range(150):
        if "up" in isle("logs", "vs").stdout:
            break
        time.sleep(0.2)
    assert isle("logs", "vs").stdout == "hello from the host\nup\n"
    # the writable layer is a sparse host file, not guest RAM
    upper = isle.root / "containers" / isle.inspect("vs")["Id"] / "guest-upper.ext4"
    assert upper.stat().st_blocks * 512 < upper.stat().st_size // 16
    # running: out of and into what the guest sees, at once
    out = tmp_path / "out"
    out.mkdir()
    isle("cp", "vs:/made", str(out / "made"))
    assert (out / "made").read_text() == "guest-made\n"
    isle("cp", str(src), "vs:/tmp/")
    assert isle("exec", "vs", "cat", "/tmp/greeting").stdout == "hello from the host\n"
    cp = isle("cp", "vs:/nope", str(out / "nope"), check=False)
    assert cp.returncode != 0 and "could not find the file /nope" in cp.stderr, cp.stderr
    diff = isle("diff", "vs").stdout.split("\n")
    for line in ("A /made", "D /bin/ls", "A /tmp/greeting", "A /greeting"):
        assert line in diff, diff
    assert not [x for x in diff if x.endswith(("/etc/hosts", "/etc/resolv.conf"))], diff
    isle("commit", "vs", "vs-img")
    assert isle("run", "--rm", "vs-img", "sh", "-c",  # /var: opaque (its /var/tmp is gone)
                "cat /made /tmp/greeting; ls /bin/ls || echo gone; ls /var").stdout == \
        "guest-made\nhello from the host\ngone\nnew\n"
    names = tarfile.open(fileobj=io.BytesIO(_export(isle, "vs"))).getnames()
    assert "./made" in names and "./tmp/greeting" in names and "./bin/ls" not in names
    # a 40 MB write lands in the host file (a tmpfs upper held it in the 128 MiB guest's RAM),
    # and `system df` counts it as the container's
    isle("exec", "vs", "sh", "-c", "dd if=/dev/zero of=/big bs=1M count=40 2>/dev/null && sync",
         timeout=120)
    assert upper.stat().st_blocks * 512 >= 40 << 20
    rows = isle("system", "df", "--format", "{{.Type}} {{.Size}}").stdout.splitlines()
    size = [r.split()[-1] for r in rows if r.startswith("Containers")][0]
    assert size.endswith("MB") and float(size[:-2]) >= 40, rows  # Docker's decimal units
    isle("exec", "vs", "rm", "/big")
    top = isle("top", "vs").stdout
    assert "PID" in top.splitlines()[0] and "sleep 100" in top, top
    cp = isle("top", "vs", "-o", "pid", check=False)
    assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
    st = json.loads(isle("stats", "--no-stream", "--format", "{{json .}}", "vs").stdout)
    assert int(st.get("PIDs") or 0) >= 1 and st["HostPSS"] > 0, st  # sleep (sh exec'd it)
    assert isle("stats", "--no-stream", "--format", "{{.Name}}").stdout.split() == ["vs"]
    # stopped: a maintenance boot of its writable layer answers; the next start sees it
    isle("stop", "-t", "5", "vs", timeout=60)
    isle("cp", "vs:/made", str(out / "made2"))
    assert (out / "made2").read_text() == "guest-made\n"
    isle("cp", str(src), "vs:/after-stop")
    isle("start", "vs", timeout=120)
    assert isle("exec", "vs", "cat", "/after-stop", "/made", timeout=60).stdout == \
        "hello from the host\nguest-made\n"
    isle("rm", "-f", "vs", timeout=60)
    assert isle("ps", "-aq").stdout == ""
    assert not os.listdir(isle.root / "guest-files")  # its private unpack dirs went
    assert not upper.exists()


def _export(isle, ref: str) -> bytes:
    cp = subprocess.run(isle.argv("export", ref), capture_output=True, env=isle.env, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout
