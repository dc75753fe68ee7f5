"""A build RUN step's config.json is isle run's: the same hardening, from the same code."""

from __future__ import annotations

from pathlib import Path

import pytest

from isle.config import Settings
from isle.engine.buildrun import RunSandbox
from isle.engine.options import RunOptions
from isle.engine.spec import SpecInputs, build_spec, load_default_seccomp
from isle.errors import ConfigError


def _sandbox(tmp_path: Path, network: str = "none") -> RunSandbox:
    s = Settings(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"))
    s.rootless = False
    return RunSandbox(s, network)


def test_step_spec_has_the_hardening_of_isle_run(tmp_path: Path) -> None:
    rootfs = tmp_path / "bundle" / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    sb = _sandbox(tmp_path)
    step = sb.prepare("isle-build-0123456789ab", str(rootfs), str(tmp_path / "bundle"),
                      ["/bin/sh", "-c", "true"], ["PATH=/bin"], "/w", "app")
    sb.release("isle-build-0123456789ab")
    run = build_spec(RunOptions(image="x", command=["/bin/sh", "-c", "true"], network="none"),
                     SpecInputs(container_id="c", rootfs=str(rootfs), hostname="h",
                                seccomp_profile=load_default_seccomp(), cgroups_path="/c"))
    for key in ("capabilities", "noNewPrivileges"):
        assert step["process"][key] == run["process"][key], key
    assert step["process"]["user"] == {"uid": 1000, "gid": 1000}
    assert step["process"]["cwd"] == "/w"
    for key in ("maskedPaths", "readonlyPaths", "seccomp", "namespaces"):
        assert step["linux"][key] == run["linux"][key], key
    assert step["linux"]["seccomp"]  # Docker's profile, never none
    assert step["linux"]["resources"]["devices"] == run["linux"]["resources"]["devices"]
    assert {"type": "network"} in step["linux"]["namespaces"]
    base = [m for m in run["mounts"] if m["destination"] not in ("/etc/hosts", "/etc/hostname",
                                                                "/etc/resolv.conf")]
    assert [m for m in step["mounts"] if m in base] == base
    assert not (tmp_path / "run" / "build-steps" / "isle-build-0123456789ab").exists()


def test_user_db_is_read_inside_the_rootfs(tmp_path: Path) -> None:
    host = tmp_path / "hostpasswd"
    host.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    rootfs = tmp_path / "bundle" / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").symlink_to(host)  # absolute: resolved inside the rootfs
    sb = _sandbox(tmp_path)
    with pytest.raises(ConfigError, match="hostonly"):
        sb.prepare("isle-build-0123456789ac", str(rootfs), str(tmp_path / "bundle"), ["true"],
                   [], "/", "hostonly")


@pytest.mark.parametrize("bad", ["bridge2", "container:x", "ns:/proc/1/ns/net", "slirp4netns"])
def test_unknown_networks_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="--network"):
        _sandbox(tmp_path, bad)


def test_a_containerfile_cannot_take_the_host_network(tmp_path: Path) -> None:
    rootfs = tmp_path / "bundle" / "rootfs"
    rootfs.mkdir(parents=True)
    with pytest.raises(ConfigError, match="RUN --network=host"):
        _sandbox(tmp_path).prepare("isle-build-0123456789ad", str(rootfs),
                                   str(tmp_path / "bundle"), ["true"], [], "/", "", network="host")


def test_in_cgroup_names_only_a_process_of_the_steps_cgroup(tmp_path: Path) -> None:
    """The sweep kills a step's init only if the pid is still in the step's cgroup (/<cid>)."""
    import os
    import subprocess

    from isle.engine.buildrun import _in_cgroup

    cid = f"isle-build-test{os.getpid()}"
    d = next((f"/sys/fs/cgroup/{h}/{cid}" for h in ("pids", "unified")
              if os.path.isfile(f"/sys/fs/cgroup/{h}/cgroup.procs")), "")
    if os.geteuid() != 0 or not d:
        pytest.skip("needs root and a pids or cgroup2 hierarchy")
    os.mkdir(d)
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert not _in_cgroup(p.pid, cid)
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        assert _in_cgroup(p.pid, cid)
        assert not _in_cgroup(p.pid, cid[:-1])  # a step whose name is a prefix of this one's
    finally:
        p.kill()
        p.wait()
        os.rmdir(d)
    assert not _in_cgroup(p.pid, cid)  # gone
