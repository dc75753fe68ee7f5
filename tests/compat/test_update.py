"""POST /containers/{id}/update and `isle update`: new limits reach the live container's cgroup
and its record (inspect), a new restart policy is kept, bad values are refused naming the field."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

#: the docker CLIs (as conftest.py finds them): the one on PATH and Debian's 20.10
CLIS = [p for p in dict.fromkeys([shutil.which("docker") or "", "/usr/bin/docker"]) if p and
        os.access(p, os.X_OK)]

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def _cg(pid: int, ctrl: str, name: str) -> str:
    """The value of a cgroup v1 file of the process's cgroup for ctrl (e.g. memory)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrl in ctrls.split(","):
            mnt = next(d for d in (f"/sys/fs/cgroup/{ctrls}", f"/sys/fs/cgroup/{ctrl}")
                       if Path(d).is_dir())
            return Path(mnt, path.lstrip("/"), name).read_text().strip()
    raise AssertionError(f"no {ctrl} cgroup for pid {pid}")


def _inspect(service, cid: str) -> dict:
    return json.loads(service.docker("inspect", cid).stdout)[0]


@pytest.mark.skipif(not CLIS, reason="needs a docker CLI")
@pytest.mark.parametrize("cli", CLIS or [""])
def test_docker_cli_update(service, cli: str) -> None:
    """The docker CLI on PATH (28.x) and Debian's 20.10 (API 1.41): each sends every field."""
    def docker(*args: str, check: bool = True):
        return service.docker(*args, cli=cli, check=check)

    cid = docker("run", "-d", "--memory", "64m", "busybox", "sleep", "300").stdout.strip()
    pid = _inspect(service, cid)["State"]["Pid"]
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    docker("update", "--memory", "128m", "--memory-swap", "256m", "--cpus", "0.5",
           "--cpu-shares", "512", "--pids-limit", "40", "--restart", "on-failure:3", cid)
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(128 << 20)
    assert _cg(pid, "memory", "memory.memsw.limit_in_bytes") == str(256 << 20)
    assert _cg(pid, "cpu", "cpu.cfs_quota_us") == "50000"
    assert _cg(pid, "cpu", "cpu.shares") == "512"
    assert _cg(pid, "pids", "pids.max") == "40"
    hc = _inspect(service, cid)["HostConfig"]
    assert hc["Memory"] == 128 << 20 and hc["MemorySwap"] == 256 << 20
    assert hc["NanoCpus"] == 500_000_000 and hc["CpuShares"] == 512 and hc["PidsLimit"] == 40
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    # -1 lifts the pids limit; a docker CLI that sends every field as 0 changes nothing else
    docker("update", "--pids-limit", "-1", cid)
    assert _cg(pid, "pids", "pids.max") == "max"
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(128 << 20)
    # the record keeps the limits: a restart starts with them
    docker("restart", "-t", "1", cid)
    pid = _inspect(service, cid)["State"]["Pid"]
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(128 << 20)
    assert _cg(pid, "cpu", "cpu.cfs_quota_us") == "50000"
    # bad values: Docker's own refusals (the client's 125, the service's message names the field)
    bad = docker("update", "--memory", "4m", cid, check=False)
    assert bad.returncode != 0 and "memory" in bad.stderr.lower(), bad.stderr
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(128 << 20)
    docker("rm", "-f", cid)


def test_docker_py_update(service) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=service.host, timeout=60)
    try:
        c = client.containers.run("busybox", ["sleep", "300"], detach=True, mem_limit="64m")
        c.reload()
        pid = c.attrs["State"]["Pid"]
        r = c.update(mem_limit="96m", memswap_limit="192m", cpu_quota=25000, cpu_period=100000,
                     cpuset_cpus="0", restart_policy={"Name": "always"})
        assert r["Warnings"] in ([], None)
        assert _cg(pid, "memory", "memory.limit_in_bytes") == str(96 << 20)
        assert _cg(pid, "cpu", "cpu.cfs_quota_us") == "25000"
        assert _cg(pid, "cpuset", "cpuset.cpus") == "0"
        c.reload()
        hc = c.attrs["HostConfig"]
        assert hc["Memory"] == 96 << 20 and hc["NanoCpus"] == 250_000_000
        assert hc["RestartPolicy"]["Name"] == "always"
        # wrong types and unknown policies: 400 naming the field, nothing changed
        api = client.api
        for body, field in (({"Memory": "lots"}, "Memory"), ({"CpuShares": [1]}, "CpuShares"),
                            ({"RestartPolicy": {"Name": "sometimes"}}, "restart"),
                            ({"BlkioWeight": 5}, "blkio"), ({"KernelMemory": 1 << 20},
                                                            "KernelMemory")):
            resp = api._post_json(api._url("/containers/{0}/update", c.id), data=body)
            assert resp.status_code == 400, (body, resp.status_code, resp.text)
            assert field.lower() in resp.json()["message"].lower(), resp.text
        assert _cg(pid, "memory", "memory.limit_in_bytes") == str(96 << 20)
        with pytest.raises(docker.errors.NotFound):
            client.api.update_container("no-such-container", mem_limit="64m")
        c.remove(force=True)
    finally:
        client.close()


def test_isle_update_cli(service) -> None:
    cid = service.isle("run", "-d", "--memory", "64m", "busybox", "sleep", "300").stdout.strip()
    pid = json.loads(service.isle("inspect", cid).stdout)[0]["State"]["Pid"]
    out = service.isle("update", "-m", "100m", "--cpu-quota", "20000", "--pids-limit", "30",
                       "--restart", "unless-stopped", cid)
    assert out.stdout.strip() == cid
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(100 << 20)
    assert _cg(pid, "cpu", "cpu.cfs_quota_us") == "20000"
    assert _cg(pid, "pids", "pids.max") == "30"
    rp = json.loads(service.isle("inspect", cid).stdout)[0]["HostConfig"]["RestartPolicy"]
    assert rp["Name"] == "unless-stopped"
    for args, field in ((["--memory", "lots"], "--memory"), (["--cpus", "x"], "--cpus"),
                        (["--pids-limit", "many"], "--pids-limit"),
                        (["--restart", "sometimes"], "--restart"),
                        (["--blkio-weight", "5"], "--blkio-weight"), ([], "flags")):
        cp = service.isle("update", *args, cid, check=False)
        assert cp.returncode == 125 and field in cp.stderr, (args, cp.returncode, cp.stderr)
    cp = service.isle("update", "-m", "64m", "no-such-container", check=False)
    assert cp.returncode != 0 and "no-such-container" in cp.stderr
    assert _cg(pid, "memory", "memory.limit_in_bytes") == str(100 << 20)
    service.isle("rm", "-f", cid)
