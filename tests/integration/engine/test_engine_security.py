"""Security and resource flags reach the kernel: caps, seccomp, no-new-privileges, user, ulimits,
pids/cpu/memory limits, --init, hostname, env, workdir, entrypoint, -t."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root]


def status(isle, *flags: str) -> dict[str, str]:
    out = isle("run", "--rm", *flags, "busybox", "cat", "/proc/self/status").stdout
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}


def test_capabilities_and_privileges(isle):
    default = int(status(isle)["CapEff"], 16)
    assert default == 0xA80425FB  # Docker's default set
    assert int(status(isle, "--cap-drop", "ALL")["CapEff"], 16) == 0
    added = int(status(isle, "--cap-add", "NET_ADMIN")["CapEff"], 16)
    assert added == default | (1 << 12)
    assert int(status(isle, "--privileged")["CapEff"], 16) >= 0x1FFFFFFFFF
    s = status(isle)
    assert s["Seccomp"] == "2" and s["NoNewPrivs"] == "0"
    assert status(isle, "--security-opt", "seccomp=unconfined")["Seccomp"] == "0"
    assert status(isle, "--security-opt", "no-new-privileges")["NoNewPrivs"] == "1"
    cp = isle("run", "--rm", "--security-opt", "seccomp=/no/such.json", "busybox", "true", check=False)
    assert cp.returncode == 125 and "/no/such.json" in cp.stderr
    # Docker's seccomp profile blocks e.g. unshare of a user namespace without CAP_SYS_ADMIN
    cp = isle("run", "--rm", "busybox", "unshare", "-U", "true", check=False)
    assert cp.returncode != 0


def test_user_workdir_env_hostname_entrypoint(isle, tmp_path):
    (tmp_path / "env").write_text("# comment\nFROM_FILE=yes\n")
    out = isle("run", "--rm", "-u", "65534:65534", "--group-add", "10", "-w", "/tmp", "-e", "A=1",
               "--env-file", str(tmp_path / "env"), "-h", "myhost", "busybox", "sh", "-c",
               "id -u; id -g; id -G; pwd; echo $A $FROM_FILE; hostname").stdout.split("\n")
    assert out[:6] == ["65534", "65534", "65534 10", "/tmp", "1 yes", "myhost"]
    assert isle("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b").stdout == "a b\n"
    cp = isle("run", "--rm", "-u", "nosuchuser", "busybox", "true", check=False)
    assert cp.returncode == 125 and "nosuchuser" in cp.stderr


def test_limits_and_init(isle):
    out = isle("run", "--rm", "--ulimit", "nofile=512:1024", "--pids-limit", "20", "--cpus", "0.5",
               "-m", "32m", "busybox", "sh", "-c",
               "ulimit -n; ulimit -Hn; cat /sys/fs/cgroup/pids/pids.max; "
               "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
               ).stdout.split()
    assert out == ["512", "1024", "20", "50000", str(32 << 20)]
    cp = isle("run", "--rm", "--ulimit", "nofile=10:5", "busybox", "true", check=False)
    assert cp.returncode == 125 and "--ulimit" in cp.stderr
    init = isle("run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline").stdout
    assert init.split("\0")[0] == "/sbin/docker-init"


def test_tty_and_read_only(isle):
    out = isle("run", "--rm", "-t", "busybox", "sh", "-c", "test -t 1 && echo tty").stdout
    assert out.strip() == "tty"
    out = isle("run", "--rm", "busybox", "sh", "-c", "test -t 1 || echo notty").stdout
    assert out.strip() == "notty"
