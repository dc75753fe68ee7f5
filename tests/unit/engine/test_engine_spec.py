"""spec.py / options.py: run options -> OCI config, pure."""

from __future__ import annotations

import pytest

from isle.engine import options as O
from isle.engine.spec import MASKED_PATHS, SpecInputs, build_spec, command_line, resolve_user
from isle.errors import ConfigError

IMG = {"Env": ["PATH=/bin", "A=image"], "Cmd": ["sh"], "WorkingDir": "/w"}
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:app\n"


def spec(**kw):
    opts = O.RunOptions(image="busybox", **kw)
    inp = SpecInputs(container_id="c" * 64, rootfs="/r", image_config=IMG, hostname="h",
                     passwd=PASSWD, group=GROUP, cgroups_path="/isle-x",
                     seccomp_profile={"defaultAction": "SCMP_ACT_ERRNO"})
    return build_spec(opts, inp)


def test_docker_defaults():
    s = spec()
    p = s["process"]
    assert p["args"] == ["sh"] and p["cwd"] == "/w" and p["user"] == {"uid": 0, "gid": 0}
    assert "A=image" in p["env"] and "HOSTNAME=h" in p["env"]
    assert sorted(p["capabilities"]["bounding"]) == sorted(O.DEFAULT_CAPS)
    assert "CAP_SYS_ADMIN" not in p["capabilities"]["effective"]
    assert s["linux"]["maskedPaths"] == MASKED_PATHS
    assert s["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"type": "network"} in s["linux"]["namespaces"]
    assert s["linux"]["cgroupsPath"] == "/isle-x"
    assert {m["destination"] for m in s["mounts"]} >= {"/proc", "/dev", "/sys", "/dev/pts"}


def test_privileged_caps_seccomp_and_limits():
    s = spec(privileged=True)
    assert "CAP_SYS_ADMIN" in s["process"]["capabilities"]["bounding"]
    assert "seccomp" not in s["linux"] and "maskedPaths" not in s["linux"]
    s = spec(cap_drop=["CAP_CHOWN"], cap_add=["CAP_NET_ADMIN"], seccomp="unconfined",
             memory=64 << 20, cpus=1.5, pids_limit=50, no_new_privileges=True, read_only=True)
    caps = s["process"]["capabilities"]["effective"]
    assert "CAP_CHOWN" not in caps and "CAP_NET_ADMIN" in caps
    assert "seccomp" not in s["linux"]
    r = s["linux"]["resources"]
    assert r["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert r["cpu"] == {"period": 100000, "quota": 150000} and r["pids"] == {"limit": 50}
    assert s["process"]["noNewPrivileges"] is True and s["root"]["readonly"] is True
    with pytest.raises(ConfigError, match="--memory"):
        spec(memory=1024)


def test_entrypoint_and_command_rules():
    cfg = {"Entrypoint": ["/ep"], "Cmd": ["a"]}
    assert command_line(O.RunOptions(image="x"), cfg) == ["/ep", "a"]
    assert command_line(O.RunOptions(image="x", command=["b"]), cfg) == ["/ep", "b"]
    assert command_line(O.RunOptions(image="x", entrypoint=["/o"]), cfg) == ["/o"]
    assert command_line(O.RunOptions(image="x", entrypoint=[], command=["c"]), cfg) == ["c"]
    with pytest.raises(ConfigError):
        command_line(O.RunOptions(image="x"), {})


def test_users_and_groups():
    assert resolve_user("app", PASSWD, GROUP, []) == {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    assert resolve_user("5:7", PASSWD, GROUP, []) == {"uid": 5, "gid": 7}
    assert resolve_user("0", PASSWD, GROUP, ["wheel"]) == {"uid": 0, "gid": 0, "additionalGids": [10]}
    with pytest.raises(ConfigError, match="nobody"):
        resolve_user("nobody", PASSWD, GROUP, [])


@pytest.mark.parametrize("flag,value", [("--memory", "10zz"), ("--memory", "-1"), ("--memory", "m")])
def test_bad_sizes(flag, value):
    with pytest.raises(ConfigError, match=flag):
        O.parse_bytes(flag, value)


def test_parsers():
    assert O.parse_bytes("-m", "512m") == 512 << 20 and O.parse_bytes("-m", "1g") == 1 << 30
    assert O.parse_bytes("-m", "100") == 100
    assert O.parse_volume("/a:/b:ro").readonly and O.parse_volume("vol:/b").type == "volume"
    assert O.parse_volume("/b").anonymous
    with pytest.raises(ConfigError, match="--volume"):
        O.parse_volume("a:b")
    m = O.parse_mount("type=tmpfs,target=/t,tmpfs-size=1m")
    assert m.type == "tmpfs" and m.options == [f"size={1 << 20}"]
    with pytest.raises(ConfigError, match="--mount"):
        O.parse_mount("type=nfs,target=/t")
    assert O.parse_ulimit("nofile=10:20") == O.Ulimit(name="nofile", soft=10, hard=20)
    with pytest.raises(ConfigError, match="--ulimit"):
        O.parse_ulimit("bogus=1")
    assert O.parse_restart("on-failure:3") == O.RestartPolicy(name="on-failure", max_retries=3)
    with pytest.raises(ConfigError, match="--restart"):
        O.parse_restart("sometimes")
    assert O.check_caps("--cap-add", ["net_admin", "ALL"]) == ["CAP_NET_ADMIN", "ALL"]
    with pytest.raises(ConfigError, match="CAP_BOGUS"):
        O.check_caps("--cap-add", ["CAP_BOGUS"])
    assert O.parse_signal("--stop-signal", "SIGUSR1") == 10 and O.parse_signal("-s", "9") == 9
    assert O.parse_duration("--x", "1m30s") == 90 and O.parse_duration("--x", "500ms") == 0.5
    assert O.parse_env(["A=1", "HOME", "NOPE"], {"HOME": "/h"}) == ["A=1", "HOME=/h"]


def test_options_roundtrip():
    o = O.RunOptions(image="x", mounts=[O.parse_volume("v:/d")], ulimits=[O.parse_ulimit("nproc=5")],
                     restart=O.parse_restart("always"), healthcheck=O.Healthcheck(test=["NONE"]))
    assert O.RunOptions.from_dict(o.to_dict()) == o


def test_privileged_is_bounded_by_what_isle_holds():
    from isle.engine.spec import host_bounding_caps

    held = host_bounding_caps("CapBnd:\t000001fffeffffff\n")
    assert "CAP_SYS_RESOURCE" not in held and "CAP_SYS_ADMIN" in held
    opts = O.RunOptions(image="x", privileged=True, command=["sh"])
    inp = SpecInputs(container_id="c" * 64, rootfs="/r", host_caps=held, passwd=PASSWD)
    caps = build_spec(opts, inp)["process"]["capabilities"]["bounding"]
    assert caps == held
