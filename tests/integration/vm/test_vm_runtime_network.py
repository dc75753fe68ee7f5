"""isle-vm-runtime networks the guest itself from the network namespace it is handed (Kata's
tcfilter model): the same way under a bare bundle, podman (netavark, aardvark-dns, -p) and
containerd (`ctr run --runc-binary`, a namespace set up by Debian's CNI bridge plugin).

One VM boot per test (TCG); each checks traffic both ways and that nothing is left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
RUNTIME = str(REPO / ".venv/bin/isle-vm-runtime")
CNI = "/usr/lib/cni"


def sh(*argv: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]


def poll(argv: list[str], want: bytes, timeout: float = 60,
         proc: subprocess.Popen[bytes] | None = None) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            o, e = proc.communicate()
            raise AssertionError(f"the VM ended ({proc.returncode}): {o!r} {e!r}")
        r = subprocess.run(argv, capture_output=True, timeout=30)
        out = r.stdout + r.stderr
        if r.returncode == 0 and want in r.stdout:
            return r.stdout
        time.sleep(0.5)
    raise AssertionError(f"{argv}: never got {want!r}; last: {out!r}")


def no_redirects(ns: str) -> None:
    """The runtime's tap and qdiscs are gone from the namespace it was given."""
    links = sh("ip", "-n", ns, "-o", "link").stdout.decode()
    assert "isle-tap0" not in links, links
    qd = sh("ip", "netns", "exec", ns, "tc", "qdisc", "show").stdout.decode()
    assert "ingress" not in qd, qd


@pytest.fixture
def netns_pair():
    """Two namespaces joined by a veth: 'c' (10.217.3.2/24, default via .1) for the VM,
    'peer' (10.217.3.1/24) on the other end."""
    tag = uuid.uuid4().hex[:6]
    c, peer = f"ih2c{tag}", f"ih2p{tag}"
    sh("ip", "netns", "add", c)
    sh("ip", "netns", "add", peer)
    try:
        for cmd in (
            ["ip", "link", "add", f"ih2a{tag}", "netns", c, "type", "veth", "peer", "name",
             f"ih2b{tag}", "netns", peer],
            ["ip", "-n", c, "link", "set", f"ih2a{tag}", "name", "eth0", "mtu", "1400", "up"],
            ["ip", "-n", c, "addr", "add", "10.217.3.2/24", "dev", "eth0"],
            ["ip", "-n", c, "route", "add", "default", "via", "10.217.3.1"],
            ["ip", "-n", c, "route", "add", "10.217.9.0/24", "via", "10.217.3.1"],
            ["ip", "-n", peer, "addr", "add", "10.217.3.1/24", "dev", f"ih2b{tag}"],
            ["ip", "-n", peer, "link", "set", f"ih2b{tag}", "mtu", "1400", "up"],
            ["ip", "-n", peer, "link", "set", "lo", "up"],
        ):
            r = sh(*cmd)
            assert r.returncode == 0, (cmd, r.stderr)
        yield c, peer
    finally:
        sh("ip", "netns", "del", c)
        sh("ip", "netns", "del", peer)


@pytest.mark.timeout(240)
def test_runtime_connects_the_guest_to_the_namespace_it_is_given(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh, netns_pair
) -> None:
    c, peer = netns_pair
    www = tmp_path / "www"
    www.mkdir()
    (www / "big").write_bytes(os.urandom(1 << 20))  # TCP segments larger than one frame
    srv = subprocess.Popen(["ip", "netns", "exec", peer, "busybox", "httpd", "-f", "-p", "8081",
                            "-h", str(www)])
    script = (
        "trap 'exit 0' TERM; ip -o addr show eth0 | grep -o 'inet [0-9./]*';"
        " ip -o link show eth0 | grep -o 'mtu [0-9]*'; ip route | grep -c 10.217.9.0/24;"
        " wget -qO- http://10.217.3.1:8081/big | md5sum; mkdir /tmp/w; echo from-vm > /tmp/w/i;"
        " httpd -p 8080 -h /tmp/w; while :; do sleep 0.2; done"
    )
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", script])
    spec = json.loads(Path(b, "config.json").read_text())
    spec["root"]["readonly"] = False
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/run/netns/{c}"
    Path(b, "config.json").write_text(json.dumps(spec))
    try:
        vm = subprocess.Popen([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "n1"],
                              env=vm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # inbound: from the other end of the veth to the guest's server
            try:
                got = poll(["ip", "netns", "exec", peer, "busybox", "wget", "-qO-",
                            "http://10.217.3.2:8080/i"], b"from-vm", timeout=120, proc=vm)
            except AssertionError as exc:
                vm.send_signal(signal.SIGTERM)
                raise AssertionError(f"{exc}; the VM said {vm.communicate(timeout=60)}") from None
            assert got == b"from-vm\n"
            # the tap lives in the caller's namespace while the VM runs
            assert "isle-tap0" in sh("ip", "-n", c, "-o", "link").stdout.decode()
        finally:
            vm.send_signal(signal.SIGTERM)
            out, err = vm.communicate(timeout=60)
        assert vm.returncode == 0, err
        digest = hashlib.md5((www / "big").read_bytes()).hexdigest()
        assert out.decode().split("\n")[:4] == ["inet 10.217.3.2/24", "mtu 1400", "1",
                                                 f"{digest}  -"], out
    finally:
        srv.kill()
        srv.wait()
    no_redirects(c)


@pytest.fixture
def podman_net(vm_env: dict[str, str], podman_prefix, busybox_rootfs: str):
    """A private podman (network config under its own dir) with the busybox image and a
    bridge network; everything removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="isle-vm-pn-"))
    prefix = podman_prefix(d)
    (d / "networks").mkdir()
    with open(d / "containers.conf", "a") as f:
        f.write(f'[network]\nnetwork_config_dir = "{d}/networks"\n')

    def pm(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*prefix, *args], env=vm_env, capture_output=True, timeout=150,
                              **kw)  # type: ignore[call-overload]

    net = f"ih2{uuid.uuid4().hex[:6]}"
    try:
        with tarfile.open(d / "bb.tar", "w") as t:
            t.add(busybox_rootfs, arcname=".")
        assert pm("import", "--quiet", str(d / "bb.tar"), "localhost/isle-vm-bb:t").returncode == 0
        r = pm("network", "create", "--subnet", "10.218.5.0/24", net)
        assert r.returncode == 0, r.stderr
        yield pm, net
    finally:
        pm("rm", "-af", "-t", "0")
        pm("network", "rm", "-f", net)
        pm("system", "reset", "--force")
        subprocess.run(["umount", "-R", str(d / "storage" / "overlay")], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.podman
@pytest.mark.timeout(300)
def test_podman_vm_container_gets_its_network_names_and_published_port(podman_net) -> None:
    pm, net = podman_net
    r = pm("run", "-d", "--name", "c1", "--network", net, "localhost/isle-vm-bb:t", "sh", "-c",
           "mkdir /w; echo from-c1 > /w/i; httpd -f -p 80 -h /w")
    assert r.returncode == 0, r.stderr
    r = pm("run", "-d", "--name", "c2", "--network", net, "localhost/isle-vm-bb:t",
           "sleep", "300")
    assert r.returncode == 0, r.stderr
    port = _free_port()
    r = pm("--runtime", RUNTIME, "run", "-d", "--name", "vm1", "--network", net,
           "-p", f"127.0.0.1:{port}:8080", "localhost/isle-vm-bb:t", "sh", "-c",
           "mkdir /w; echo from-vm > /w/i; httpd -p 8080 -h /w; "
           "until wget -qO- http://c1/i; do sleep 0.5; done; sleep 300")
    assert r.returncode == 0, r.stderr
    # the published port reaches the guest; a container reaches it by name; it reaches one
    got = poll(["curl", "-s", "-m", "3", f"http://127.0.0.1:{port}/i"], b"from-vm", 120)
    assert got == b"from-vm\n"
    r = pm("exec", "c2", "wget", "-qO-", "http://vm1:8080/i")
    assert r.stdout == b"from-vm\n", r.stderr
    deadline = time.monotonic() + 30
    while b"from-c1" not in (logs := pm("logs", "vm1").stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert b"from-c1\n" in logs
    inspect = pm("inspect", "vm1", "--format",
                 "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").stdout
    assert b"10.218.5." in inspect
    assert pm("rm", "-f", "-t", "2", "vm1", "c1", "c2").returncode == 0
    assert subprocess.run(["curl", "-s", "-m", "2", f"http://127.0.0.1:{port}/i"],
                          capture_output=True).returncode != 0


@pytest.fixture
def containerd(tmp_path: Path):
    """A private containerd (no CRI plugin) with its own root, state and sockets."""
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd/ctr not installed")
    run = Path(tempfile.mkdtemp(prefix="isle-h2ctrd-", dir="/run"))
    conf = tmp_path / "containerd.toml"
    conf.write_text(
        f'version = 2\nroot = "{tmp_path}/ctrd-root"\nstate = "{run}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{run}/c.sock"\n[ttrpc]\n  address = "{run}/t.sock"\n')
    log = open(tmp_path / "containerd.log", "wb")
    p = subprocess.Popen(["containerd", "--config", str(conf)], stdout=log, stderr=log)
    # a namespace of our own: containerd puts its containers' cgroups at /<namespace>/<id>
    ns = f"isle-t{uuid.uuid4().hex[:6]}"
    ctr = ["ctr", "--address", f"{run}/c.sock", "-n", ns]
    try:
        deadline = time.monotonic() + 20
        while sh(*ctr, "version").returncode != 0:
            assert p.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "containerd.log").read_text()
            time.sleep(0.1)
        yield ctr
    finally:
        for c in sh(*ctr, "task", "ls", "-q").stdout.decode().split():
            sh(*ctr, "task", "kill", "-s", "KILL", c)
        time.sleep(1)
        for c in sh(*ctr, "task", "ls", "-q").stdout.decode().split():
            sh(*ctr, "task", "rm", "-f", c)
        for c in sh(*ctr, "c", "ls", "-q").stdout.decode().split():
            sh(*ctr, "c", "rm", c)
        # every container's cgroup is gone with it (isle-vm-runtime's included); the namespace's
        # parent is runc's to leave behind (it never removes parents), so the test takes it
        left = sorted(str(d) for d in Path("/sys/fs/cgroup").glob(f"*/{ns}/*") if d.is_dir())
        for d in Path("/sys/fs/cgroup").glob(f"*/{ns}"):
            with contextlib.suppress(OSError):
                d.rmdir()
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        subprocess.run(["umount", "-R", str(tmp_path / "ctrd-root")], capture_output=True)
        shutil.rmtree(run, ignore_errors=True)
    assert left == [], f"containers' cgroups left behind: {left}"
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{ns}")), "namespace cgroup left behind"


@pytest.fixture
def cni_bridge(tmp_path: Path):
    """cni(name) -> (netns path, address): a namespace attached by Debian's CNI bridge plugin
    (host-local IPAM under tmp_path), detached and removed afterwards."""
    if not os.path.exists(f"{CNI}/bridge"):
        pytest.skip("containernetworking-plugins not installed")
    tag = uuid.uuid4().hex[:6]
    conf = json.dumps({
        "cniVersion": "1.0.0", "name": f"ih2{tag}", "type": "bridge", "bridge": f"ih2br{tag}",
        "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": "10.219.4.0/24",
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "ipam")}}).encode()
    made: list[str] = []

    def env(cmd: str, ns: str) -> dict[str, str]:
        return dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=ns, CNI_NETNS=f"/run/netns/{ns}",
                    CNI_IFNAME="eth0", CNI_PATH=CNI)

    def attach(name: str) -> tuple[str, str]:
        ns = f"ih2{name}{tag}"
        assert sh("ip", "netns", "add", ns).returncode == 0
        made.append(ns)
        r = subprocess.run([f"{CNI}/bridge"], input=conf, env=env("ADD", ns),
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        return f"/run/netns/{ns}", json.loads(r.stdout)["ips"][0]["address"].split("/")[0]

    try:
        yield attach
    finally:
        for ns in made:
            subprocess.run([f"{CNI}/bridge"], input=conf, env=env("DEL", ns),
                           capture_output=True, timeout=30)
            sh("ip", "netns", "del", ns)
        sh("ip", "link", "del", f"ih2br{tag}")


@pytest.mark.timeout(240)
def test_ctr_runc_binary_vm_container_on_a_cni_bridge(
    containerd, cni_bridge, busybox_rootfs: str, vm_env: dict[str, str]
) -> None:
    ctr = containerd
    c1ns, c1ip = cni_bridge("c")
    vmns, vmip = cni_bridge("v")
    r = sh(*ctr, "run", "-d", "--env", "PATH=/bin", "--rootfs", "--with-ns",
           f"network:{c1ns}", busybox_rootfs, "c1", "/bin/sh", "-c",
           "mkdir /w; echo from-c1 > /w/i; httpd -f -p 80 -h /w")
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*ctr, "run", "-d", "--runc-binary", RUNTIME, "--rootfs", "--with-ns", f"network:{vmns}",
         busybox_rootfs, "vm1", "sh", "-c",
         "mkdir /w; echo from-vm > /w/i; httpd -p 8080 -h /w; sleep 300"],
        env=vm_env, capture_output=True, timeout=150)
    assert r.returncode == 0, r.stderr
    # the host (the bridge's gateway side) and a runc container reach the guest; it reaches them
    got = poll(["curl", "-s", "-m", "3", f"http://{vmip}:8080/i"], b"from-vm", 120)
    assert got == b"from-vm\n"
    r = sh(*ctr, "task", "exec", "--exec-id", "e1", "c1", "/bin/busybox", "wget", "-qO-",
           f"http://{vmip}:8080/i")
    assert r.stdout == b"from-vm\n", r.stderr
    r = subprocess.run([*ctr, "task", "exec", "--exec-id", "e2", "vm1", "wget", "-qO-",
                        f"http://{c1ip}/i"], env=vm_env, capture_output=True, timeout=60)
    assert r.stdout == b"from-c1\n", r.stderr
    assert sh(*ctr, "task", "kill", "-s", "KILL", "vm1").returncode == 0
    deadline = time.monotonic() + 30
    while b"RUNNING" in sh(*ctr, "task", "ls").stdout.split(b"vm1", 1)[-1].split(b"\n")[0]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert sh(*ctr, "task", "rm", "vm1").returncode == 0
    no_redirects(os.path.basename(vmns))
