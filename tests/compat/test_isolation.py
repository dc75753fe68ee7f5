"""Isolation through the API: `docker run --isolation vm` (HostConfig.Isolation) runs the
container in a microVM (its own kernel), HostConfig.Runtime selects a registered runtime, inspect
reports both; unknown values are clear 4xx errors."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


@pytest.mark.qemu
def test_isolation_vm_and_runtime(service) -> None:
    host_kernel = os.uname().release
    cp = service.docker("run", "--rm", "--isolation", "vm", "busybox", "uname", "-r", timeout=180)
    assert cp.stdout.strip() and cp.stdout.strip() != host_kernel, cp.stdout
    service.docker("run", "-d", "--name", "vm1", "--isolation", "vm", "busybox", "sleep", "120",
                   timeout=180)
    fmt = "{{.HostConfig.Isolation}} {{.HostConfig.Runtime}}"
    assert service.docker("inspect", "-f", fmt, "vm1").stdout.split() == ["vm", "isle-vm-runtime"]
    assert service.docker("ps", "--filter", "isolation=vm", "--format", "{{.Names}}"
                          ).stdout.split() == ["vm1"]
    service.docker("rm", "-f", "vm1", timeout=120)


def test_runtime_selection_and_bad_values(service) -> None:
    service.docker("run", "-d", "--name", "rc1", "--runtime", "runc", "busybox", "sleep", "60")
    fmt = "{{.HostConfig.Isolation}}|{{.HostConfig.Runtime}}"
    assert service.docker("inspect", "-f", fmt, "rc1").stdout.strip() == "|runc"
    service.docker("rm", "-f", "rc1")
    cp = service.docker("run", "--rm", "--runtime", "nope", "busybox", "true", check=False)
    assert cp.returncode == 125 and "nope" in cp.stderr
    cp = service.docker("run", "--rm", "--isolation", "bogus", "busybox", "true", check=False)
    assert cp.returncode == 125 and "bogus" in cp.stderr
    assert service.docker("ps", "-aq").stdout == ""
