"""`isle vm create/start/stop/rm/ls/inspect/console` on a user disk: a boot sector on COM1."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root]

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")
MSG = b"isle-os-ok\r\n"
# xor ax,ax; mov ds,ax; cld; mov dx,3f8h; mov si,7c22h; print: lodsb; test al,al; jz echo;
# out dx,al; jmp print; echo: mov dx,3fdh; poll: in al,dx; test al,1; jz poll; mov dx,3f8h;
# in al,dx; out dx,al; jmp echo; then the message (offset 0x22)
CODE = bytes.fromhex(
    "31c0 8ed8 fc baf803 be227c ac 84c0 7403 ee ebf8 bafd03 ec a801 74fb baf803 ec ee ebf1"
    .replace(" ", "")
)


def boot_disk(path: Path) -> Path:
    sector = (CODE + MSG + b"\0").ljust(510, b"\0") + b"\x55\xaa"
    path.write_bytes(sector + b"\0" * (1 << 20))
    return path


class VmCli:
    def __init__(self, tmp: Path, qemus: Any) -> None:
        self.root, self.runroot, self.qemus = tmp / "root", tmp / "run", qemus
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}

    def argv(self, *args: str) -> list[str]:
        return [ISLE, "--root", str(self.root), "--runroot", str(self.runroot), "vm", *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                            env=self.env)
        if check and cp.returncode != 0:
            raise AssertionError(f"isle vm {' '.join(args)} -> {cp.returncode}\n{cp.stderr}")
        return cp


@pytest.fixture
def vm(tmp_path: Path, vmh):
    v = VmCli(tmp_path, vmh.qemus)
    yield v
    names = v("ls", "-q", check=False).stdout.split()
    if names:
        v("rm", "-f", *names, check=False)
    assert vmh.qemus(str(tmp_path)) == [], "QEMU left running"
    assert not list((v.runroot / "vms").glob("*")) if (v.runroot / "vms").exists() else True


@pytest.mark.timeout(150)
def test_vm_cli_lifecycle_console_and_formats(vm: VmCli, tmp_path: Path) -> None:
    base = boot_disk(tmp_path / "os.img")
    before = base.read_bytes()
    assert vm("create", "m1", "--disk", str(base), "--memory", "64M").stdout == "m1\n"
    rows = vm("ls").stdout.splitlines()
    assert rows[0].split() == ["NAME", "STATUS", "CPUS", "MEMORY", "FIRMWARE", "DISK"]
    assert rows[1].split()[:5] == ["m1", "stopped", "1", "64MiB", "bios"]
    d = json.loads(vm("inspect", "m1").stdout)[0]
    assert d["status"] == "stopped" and d["base_format"] == "raw" and d["memory_mib"] == 64
    # the VM's disk is a qcow2 overlay whose backing file is the user's disk
    img = json.loads(subprocess.run(["qemu-img", "info", "--output=json", d["disk"]],
                                    capture_output=True, text=True, check=True).stdout)
    assert img["format"] == "qcow2" and img["backing-filename"] == str(base)

    vm("start", "m1")
    assert json.loads(vm("ls", "--format", "json").stdout)[0]["status"] == "running"
    assert vm("start", "m1", check=False).returncode != 0  # already running
    # non-interactive console: prints the stream, ends at the timeout
    t0 = time.monotonic()
    cp = vm("console", "m1", "--no-stdin", "--timeout", "20", timeout=60)
    assert "isle-os-ok" in cp.stdout and time.monotonic() - t0 < 40

    # interactive console: what we type reaches the guest (it echoes); Ctrl-] detaches
    p = subprocess.Popen(vm.argv("console", "m1"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=vm.env)
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"ping-42")
        p.stdin.flush()
        got, deadline = b"", time.monotonic() + 30
        while b"ping-42" not in got and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 1)[0]:
                got += os.read(p.stdout.fileno(), 4096)
        assert b"ping-42" in got
        p.stdin.write(b"\x1d")
        p.stdin.flush()
        assert p.wait(timeout=10) == 0  # detached while stdin is still open
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # closing stdin detaches too
    cp2 = subprocess.run(vm.argv("console", "m1"), input=b"", capture_output=True, timeout=20,
                         env=vm.env)
    assert cp2.returncode == 0

    assert vm("rm", "m1", check=False).returncode != 0  # running: refused without -f
    vm("stop", "-t", "1", "m1", timeout=60)  # the guest ignores ACPI: quit after 1 s
    assert json.loads(vm("inspect", "m1").stdout)[0]["status"] == "stopped"
    assert vm.qemus(str(tmp_path)) == []
    assert vm("console", "m1", "--no-stdin", check=False).returncode != 0  # not running
    vm("rm", "m1")
    assert vm("ls", "-q").stdout == "" and base.read_bytes() == before
    assert os.listdir(vm.root / "vms") == []


def test_vm_cli_bad_input_leaves_nothing(vm: VmCli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_text("not a disk\n" * 100)
    cp = vm("create", "bad", "--disk", str(junk), check=False)
    assert cp.returncode != 0 and str(junk) in cp.stderr and "not a disk" in cp.stderr
    cp = vm("create", "bad", "--disk", str(tmp_path / "missing.img"), check=False)
    assert cp.returncode != 0 and "missing.img" in cp.stderr
    cp = vm("create", "bad", check=False)
    assert cp.returncode != 0 and "--disk" in cp.stderr
    assert vm("ls", "-q").stdout == ""
    assert not (vm.root / "vms").exists() or os.listdir(vm.root / "vms") == []

    base = boot_disk(tmp_path / "os.img")
    vm("create", "m2", "--disk", str(base), "--memory", "64M")
    cp = vm("create", "m2", "--disk", str(base), check=False)
    assert cp.returncode != 0 and "m2" in cp.stderr and "exists" in cp.stderr
    cp = vm("create", "bad/name", "--disk", str(base), check=False)
    assert cp.returncode != 0 and "bad/name" in cp.stderr
    for verb in ("start", "stop", "rm", "inspect", "console"):
        cp = vm(verb, "nosuchvm", check=False)
        assert cp.returncode != 0 and "nosuchvm" in cp.stderr, (verb, cp.stderr)
    cp = vm("create", "m3", "--disk", str(base), "--firmware", "coreboot", check=False)
    assert cp.returncode != 0 and "firmware" in cp.stderr
    vm("rm", "m2")
    assert os.listdir(vm.root / "vms") == []
