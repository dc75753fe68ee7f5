"""Full-OS VMs (q35 + SeaBIOS) from a user disk: a 512-byte boot sector that writes to COM1."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from isle.errors import AlreadyExists, InvalidState, VMError
from isle.vm.machine import MachineStore

pytestmark = [pytest.mark.qemu, pytest.mark.root]

MSG = b"isle-os-ok\r\n"
# xor ax,ax; mov ds,ax; cld; mov dx,0x3f8; mov si,0x7c17; lodsb; test al,al; jz +3; out dx,al;
# jmp lodsb; cli; hlt; jmp hlt; then the message
CODE = bytes.fromhex("31c08ed8fc baf803 be177c ac 84c0 7403 ee ebf8 fa f4 ebfd".replace(" ", ""))


def _boot_disk(path: Path) -> None:
    sector = CODE + MSG + b"\0"
    sector = sector.ljust(510, b"\0") + b"\x55\xaa"
    path.write_bytes(sector + b"\0" * (1 << 20))


def _read_console(path: str, want: bytes, timeout: float) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(1)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while want not in buf and time.monotonic() < deadline:
            try:
                buf += s.recv(4096)
            except TimeoutError:
                pass
    finally:
        s.close()
    return buf


@pytest.mark.timeout(120)
def test_machine_lifecycle_boots_a_user_disk(tmp_path: Path) -> None:
    base = tmp_path / "os.img"
    _boot_disk(base)
    runroot = Path(f"/run/isle-vm-test-{os.getpid()}")
    store = MachineStore(str(tmp_path / "vms"), str(runroot))
    try:
        info = store.create("m1", str(base), memory_mib=64)
        assert info.status == "stopped" and info.spec.base_format == "raw"
        with pytest.raises(AlreadyExists):
            store.create("m1", str(base))
        info = store.start("m1")
        assert info.status == "running" and info.pid > 0
        with pytest.raises(InvalidState):
            store.start("m1")
        # the boot sector got control from SeaBIOS and wrote on the serial console socket
        assert MSG in _read_console(store.console("m1"), MSG, 60)
        assert [i.spec.name for i in store.ls()] == ["m1"]
        with pytest.raises(InvalidState):
            store.rm("m1")
        # a halted guest ignores the power button: stop() must still end it
        assert store.stop("m1", timeout=1).status == "stopped"
        base_before = base.read_bytes()
        store.rm("m1")
        assert base.read_bytes() == base_before and store.ls() == []
    finally:
        for i in store.ls():
            store.rm(i.spec.name, force=True)
        if runroot.exists():
            os.rmdir(runroot)


def test_machine_refuses_a_file_that_is_not_a_disk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_text("not a disk\n" * 200)
    store = MachineStore(str(tmp_path / "vms"), "/run/isle-vm-test-x")
    with pytest.raises(VMError, match="not a disk image"):
        store.create("bad", str(junk))
    assert store.ls() == [] and not (tmp_path / "vms" / "bad").exists()
