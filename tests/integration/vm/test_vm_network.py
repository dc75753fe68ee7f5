"""Guest networking under TCG: QEMU user networking, and a tap on a bridge this test makes."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]
RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime")


@pytest.fixture
def web(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """A tiny HTTP server on the address the test asks for (loopback or its own bridge)."""
    addr = getattr(request, "param", "127.0.0.1")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello guest\n")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www")
    )
    srv = http.server.ThreadingHTTPServer((addr, 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield addr, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _bundle(vmh, tmp_path: Path, rootfs: str, script: str, ann: dict[str, str]) -> str:
    b = vmh.make_bundle(tmp_path / "b", rootfs, ["sh", "-c", script])
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["annotations"].update(ann)
    Path(b, "config.json").write_text(json.dumps(cfg))
    return b


@pytest.mark.timeout(200)
def test_user_networking_reaches_the_host(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh, web: tuple[str, int]
) -> None:
    b = _bundle(
        vmh,
        tmp_path,
        busybox_rootfs,
        f"cat /etc/resolv.conf; wget -q -O - http://10.0.2.2:{web[1]}/",
        {"org.isle.vm.net": "user"},
    )
    for env in (vm_env, dict(vm_env, ISLE_VM_TEMPLATE="1")):
        r = subprocess.run(
            [RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "n1"],
            env=env,
            capture_output=True,
            timeout=150,
        )
        assert (r.returncode, r.stdout) == (0, b"nameserver 10.0.2.3\nhello guest\n"), r.stderr


@pytest.fixture
def bridge_tap() -> Iterator[str]:
    cmds = [
        ["ip", "link", "add", "islevmtbr0", "type", "bridge"],
        ["ip", "addr", "add", "10.231.7.1/24", "dev", "islevmtbr0"],
        ["ip", "link", "set", "islevmtbr0", "up"],
        ["ip", "tuntap", "add", "dev", "islevmttap0", "mode", "tap"],
        ["ip", "link", "set", "islevmttap0", "master", "islevmtbr0"],
        ["ip", "link", "set", "islevmttap0", "up"],
    ]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
        yield "islevmttap0"
    finally:
        subprocess.run(["ip", "link", "del", "islevmttap0"], capture_output=True)
        subprocess.run(["ip", "link", "del", "islevmtbr0"], capture_output=True)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("web", ["10.231.7.1"], indirect=True)
def test_tap_on_a_bridge_with_static_address(
    tmp_path: Path,
    busybox_rootfs: str,
    bridge_tap: str,
    vm_env: dict[str, str],
    vmh,
    web: tuple[str, int],
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.231.7.1 hostbox\n")
    b = _bundle(
        vmh,
        tmp_path,
        busybox_rootfs,
        f"ip -4 addr show eth0 | grep -o 'inet [^ ]*'; cat /sys/class/net/eth0/address; "
        f"wget -q -O - http://hostbox:{web[1]}/",
        {
            "org.isle.vm.net": f"tap:{bridge_tap}",
            "org.isle.vm.net.address": "10.231.7.2/24",
            "org.isle.vm.net.gateway": "10.231.7.1",
            "org.isle.vm.net.mac": "02:00:00:00:07:02",
        },
    )
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["mounts"].append(
        {
            "destination": "/etc/hosts",
            "type": "bind",
            "source": str(hosts),
            "options": ["rbind", "ro"],
        }
    )
    Path(b, "config.json").write_text(json.dumps(cfg))
    for env in (
        vm_env,
        dict(vm_env, ISLE_VM_TEMPLATE="1"),
    ):  # a clone too: its tap is attached later
        r = subprocess.run(
            [RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "t1"],
            env=env,
            capture_output=True,
            timeout=150,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"inet 10.231.7.2/24\n02:00:00:00:07:02\nhello guest\n"


def test_bad_network_annotation_is_named(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = _bundle(
        vmh,
        tmp_path,
        busybox_rootfs,
        "true",
        {"org.isle.vm.net": "tap:x", "org.isle.vm.net.address": "nope"},
    )
    r = subprocess.run(
        [RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "t2"],
        env=vm_env,
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 1 and b"org.isle.vm.net.address" in r.stderr
    assert not (tmp_path / "root" / "t2").exists()
