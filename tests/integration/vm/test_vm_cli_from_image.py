"""`isle vm create --from-image`: an isle image booted as a whole OS into its own init (TCG)."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root]

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")


class Isle:
    def __init__(self, root: Path, runroot: Path, cache: str, vmh: Any) -> None:
        self.root, self.runroot, self.qemus = root, runroot, vmh.qemus
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
        self.env["ISLE_CACHE"] = cache

    def argv(self, *args: str) -> list[str]:
        return [ISLE, "--root", str(self.root), "--runroot", str(self.runroot), *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                            env=self.env)
        if check and cp.returncode != 0:
            raise AssertionError(f"isle {' '.join(args)} -> {cp.returncode}\n{cp.stderr}")
        return cp

    def wait_console(self, name: str, pattern: str, timeout: float) -> str:
        """The console stream (history first) until pattern shows up or timeout."""
        deadline, out = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            out = self("vm", "console", name, "--no-stdin", "--timeout", "3", timeout=60).stdout
            if re.search(pattern, out):
                return out
        raise AssertionError(f"{pattern!r} not on {name}'s console after {timeout}s:\n"
                             f"{out[-3000:]}")


def _done(isle: Isle, marker: str) -> None:
    names = isle("vm", "ls", "-q", check=False).stdout.split()
    if names:
        isle("vm", "rm", "-f", *names, check=False)
    assert isle.qemus(marker) == [], "QEMU left running"
    vms_run = isle.runroot / "vms"
    assert not vms_run.exists() or os.listdir(vms_run) == [], "VM run directory left behind"


@pytest.fixture
def isle(tmp_path: Path, vm_cache: str, vmh: Any):
    i = Isle(tmp_path / "root", tmp_path / "run", vm_cache, vmh)
    yield i
    _done(i, str(tmp_path))
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.timeout(240)
def test_vm_from_busybox_image_reaches_its_init_and_shell(isle: Isle) -> None:
    assert isle("vm", "create", "--from-image", "busybox", "-m", "128M", "bb").stdout == "bb\n"
    isle("vm", "start", "bb")
    # busybox init (the image's own, not isle's) asks for Enter on the console
    isle.wait_console("bb", r"Please press Enter to activate this console", 120)
    p = subprocess.Popen(isle.argv("vm", "console", "bb"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=isle.env)
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"\n")
        p.stdin.flush()
        time.sleep(2)
        p.stdin.write(b"mount -t proc proc /proc; echo marker-$((6*7)); cat /proc/1/comm\n")
        p.stdin.flush()
        got, deadline = b"", time.monotonic() + 60
        while not re.search(rb"marker-42\r?\n(\S+)\r?\n", got) and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 1)[0]:
                got += os.read(p.stdout.fileno(), 65536)
        m = re.search(rb"marker-42\r?\n(\S+)\r?\n", got)
        assert m, got[-2000:]
        assert m.group(1) == b"init"  # PID 1 is the image's init
        p.stdin.close()
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    isle("vm", "stop", "-t", "3", "bb", timeout=60)  # busybox init ignores ACPI: quit after 3 s
    assert "stopped" in isle("vm", "ls").stdout
    assert isle.qemus(str(isle.root)) == []
    isle("vm", "rm", "bb")


def test_vm_from_image_bad_input(isle: Isle) -> None:
    cp = isle("vm", "create", "--from-image", "no-such-image:7", "x1", check=False)
    assert cp.returncode != 0 and "no-such-image" in cp.stderr
    cp = isle("vm", "create", "--from-image", "busybox", "--disk", "/dev/null", "x1", check=False)
    assert cp.returncode != 0 and "--disk" in cp.stderr
    assert isle("vm", "ls", "-q").stdout == ""


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory, vm_cache: str, vmh: Any):
    """debian:bookworm-os: `isle image bootstrap` (debootstrap minbase, ~30 s) + systemd as init,
    dbus and udev (logind powers off on the ACPI button) from the image's own apt, committed."""
    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap missing")
    d = tmp_path_factory.mktemp("debroot")
    i = Isle(d / "root", d / "run", vm_cache, vmh)
    i("image", "bootstrap", "debian:bookworm", timeout=900)
    i("run", "--network", "host", "--name", "mkos", "debian:bookworm", "sh", "-c",
      "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
      "--no-install-recommends systemd-sysv dbus udev", timeout=900)
    i("commit", "mkos", "debian:bookworm-os")
    i("rm", "mkos")
    yield d
    shutil.rmtree(d / "run", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_vm_from_debian_image_boots_systemd_and_powers_off(debian_root: Path, vm_cache: str,
                                                            vmh: Any) -> None:
    isle = Isle(debian_root / "root", debian_root / "run", vm_cache, vmh)
    try:
        isle("vm", "create", "--from-image", "debian:bookworm-os", "-m", "512M", "deb",
             timeout=600)
        isle("vm", "start", "deb")
        out = isle.wait_console("deb", r"Reached target.*Multi-User System", 300)
        assert "systemd" in out and "isle-init" not in out
        watch = subprocess.Popen(isle.argv("vm", "console", "deb", "--no-stdin", "--timeout",
                                           "120"), stdout=subprocess.PIPE, env=isle.env)
        time.sleep(1)
        t0 = time.monotonic()
        isle("vm", "stop", "-t", "90", "deb", timeout=200)
        took = time.monotonic() - t0
        rest = watch.communicate(timeout=150)[0].decode(errors="replace")
        # ACPI power button -> systemd shuts down -> the kernel powers off (no quit needed)
        assert "Powering off" in rest and "reboot: Power down" in rest, rest[-3000:]
        assert took < 90
        isle("vm", "rm", "deb")
    finally:
        _done(isle, str(debian_root))
