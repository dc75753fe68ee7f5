"""Moving whole-OS VMs without a long boot: a boot-sector disk (it prints a line on COM1) goes
through `vm push` to a local registry (skopeo reads what was pushed), `vm pull` back as a new VM
that boots, `vm export --format ova|vdi` and `vm import` of each; stopped-VM snapshots; formats
and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_vm_cli_machine import MSG, VmCli, boot_disk

pytestmark = [pytest.mark.qemu, pytest.mark.root]


@pytest.fixture
def vm(tmp_path: Path, vmh: Any) -> Iterator[VmCli]:
    v = VmCli(tmp_path, vmh.qemus)
    yield v
    names = v("ls", "-q", check=False).stdout.split()
    if names:
        v("rm", "-f", *names, check=False)
    assert vmh.qemus(str(tmp_path)) == [], "QEMU left running"
    import glob
    import hashlib

    for r in (v.root, tmp_path / "b" / "root"):  # this root and a migration's other one
        tag = hashlib.sha256(os.path.abspath(r).encode()).hexdigest()[:6]
        assert glob.glob(f"/sys/fs/cgroup/*/isle/vm-*-{tag}") == [], "a VM cgroup is left"


@pytest.fixture
def registry(tmp_path: Path, registries) -> Iterator[str]:
    if shutil.which("docker-registry") is None or shutil.which("skopeo") is None:
        pytest.skip("needs Debian's docker-registry and skopeo")
    reg = registries.start_registry(tmp_path / "registry")
    try:
        yield reg.addr
    finally:
        registries.stop_registry(reg)


def _console_has(vm: VmCli, name: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(vm.argv("console", name, "--no-stdin", "--timeout", "2"),
                             capture_output=True, env=vm.env, timeout=30).stdout
        if MSG.strip() in out:
            return True
    return False


@pytest.mark.registry
@pytest.mark.timeout(300)
def test_vm_push_pull_through_a_registry(vm: VmCli, tmp_path: Path, registry: str) -> None:
    base = boot_disk(tmp_path / "os.img")
    vm("create", "src", "--disk", str(base), "--memory", "64M", "--cpus", "1")
    ref = f"{registry}/vms/src:v1"
    digest = vm("push", "src", ref, "--no-tls-verify", timeout=120).stdout.strip()
    assert digest.startswith("sha256:")
    info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                      f"docker://{ref}"], capture_output=True, text=True,
                                     check=True, timeout=60).stdout)
    assert info["Labels"]["org.isle.vm.disk"] == "/disk/disk.qcow2"
    assert info["Labels"]["org.isle.vm.memory_mib"] == "64"
    vm("rm", "src")
    assert vm("pull", ref, "--name", "back", "--no-tls-verify", timeout=120).stdout == "back\n"
    d = json.loads(vm("inspect", "back").stdout)[0]
    assert d["memory_mib"] == 64
    vm("start", "back")
    assert _console_has(vm, "back")
    vm("stop", "-t", "1", "back", timeout=60)
    cp = vm("pull", f"{registry}/vms/none:v1", "--no-tls-verify", check=False, timeout=60)
    assert cp.returncode != 0
    vm("rm", "-f", "back", timeout=60)


def _put(url: str, data: bytes, ctype: str = "application/octet-stream",
         method: str = "PUT") -> Any:
    import urllib.request

    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": ctype})
    return urllib.request.urlopen(req, timeout=30)


def _oras_push(registry: str, repo: str, tag: str, disk: bytes, title: str) -> str:
    """What `oras push REG/REPO:TAG os.img:application/vnd.acme.disk.raw` writes (built by
    hand: no oras binary here): an OCI manifest with artifactType, the empty config and the file
    itself as the one layer, named by its title annotation. Its digest."""
    import hashlib

    base = f"http://{registry}/v2/{repo}"

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with _put(f"{base}/blobs/uploads/", b"", method="POST") as r:
            loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = f"http://{registry}{loc}"
        _put(f"{loc}{'&' if '?' in loc else '?'}digest={digest}", data).close()
        return {"digest": digest, "size": len(data)}

    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.acme.vm.disk",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **blob(b"{}"),
                   "data": "e30="},
        "layers": [{"mediaType": "application/vnd.acme.disk.raw", **blob(disk),
                    "annotations": {"org.opencontainers.image.title": title}}],
        "annotations": {"org.opencontainers.image.created": "2026-12-07T00:00:00Z"}}
    body = json.dumps(manifest).encode()
    _put(f"{base}/manifests/{tag}", body, "application/vnd.oci.image.manifest.v1+json").close()
    return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.registry
@pytest.mark.timeout(300)
def test_vm_disks_as_oras_style_artifacts(vm: VmCli, tmp_path: Path, registry: str) -> None:
    """An OCI artifact holding a disk file (oras's layout) comes in through `vm pull` and boots;
    `vm push --artifact` writes that layout (skopeo reads its manifest) and pulls back."""
    disk = boot_disk(tmp_path / "os.img").read_bytes()
    _oras_push(registry, "vms/oras", "v1", disk, "os.img")
    assert vm("pull", f"{registry}/vms/oras:v1", "--name", "fromoras", "--no-tls-verify",
              timeout=120).stdout == "fromoras\n"
    vm("start", "fromoras")
    assert _console_has(vm, "fromoras")
    vm("stop", "-t", "1", "fromoras", timeout=60)
    # isle's own artifact form: skopeo sees the artifact, isle pulls it back with its size
    vm("create", "art", "--disk", str(tmp_path / "os.img"), "--memory", "96M", "--cpus", "2")
    ref = f"{registry}/vms/art:v1"
    digest = vm("push", "art", ref, "--artifact", "--no-tls-verify", timeout=120).stdout.strip()
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{ref}"], capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    assert raw["artifactType"] == "application/vnd.isle.vm.disk.v1"
    [layer] = raw["layers"]
    assert layer["annotations"]["org.opencontainers.image.title"] == "disk.qcow2"
    assert digest.startswith("sha256:")
    vm("rm", "art")
    assert vm("pull", ref, "--no-tls-verify", timeout=120).stdout == "art\n"
    d = json.loads(vm("inspect", "art").stdout)[0]
    assert (d["memory_mib"], d["vcpus"]) == (96, 2)
    vm("start", "art")
    assert _console_has(vm, "art")
    vm("rm", "-f", "art", "fromoras", timeout=60)
    # a digest the registry does not have: a clear error, nothing made
    cp = vm("pull", f"{registry}/vms/oras@sha256:{'0' * 64}", "--no-tls-verify", check=False,
            timeout=60)
    assert cp.returncode != 0 and cp.stderr
    assert vm("ls", "-q").stdout.split() == []


@pytest.mark.timeout(300)
def test_vm_export_import_ova_vdi_and_stopped_snapshots(vm: VmCli, tmp_path: Path) -> None:
    base = boot_disk(tmp_path / "os.img")
    vm("create", "m", "--disk", str(base), "--memory", "64M", "--cpus", "2")
    # snapshots of a stopped VM: its disk
    vm("snapshot", "create", "m", "s1")
    assert [s["name"] for s in json.loads(vm("snapshot", "ls", "m", "--format",
                                             "json").stdout)] == ["s1"]
    assert vm("snapshot", "create", "m", "s1", check=False).returncode != 0
    assert vm("snapshot", "restore", "m", "nope", check=False).returncode != 0
    assert vm("snapshot", "create", "m", "bad/tag", check=False).returncode != 0
    vm("snapshot", "restore", "m", "s1")
    vm("snapshot", "rm", "m", "s1")
    assert json.loads(vm("snapshot", "ls", "m", "--format", "json").stdout) == []
    # OVA: descriptor + streamOptimized VMDK, sizes travel with it
    ova = tmp_path / "m.ova"
    vm("export", "m", "-o", str(ova), "--format", "ova", timeout=120)
    names = subprocess.run(["tar", "tf", str(ova)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names[0] == "m.ovf" and names[1].endswith(".vmdk")
    assert vm("import", str(ova), "--name", "fromova", timeout=120).stdout == "fromova\n"
    d = json.loads(vm("inspect", "fromova").stdout)[0]
    assert (d["memory_mib"], d["vcpus"]) == (64, 2)
    vm("start", "fromova")
    assert _console_has(vm, "fromova")
    vm("rm", "-f", "fromova", timeout=60)
    # VirtualBox's format, then --disk takes it directly too
    vdi = tmp_path / "m.vdi"
    vm("export", "m", "-o", str(vdi), "--format", "vdi", timeout=120)
    fmt = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(vdi)],
                                    capture_output=True, text=True, check=True).stdout)["format"]
    assert fmt == "vdi"
    vm("create", "fromvdi", "--disk", str(vdi), "--memory", "64M")
    vm("start", "fromvdi")
    assert _console_has(vm, "fromvdi")
    vm("rm", "-f", "fromvdi", timeout=60)
    # bad input: a clear error, nothing made
    assert vm("export", "m", "-o", str(tmp_path / "no/such/dir/x.vmdk"), "--format", "vmdk",
              check=False).returncode != 0
    junk = tmp_path / "junk.ova"
    junk.write_bytes(b"not a tar")
    cp = vm("import", str(junk), check=False)
    assert cp.returncode != 0 and "junk.ova" in cp.stderr
    assert vm("ls", "-q").stdout.split() == ["m"]


def _echoes(vm: VmCli, name: str, word: bytes) -> bool:
    """What we type on the console comes back (the boot sector echoes COM1)."""
    import select

    p = subprocess.Popen(vm.argv("console", name), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=vm.env)
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(word)
        p.stdin.flush()
        got, deadline = b"", time.monotonic() + 30
        while word not in got and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 1)[0]:
                got += os.read(p.stdout.fileno(), 4096)
        return word in got
    finally:
        p.kill()
        p.wait()


def _listener(port: int) -> int:
    """The pid listening on 127.0.0.1:port (0: none)."""
    import re

    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else 0


@pytest.mark.timeout(180)
def test_vm_on_the_user_network_migrates_with_its_published_port(vm: VmCli,
                                                                 tmp_path: Path) -> None:
    """`vm migrate` of a VM on QEMU's user network with -p: the host port follows it (the new
    QEMU binds it once the old one has quit), the guest runs on in the other root."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = boot_disk(tmp_path / "os.img")
    vm("create", "mv", "--disk", str(base), "--memory", "64M", "--network", "user",
       "-p", f"127.0.0.1:{port}:80")
    vm("start", "mv")
    assert _console_has(vm, "mv")
    old = json.loads(vm("inspect", "mv").stdout)[0]
    assert old["forwards"] == {"80/tcp@127.0.0.1": port}
    assert _listener(port) == old["pid"]
    other = VmCli(tmp_path / "b", vm.qemus)
    try:
        cp = vm("migrate", "mv", "--to", str(other.root), "--to-runroot", str(other.runroot),
                timeout=120)
        assert "downtime" in cp.stderr and "warning" not in cp.stderr, cp.stderr
        assert vm("ls", "-q").stdout.split() == []
        new = json.loads(other("inspect", "mv").stdout)[0]
        assert new["status"] == "running" and new["pid"] != old["pid"]
        assert new["forwards"] == old["forwards"]
        assert _listener(port) == new["pid"]  # the published port is the new QEMU's
        assert _echoes(other, "mv", b"moved-42")  # the same guest, running on there
        # a VM that is not running has nothing to migrate live; a clear error
        other("stop", "-t", "1", "mv", timeout=60)
        cp = other("migrate", "mv", "--to", str(vm.root), check=False)
        assert cp.returncode != 0 and "not running" in cp.stderr
    finally:
        other("rm", "-f", "mv", check=False, timeout=60)
    assert _listener(port) == 0
    assert vm.qemus(str(tmp_path)) == []


@pytest.mark.timeout(180)
def test_prune_keeps_the_base_disk_of_a_vm_migrated_away(vm: VmCli, tmp_path: Path) -> None:
    """An imported VM's base disk stays in the root it was imported into when the VM migrates
    to another root: `system prune` there keeps it while the VM lives on, and removes it once
    the VM is gone."""
    vm("import", str(boot_disk(tmp_path / "os.img")), "--name", "mv", "--memory", "64M")
    base = Path(json.loads(vm("inspect", "mv").stdout)[0]["base"])
    assert base.parent.name == ".disks" and base.exists()
    vm("start", "mv")
    other = VmCli(tmp_path / "b", vm.qemus)

    def prune() -> str:
        return subprocess.run(vm.argv()[:-1] + ["system", "prune", "-f"], capture_output=True,
                              text=True, env=vm.env, check=True, timeout=120).stdout

    try:
        vm("migrate", "mv", "--to", str(other.root), "--to-runroot", str(other.runroot),
           timeout=120)
        assert base.name not in prune() and base.exists()
        assert _echoes(other, "mv", b"still-42")  # the guest runs on, on that base
    finally:
        other("rm", "-f", "mv", check=False, timeout=60)
    assert base.name in prune() and not base.exists()
    assert not (vm.root / "vms" / ".moved" / "mv").exists()
