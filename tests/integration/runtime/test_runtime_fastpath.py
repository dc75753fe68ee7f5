"""isle-runtime's fast path as root: the init forked straight into its pid namespace, joining its
v1 cgroups itself; the runtime and its hooks stay in the host's pid namespace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

HYBRID = not os.path.exists("/sys/fs/cgroup/cgroup.controllers") and os.path.exists(
    "/sys/fs/cgroup/unified/cgroup.controllers")


def test_direct_init_is_pid_1_in_its_cgroups_and_hooks_stay_in_host_pid_ns(rt, bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    def edit(c):
        c["linux"]["cgroupsPath"] = "/isle-test-fast/f1"
        c["hooks"] = {k: [{"path": "/bin/sh", "args": [
            "sh", "-c", f"readlink /proc/self/ns/pid > {out}/{k}"]}]
            for k in ("createRuntime", "poststart", "poststop")}

    cp = rt("run", "-b", str(bundle(["sh", "-c", "echo $$; cat /proc/self/cgroup"], edit)),
            "f1")
    lines = cp.stdout.split()
    assert lines[0] == "1"
    v1 = [ln for ln in lines[1:] if not ln.startswith("0::")]
    assert v1 and all(ln.endswith(":/isle-test-fast/f1") for ln in v1), lines
    host = os.readlink("/proc/self/ns/pid")
    assert {k: (out / k).read_text().strip() for k in ("createRuntime", "poststart",
                                                       "poststop")} == dict.fromkeys(
        ("createRuntime", "poststart", "poststop"), host)
    assert not list(Path("/sys/fs/cgroup").glob("*/isle-test-fast"))  # parents isle made: gone


@pytest.mark.skipif(not HYBRID, reason="needs a hybrid cgroup host")
def test_hybrid_unified_half_only_when_a_limit_goes_there(rt, bundle):
    cp = rt("run", "-b", str(bundle(["cat", "/proc/self/cgroup"])), "f2")
    assert "0::/\n" in cp.stdout  # no limit for the unified hierarchy: no cgroup made there
    uni = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().split()
    if "hugetlb" not in uni or Path("/sys/fs/cgroup/hugetlb").exists():
        pytest.skip("hugetlb is not a unified-only controller here")

    def edit(c):
        c["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "2MB", "limit": 0}]

    cp = rt("run", "-b", str(bundle(["cat", "/proc/self/cgroup"], edit, name="b2")), "f3")
    assert "0::/isle/f3\n" in cp.stdout


def test_direct_init_joins_another_containers_namespaces_by_path(rt, bundle):
    """A pod-style second container: network, ipc, uts and pid namespaces of the first."""
    def first(c):
        c["hostname"] = "podhost"

    rt("run", "-d", "-b", str(bundle(["sleep", "30"], first)), "pod-a")
    pid = rt.state("pod-a")["pid"]

    def second(c):
        c.pop("hostname", None)  # a joined uts namespace keeps the first's name
        for n in c["linux"]["namespaces"]:
            if n["type"] in ("network", "ipc", "uts", "pid"):
                n["path"] = f"/proc/{pid}/ns/{'net' if n['type'] == 'network' else n['type']}"

    script = "hostname; tr '\\0' ' ' </proc/1/cmdline; echo; readlink /proc/self/ns/net"
    cp = rt("run", "-b", str(bundle(["sh", "-c", script], second, name="b2")), "pod-b")
    host, cmd, net = cp.stdout.split("\n")[:3]
    assert host == "podhost" and cmd.strip() == "sleep 30"
    assert net == os.readlink(f"/proc/{pid}/ns/net")
    rt("delete", "--force", "pod-a")


def test_sealed_pod_init_joins_its_nested_cgroups_itself(rt, bundle):
    """A container created into another's pid namespace (a CRI pod's) starts from the sealed
    interpreter through a stage 1; its init still joins every v1 hierarchy of its own nested
    cgroupsPath (by tasks files: no RCU grace period on create's critical path), not the
    runtime's or the pod's, and the cgroups and the parents isle made are gone after delete."""
    def pod(c):
        c["linux"]["cgroupsPath"] = "/isle-test-fast/pod1/pause"

    rt("run", "-d", "-b", str(bundle(["sleep", "30"], pod)), "pod-s1")
    pid = rt.state("pod-s1")["pid"]

    def ctr(c):
        c["linux"]["cgroupsPath"] = "/isle-test-fast/pod1/c2"
        c["linux"]["resources"]["memory"] = {"limit": 64 << 20}
        c.pop("hostname", None)
        for n in c["linux"]["namespaces"]:
            if n["type"] in ("network", "ipc", "uts", "pid"):
                n["path"] = f"/proc/{pid}/ns/{'net' if n['type'] == 'network' else n['type']}"

    try:
        cp = rt("run", "-b", str(bundle(["sh", "-c", "echo $$; cat /proc/self/cgroup"], ctr,
                                        name="b2")), "pod-s2")
    finally:
        rt("delete", "--force", "pod-s1")
    lines = cp.stdout.split()
    assert lines[0] != "1"  # not the pod's init: a process of its pid namespace
    v1 = [ln for ln in lines[1:] if not ln.startswith("0::")]
    assert v1 and all(ln.endswith(":/isle-test-fast/pod1/c2") for ln in v1), lines
    assert not list(Path("/sys/fs/cgroup").glob("*/isle-test-fast"))
