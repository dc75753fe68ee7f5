"""--isolation vm: the same verbs drive a microVM through isle-vm-runtime (QEMU; TCG here)."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(240)]


def test_vm_isolation_run_exec_stop_rm(isle):
    cp = isle("run", "--rm", "--isolation", "vm", "busybox", "sh", "-c", "echo in-vm; exit 3",
              check=False, timeout=120)
    assert cp.returncode == 3 and cp.stdout == "in-vm\n"
    isle("run", "-d", "--isolation", "vm", "--name", "vm1", "busybox", "sh", "-c",
         "trap 'echo bye; exit 0' TERM; echo up; sleep 100 & wait", timeout=120)
    for _ in range(100):
        if "up" in isle("logs", "vm1").stdout:
            break
        time.sleep(0.2)
    host = open("/proc/sys/kernel/osrelease").read().strip()
    guest = isle("exec", "vm1", "uname", "-r", timeout=60).stdout.strip()
    assert guest and guest != host  # its own kernel
    isle("stop", "-t", "10", "vm1", timeout=60)
    st = isle.inspect("vm1")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 0
    assert isle("logs", "vm1").stdout == "up\nbye\n"
    isle("rm", "vm1")
    assert isle("ps", "-aq").stdout == ""


def test_vm_foreground_run_rm_needs_no_monitor_and_stops_from_elsewhere(isle):
    """`run --rm --isolation vm` goes the direct way (one isle-vm-runtime run, no conmon), yet
    shows in ps, stops from another process with the guest job's code, and leaves nothing."""
    import os
    import subprocess

    p = subprocess.Popen(isle.argv("run", "--rm", "--network", "none", "--isolation", "vm",
                                   "--name", "vmd", "busybox", "sh", "-c",
                                   "trap 'exit 9' TERM; echo up; sleep 100 & wait"),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=isle.env)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        cid = isle.inspect("vmd")["Id"]
        assert isle.inspect("vmd")["State"]["Status"] == "running"
        assert not (isle.runroot / "containers" / cid / "conmon.pid").exists()
        isle("stop", "-t", "20", "vmd", timeout=60)
        assert p.wait(timeout=60) == 9
    finally:
        p.kill()
        p.wait()
    assert isle("ps", "-aq").stdout == ""
    assert not [c for c in _cmdlines() if "qemu" in c and str(isle.runroot) in c]
    # Ctrl-C at the CLI reaches the guest's process (Docker's sig-proxy), whose code comes back
    import signal

    p = subprocess.Popen(isle.argv("run", "--rm", "--network", "none", "--isolation", "vm",
                                   "busybox", "sh", "-c",
                                   "trap 'exit 8' INT; echo up; sleep 100 & wait"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=isle.env)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 8, p.stderr.read() if p.stderr else ""
    finally:
        p.kill()
        p.wait()
    assert isle("ps", "-aq").stdout == ""


def _cmdlines() -> list[str]:
    import os

    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                out.append(f.read().decode(errors="replace"))
        except OSError:
            pass
    return out


def test_vm_volumes_and_binds_are_shared_with_the_host_and_containers(isle, tmp_path):
    """-v DIR:... and named volumes reach a VM over virtio-fs: what the VM writes, the host and
    a container then see; :ro holds in the VM."""
    d = tmp_path / "hostdir"
    d.mkdir()
    cp = isle("run", "--rm", "--isolation", "vm", "--network", "none", "-v", f"{d}:/data",
              "-v", "isle-test-vmv:/vol", "busybox", "sh", "-c",
              "echo a > /data/a; echo b > /vol/b; cat /data/a /vol/b", check=False, timeout=120)
    assert (cp.returncode, cp.stdout) == (0, "a\nb\n"), cp.stderr
    assert (d / "a").read_text() == "a\n"
    assert isle("run", "--rm", "-v", "isle-test-vmv:/vol", "busybox", "cat", "/vol/b").stdout == "b\n"
    cp = isle("run", "--rm", "--isolation", "vm", "--network", "none", "-v",
              "isle-test-vmv:/vol:ro", "busybox", "sh", "-c",
              "cat /vol/b; touch /vol/c 2>/dev/null || echo refused", check=False, timeout=120)
    assert (cp.returncode, cp.stdout) == (0, "b\nrefused\n"), cp.stderr
    isle("volume", "rm", "isle-test-vmv")
