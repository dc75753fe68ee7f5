"""OCI config.json -> VM job and size, with errors naming the field."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from isle.errors import AlreadyExists, ConfigError, NotFound
from isle.runtime.vm import dispatch, wants_vm
from isle.runtime.vm import spec as vmspec
from isle.runtime.vm import state as st


def _cfg(**over: object) -> dict:
    c = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "h",
        "process": {
            "args": ["sh"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "user": {"uid": 1, "gid": 2},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "mode=755"],
            },
        ],
    }
    c.update(over)
    return c


def test_to_job() -> None:
    j = vmspec.to_job(_cfg())
    assert j.args == ("sh",) and j.uid == 1 and j.gid == 2 and j.hostname == "h"
    assert j.rlimits == ((resource.RLIMIT_NOFILE, 10, 20),)
    dev = [m for m in j.mounts if m.destination == "/dev"][0]
    # the spec's own /dev tmpfs (the guest's devtmpfs holds its disk and ports); isle-exec -d
    # makes the devices in it
    assert dev.type == "tmpfs" and dev.options == ("nosuid", "mode=755")
    assert "-d" in j.spec_opts


def test_guest_opts_carry_the_rest_of_the_spec() -> None:
    cfg = _cfg(domainname="d.example")
    cfg["root"]["readonly"] = True
    cfg["process"].update(
        capabilities={"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                      "permitted": ["CAP_KILL"], "inheritable": [], "ambient": ["CAP_KILL"]},
        oomScoreAdj=-7, user={"uid": 0, "gid": 0, "umask": 0o27})
    cfg["linux"] = {
        "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
        "sysctl": {"net.ipv4.ip_forward": "1"}, "rootfsPropagation": "rslave",
        "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                     "fileMode": 0o600, "uid": 1, "gid": 2}],
    }
    o = vmspec.guest_opts(cfg)
    pairs = list(zip(o, o[1:], strict=False))
    kill, chown = 1 << 5, 1 << 0
    assert ("-c", f"{kill | chown:x},{kill:x},{kill:x},{kill:x},{kill:x}") in pairs
    assert ("-o", "-7") in pairs and ("-m", "27") in pairs and ("-D", "d.example") in pairs
    assert ("-M", "/proc/kcore") in pairs and ("-R", "/proc/sys") in pairs and "-O" in o
    assert ("-y", "net.ipv4.ip_forward=1") in pairs and ("-P", "rslave") in pairs
    assert ("-k", "/dev/fuse:c:10:229:600:1:2") in pairs
    # an exec's process alone: its own settings, none of the container's
    assert vmspec.guest_opts({"process": cfg["process"]}) == ("-c", o[1], "-m", "27", "-o", "-7")


@pytest.mark.parametrize("linux,field", [
    ({"maskedPaths": ["rel"]}, r"linux.maskedPaths\[0\]"),
    ({"devices": [{"path": "/etc/x", "type": "c"}]}, r"linux.devices\[0\].path"),
    ({"devices": [{"path": "/dev/x", "type": "q"}]}, r"linux.devices\[0\].type"),
    ({"sysctl": {"../x": "1"}}, r"linux.sysctl"),
    ({"rootfsPropagation": "sideways"}, r"linux.rootfsPropagation"),
    ({"namespaces": [{"type": "user"}]}, r"linux.uidMappings"),
    ({"namespaces": [{"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 1,
                                                         "size": 0}]}, r"linux.uidMappings\[0\]"),
    ({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
                  "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}},
     r"linux.seccomp"),
])
def test_guest_opts_name_bad_fields(linux: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        vmspec.guest_opts(_cfg(linux=linux))


def test_user_namespace_maps_go_to_the_guest() -> None:
    user = {"namespaces": [{"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 2000}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 3000},
                            {"containerID": 5000, "hostID": 9000, "size": 1}]}
    o = vmspec.guest_opts(_cfg(linux=user))
    pairs = list(zip(o, o[1:], strict=False))
    assert ("-U", "0:1000:2000") in pairs and ("-V", "0:1000:3000,5000:9000:1") in pairs
    # maps without a user namespace are not applied (runc: the namespace asks for them)
    assert "-U" not in vmspec.guest_opts(_cfg(linux={"uidMappings": user["uidMappings"]}))


def test_guest_opts_seccomp_is_isle_runtimes_program() -> None:
    from isle.runtime import seccomp

    sc = {"defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    o = vmspec.guest_opts(_cfg(linux={"seccomp": sc}))
    flags, b64 = o[o.index("-s") + 1].split(":", 1)
    import base64

    assert base64.b64decode(b64) == seccomp.compile_filter(sc) and int(flags, 16) == 0


def test_bad_rlimit_and_empty_args_are_named() -> None:
    with pytest.raises(ConfigError, match=r"process.rlimits\[0\].type"):
        vmspec.to_job(_cfg(process={"args": ["x"], "rlimits": [{"type": "RLIMIT_BOGUS"}]}))
    with pytest.raises(ConfigError, match="process.args"):
        vmspec.to_job(_cfg(process={"args": []}))


@pytest.mark.parametrize(
    "res,want",
    [
        ({}, (1, 128)),
        ({"memory": {"limit": 512 * 2**20}}, (1, 512)),
        ({"cpu": {"quota": 150000, "period": 100000}}, (2, 128)),
        ({"cpu": {"cpus": "0-1,3"}}, (3, 128)),
        ({"cpu": {"cpus": "0-63"}}, (4, 128)),  # never more vCPUs than host CPUs
    ],
)
def test_vm_size(res: dict, want: tuple[int, int]) -> None:
    assert vmspec.vm_size(_cfg(linux={"resources": res}), host_cpus=4) == want


def test_vm_size_errors_name_fields() -> None:
    with pytest.raises(ConfigError, match="linux.resources.memory.limit"):
        vmspec.vm_size(_cfg(linux={"resources": {"memory": {"limit": 16 * 2**20}}}))
    with pytest.raises(ConfigError, match="linux.resources.cpu.cpus"):
        vmspec.vm_size(_cfg(linux={"resources": {"cpu": {"cpus": "3-1"}}}))
    assert vmspec.vm_size(
        _cfg(annotations={"org.isle.vm.memory": "256", "org.isle.vm.vcpus": "2"}), host_cpus=8
    ) == (2, 256)


def test_state_roundtrip_and_dead_monitor_means_stopped(tmp_path: Path) -> None:
    root = str(tmp_path)
    st.create_dir(root, "c1")
    with pytest.raises(AlreadyExists):
        st.create_dir(root, "c1")
    st.save(root, st.State(id="c1", bundle="/b", status="running", pid=2**22 + 7))
    s = st.load(root, "c1")
    assert s.status == "stopped" and s.oci()["id"] == "c1" and st.list_ids(root) == ["c1"]
    with pytest.raises(NotFound):
        st.load(root, "c2")
    with pytest.raises(ConfigError):
        st.load(root, "../etc")


def test_wants_vm_and_dispatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text('{"annotations": {"org.isle.isolation": "vm"}}')
    assert wants_vm(str(tmp_path)) and not wants_vm(str(tmp_path / "none"))
    assert dispatch(["--root", str(tmp_path / "r"), "state", "nosuch"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert dispatch(["--root", str(tmp_path / "r"), "kill", "x", "SIGNOPE"]) == 1
    assert dispatch(["features"]) == 0


def test_owns_routes_ids_to_the_vm_runtime(tmp_path: Path) -> None:
    from isle.runtime.vm import owns, vm_root

    root = str(tmp_path)
    assert not owns(root, "c1")
    st.create_dir(vm_root(root), "c1")
    st.save(vm_root(root), st.State(id="c1", bundle="/b"))
    assert owns(root, "c1") and not owns(root, "../c1")


def test_vm_info_is_plain_data() -> None:
    import isle.vm

    i = isle.vm.info("/nonexistent-cache")
    assert i["accel"] in ("kvm", "tcg") and i["accel_reason"]
    assert "fetch-guest-kernel" in i["guest_kernel_error"]


def test_network_annotations(tmp_path: Path) -> None:
    from isle.vm.job import USER_NET, render

    assert vmspec.net_of(_cfg()) == ("", "", "", None)
    assert vmspec.net_of(_cfg(annotations={"org.isle.vm.net": "user"}))[0] == "user"
    kind, tap, mac, net = vmspec.net_of(
        _cfg(
            annotations={
                "org.isle.vm.net": "tap:isletap1",
                "org.isle.vm.net.address": "10.88.0.5/16",
                "org.isle.vm.net.gateway": "10.88.0.1",
                "org.isle.vm.net.mac": "02:00:00:00:00:05",
            }
        )
    )
    assert (kind, tap, mac) == ("tap", "isletap1", "02:00:00:00:00:05")
    assert net is not None and net.address == "10.88.0.5/16"
    with pytest.raises(ConfigError, match="org.isle.vm.net"):
        vmspec.net_of(_cfg(annotations={"org.isle.vm.net": "bridge"}))
    hosts = tmp_path / "hosts"
    hosts.write_text("1.2.3.4 x\n")
    job = vmspec.to_job(
        _cfg(
            annotations={"org.isle.vm.net": "user"},
            mounts=[
                {
                    "destination": "/etc/hosts",
                    "type": "bind",
                    "source": str(hosts),
                    "options": ["rbind", "ro"],
                }
            ],
        )
    )
    assert job.net == USER_NET
    assert dict(job.files) == {
        "/etc/hosts": "1.2.3.4 x\n",
        "/etc/resolv.conf": "nameserver 10.0.2.3\n",
    }
    s = render(job)
    assert "inroot /newroot /etc/hosts && " in s and "printf '%s' '1.2.3.4 x\n' > \"$R\"" in s
    assert "ip addr add 10.0.2.15/24 dev eth0" in s and "ip route add default via 10.0.2.2" in s


def test_directory_binds_become_virtiofs_mounts_in_spec_order(tmp_path: Path) -> None:
    """Volumes and -v DIR binds reach the guest as virtio-fs shares (ro kept); small files are
    still copied in; a bind of something that is neither is dropped."""
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    (tmp_path / "hosts").write_text("127.0.0.1 x\n")
    cfg = _cfg(mounts=_cfg()["mounts"] + [
        {"destination": "/data", "type": "bind", "source": str(tmp_path / "d1"),
         "options": ["rbind", "rprivate"]},
        {"destination": "/etc/hosts", "type": "bind", "source": str(tmp_path / "hosts"),
         "options": ["rbind", "ro"]},
        {"destination": "/cfg", "source": str(tmp_path / "d2"), "options": ["bind", "ro"]},
        {"destination": "/gone", "type": "bind", "source": str(tmp_path / "missing")},
    ])
    assert vmspec.shares_of(cfg) == (("isle0", str(tmp_path / "d1"), "/data", False),
                                     ("isle1", str(tmp_path / "d2"), "/cfg", True))
    j = vmspec.to_job(cfg)
    fs = [(m.destination, m.source, m.options) for m in j.mounts if m.type == "virtiofs"]
    # served under their base names: the guest binds TAG/NAME, so its mountinfo names them
    assert fs == [("/data", "isle0/d1", ()), ("/cfg", "isle1/d2", ("ro",))]
    assert not any(m.destination == "/gone" for m in j.mounts)
    assert ("/etc/hosts", "127.0.0.1 x\n") in j.files
    from isle.vm.job import render

    s = render(j)
    assert "mount -t virtiofs -o ro isle1 /.shares/isle1" in s
    assert "inroot /newroot /cfg && " in s
    assert 'mount --bind /.shares/isle1/d2 "$R" && mount -o remount,bind,ro' in s
    assert vmspec.share_name(str(tmp_path / "d1"), "/.isle-pod") == ""  # isle's own plumbing


def test_exec_job_takes_the_containers_seccomp_caps_and_rlimits_as_runc_does() -> None:
    sc = {"defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    caps = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}
    cfg = _cfg(linux={"seccomp": sc}, process={
        "args": ["x"], "capabilities": caps, "noNewPrivileges": True,
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 9}]})
    init = vmspec.guest_opts(cfg)
    assert init[init.index("-W") + 1] == vmspec.GUEST_SECCOMP  # the init keeps its program
    j = vmspec.exec_job(cfg, {"args": ["y"]})  # a process.json without caps, rlimits, nnp
    assert j.spec_opts[-2:] == ("-S", vmspec.GUEST_SECCOMP) and "-s" not in j.spec_opts
    assert "-c" in j.spec_opts and j.rlimits and not j.no_new_privs
    own = vmspec.exec_job(cfg, {"args": ["y"], "capabilities": {}, "noNewPrivileges": True})
    assert own.spec_opts[own.spec_opts.index("-c") + 1].startswith("0,0,0") and own.no_new_privs
    bare = vmspec.exec_job(_cfg(process={"args": ["x"]}), {"args": ["y"]})
    assert "-S" not in bare.spec_opts  # no seccomp in the container: none for its exec either


def test_the_container_gets_its_own_namespaces_in_the_guest_and_execs_join_them() -> None:
    """render: isle-exec -N (own mount and pid namespaces, pivot_root; it says 'started' on the
    control port itself, fd 3: the job does not poll); render_exec joins them (-J), a pod
    container's exec joins its container's (pod_ctr): never a bare chroot."""
    from isle.vm.job import CTR_PID, pod_ctr, render, render_exec

    j = vmspec.to_job(_cfg())
    s = render(j)
    assert f"/bin/isle-exec -r /newroot -N {CTR_PID} -A 3 " in s
    assert "echo started" not in s and "usleep 1000; done" not in s.split("isle-exec", 1)[1]
    x = vmspec.exec_job(_cfg(), {"args": ["true"]})
    assert f"/bin/isle-exec -J {CTR_PID} " in render_exec(x, 1)
    assert f"/bin/isle-exec -J {pod_ctr('c1')} " in render_exec(x, 1, pod_ctr("c1"))
