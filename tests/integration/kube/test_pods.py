"""Pods through containerd's CRI with isle's runtime handlers, driven by the real crictl.

Each test brings up its own private containerd (`isle kube up --dir`), imports a busybox image
made offline by isle, and takes the node down again: the autouse leak check then also proves that
`isle kube down` leaves no mount, netns, link or process. crictl comes from PATH or from
scripts/critest's build (/var/tmp/isle-critest/bin); without it these tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from isle.kube import node as kube_node

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")
CRICTL = kube_node.crictl_path()

pytestmark = [
    pytest.mark.root, pytest.mark.netns, pytest.mark.slow,
    pytest.mark.skipif(CRICTL is None, reason="needs crictl (scripts/critest build)"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/containerd"), reason="needs containerd"),
]


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("kube-img")
    out = str(d / "busybox.tar")
    subprocess.run([ISLE, "--root", str(d / "root"), "--runroot", str(d / "run"), "save",
                    "-o", out, "busybox"], check=True, capture_output=True, timeout=120)
    return out


class Node:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.sock = "unix://" + str(d / "containerd.sock")
        self.logdir = d / "logs"

    def crictl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        p = subprocess.run([CRICTL, "-r", self.sock, "-i", self.sock, "--timeout", "50s", *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)}: {p.returncode}: {p.stderr}"
                                 f"\n{_tail(self.d / 'containerd.log')}")
        return p.stdout.strip()

    def pod(self, name: str, handler: str) -> str:
        cfg = {"metadata": {"name": name, "namespace": "isle-test", "uid": name + "-uid",
                            "attempt": 1},
               "hostname": name, "log_directory": str(self.logdir / name), "linux": {}}
        f = self.d / f"{name}.pod.json"
        f.write_text(json.dumps(cfg))
        return self.crictl("runp", "--runtime", handler, str(f))

    def container(self, pod: str, name: str, args: list[str], pod_name: str) -> str:
        cfg = {"metadata": {"name": name}, "image": {"image": "docker.io/library/busybox:latest"},
               "command": args, "log_path": f"{name}.log", "linux": {}}
        f = self.d / f"{pod_name}.{name}.json"
        f.write_text(json.dumps(cfg))
        pf = self.d / f"{pod_name}.pod.json"
        cid = self.crictl("create", pod, str(f), str(pf))
        self.crictl("start", cid)
        return cid

    def logs(self, cid: str) -> str:
        """stdout and stderr lines (crictl logs prints each on its own stream)."""
        p = subprocess.run([CRICTL, "-r", self.sock, "logs", cid], capture_output=True,
                           text=True, timeout=30)
        return p.stdout + p.stderr

    def inspect(self, cid: str) -> dict[str, Any]:
        return json.loads(self.crictl("inspect", cid))["status"]  # type: ignore[no-any-return]

    def pod_ip(self, pod: str) -> str:
        return json.loads(self.crictl("inspectp", pod))["status"]["network"]["ip"]  # type: ignore


def _tail(p: Path, n: int = 1500) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@pytest.fixture
def node(tmp_path: Path, busybox_archive: str) -> Any:
    d = tmp_path / "n"
    kube_node.up(str(d))
    try:
        subprocess.run(["ctr", "-a", str(d / "containerd.sock"), "-n", "k8s.io", "images",
                        "import", busybox_archive], check=True, capture_output=True, timeout=120)
        yield Node(d)
    finally:
        kube_node.down(str(d))
    _assert_node_clean(d)


def _assert_node_clean(d: Path) -> None:
    """After down: no shim or containerd of this node, no netns mount, no CNI lease or cache."""
    needle = str(d / "containerd.sock").encode()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, needle)]
    assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(d) in m]
    ipam = d / "cni" / "ipam"
    assert not ipam.exists() or not any(ipam.rglob("10.*"))
    from isle.kube.config import Node as NodeCfg

    name = NodeCfg.under(str(d)).network_name
    cache = Path(kube_node.CNI_CACHE)
    assert not cache.exists() or not [f for f in os.listdir(cache) if f.startswith(name + "-")]
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True,
                         text=True).stdout
    assert f'name: \\"{name}\\"' not in nat  # bridge ipMasq / portmap rules


def _cmdline_has(pid: str, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _wait_exited(n: Node, cid: str, timeout: float = 20) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        st = n.inspect(cid)
        if st["state"] == "CONTAINER_EXITED" or time.monotonic() > end:
            return st
        time.sleep(0.2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("handler", ["runc", "isle"])
def test_two_container_pod_lifecycle(node: Node, handler: str) -> None:
    pod = node.pod("p-" + handler, handler)
    assert json.loads(node.crictl("inspectp", pod))["status"]["state"] == "SANDBOX_READY"
    c1 = node.container(pod, "main", ["sh", "-c", f"echo hello-{handler}; exec sleep 300"],
                        "p-" + handler)
    c2 = node.container(pod, "web", ["httpd", "-f", "-p", "8080", "-h", "/etc"], "p-" + handler)
    # the pod's containers share its network namespace: c1 reaches c2 on localhost
    out = ""
    for _ in range(50):
        out = node.crictl("exec", "-s", c1, "wget", "-qO-", "http://127.0.0.1:8080/hostname",
                          check=False)
        if out:
            break
        time.sleep(0.1)
    assert out == "p-" + handler
    assert node.crictl("exec", "-s", c2, "hostname") == "p-" + handler
    assert node.logs(c1).strip() == f"hello-{handler}"
    # exit codes come back per container
    c3 = node.container(pod, "exits", ["sh", "-c", "echo bye >&2; exit 3"], "p-" + handler)
    st = _wait_exited(node, c3)
    assert st["state"] == "CONTAINER_EXITED" and st["exitCode"] == 3
    assert node.logs(c3).strip() == "bye"
    node.crictl("stop", "-t", "2", c2)
    assert node.inspect(c2)["state"] == "CONTAINER_EXITED"
    node.crictl("rm", c2)
    node.crictl("stopp", pod)
    node.crictl("rmp", pod)
    assert node.crictl("pods", "-q") == ""
    assert node.crictl("ps", "-aq") == ""
    # the pod's attachment is gone at once (not only at down): lease and netns
    assert not any((node.d / "cni" / "ipam").rglob("10.*"))


@pytest.mark.timeout(120)
def test_pod_to_pod_by_ip_across_handlers(node: Node) -> None:
    a = node.pod("pa", "runc")
    node.container(a, "web", ["httpd", "-f", "-p", "8080", "-h", "/etc"], "pa")
    b = node.pod("pb", "isle")
    cb = node.container(b, "client", ["sleep", "300"], "pb")
    ip_a, ip_b = node.pod_ip(a), node.pod_ip(b)
    assert ip_a and ip_b and ip_a != ip_b
    out = ""
    for _ in range(50):
        out = node.crictl("exec", "-s", cb, "wget", "-qO-", f"http://{ip_a}:8080/hostname",
                          check=False)
        if out:
            break
        time.sleep(0.1)
    assert out == "pa"
    # and the other way round: the isle pod answers ping from the runc pod's network
    ca = node.crictl("ps", "-q", "--pod", a)
    assert "0% packet loss" in node.crictl("exec", "-s", ca, "ping", "-c", "1", "-W", "5", ip_b)
    node.crictl("rmp", "-fa")
    assert node.crictl("pods", "-q") == ""


@pytest.mark.timeout(120)
def test_down_without_crictl_still_leaves_nothing(node: Node, monkeypatch: Any) -> None:
    """A node whose pods were never removed through the CRI (no crictl on the host): down
    deletes the containers through their runtimes, runs CNI DEL from libcni's cache and removes
    the masquerade rules that DEL cannot without the pod's netns."""
    for h in ("runc", "isle"):
        pod = node.pod("f-" + h, h)
        node.container(pod, "c", ["sleep", "300"], "f-" + h)
    monkeypatch.setattr(kube_node, "crictl_path", lambda: None)
    kube_node.down(str(node.d))
    _assert_node_clean(node.d)


def _qemus_of(n: Node) -> list[int]:
    """QEMU processes started under this node's shims (the monitor's child, the shim's
    grandchild): others' VMs on the machine do not count."""
    needle = str(n.d / "containerd.sock").encode()
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or not _cmdline_has(p, b"qemu-system"):
            continue
        pid = p
        for _ in range(4):
            try:
                pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                break
            if _cmdline_has(pid, needle):
                found.append(int(p))
                break
    return found


@pytest.mark.qemu
@pytest.mark.timeout(240)
def test_vm_pod_containers_share_one_vm_and_localhost(node: Node) -> None:
    """handler isle-vm: one VM per pod; its containers run inside it (no VM of their own),
    share the pod's localhost, and have their own logs, exit codes, exec and stop."""
    pod = node.pod("vp", "isle-vm")
    assert len(_qemus_of(node)) == 1
    web = node.container(pod, "web", ["httpd", "-f", "-p", "8080", "-h", "/etc"], "vp")
    main = node.container(pod, "main", ["sh", "-c", "echo hello-vm; exec sleep 300"], "vp")
    assert len(_qemus_of(node)) == 1  # the containers booted nothing
    out = ""
    for _ in range(100):
        out = node.crictl("exec", "-s", main, "wget", "-qO-", "http://127.0.0.1:8080/hostname",
                          check=False)
        if out:
            break
        time.sleep(0.2)
    assert out == "vp"
    # each container sees its own root: the web container's /etc is its image's, main's too
    assert node.crictl("exec", "-s", main, "sh", "-c", "echo $$ > /mine; cat /mine").isdigit()
    assert node.crictl("exec", "-s", web, "sh", "-c", "test -e /mine || echo absent") == "absent"
    assert node.logs(main).strip() == "hello-vm"
    bye = node.container(pod, "exits", ["sh", "-c", "echo bye >&2; exit 3"], "vp")
    st = _wait_exited(node, bye, timeout=60)
    assert st["state"] == "CONTAINER_EXITED" and st["exitCode"] == 3
    assert node.logs(bye).strip() == "bye"
    node.crictl("stop", "-t", "5", web)
    st = node.inspect(web)
    assert st["state"] == "CONTAINER_EXITED" and st["exitCode"] in (143, 137, 0)
    node.crictl("rm", web)
    node.crictl("stopp", pod)
    assert _qemus_of(node) == []
    node.crictl("rmp", pod)
    assert node.crictl("pods", "-q") == "" and node.crictl("ps", "-aq") == ""
    assert not any((node.d / "cni" / "ipam").rglob("10.*"))
    assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines()
                if ".pod-" in m and str(node.d) in m]  # the pod's shared dir and binds
