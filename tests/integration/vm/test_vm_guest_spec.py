"""The OCI spec as the guest sees it: isle-exec applies capabilities, user, hostname, /dev, masked
and read-only paths, read-only root, rlimits, umask, oom_score_adj, sysctl, mounts and seccomp
inside the VM (one boot checks them all: boots are slow under TCG)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime")

SCRIPT = r"""
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Uid|Gid|Groups):' /proc/self/status \
  | tr -s ' \t' ' '
echo "host $(cat /proc/sys/kernel/hostname) $(cat /proc/sys/kernel/domainname)"
echo "root $(grep -E '^[^ ]+ / ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
echo "procsys $(grep ' /proc/sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
echo "kcore $(wc -c < /proc/kcore) firmware $(ls /sys/firmware | wc -l)"
echo "limits $(ulimit -n) $(umask) $(cat /proc/self/oom_score_adj)"
echo "sysctl $(cat /proc/sys/net/ipv4/ip_forward)"
echo "links $(readlink /dev/fd) $(readlink /dev/stdin) $(readlink /dev/stdout) \
$(readlink /dev/stderr) $(readlink /dev/ptmx)"
for d in null zero full random urandom tty h8dev; do
  set -- $(ls -ln /dev/$d); echo "dev $d $1 $3 $5$6"
done
[ -e /dev/vda ] || echo "no guest disk"
ls /dev/vport* >/dev/null 2>&1 || echo "no guest ports"
echo "scratch $(grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4)"
echo "cwd $(pwd) $FOO"
mkdir /scratch/d 2>/dev/null && echo "mkdir allowed" || echo "mkdir denied"
echo hi > /scratch/f && echo "write allowed"
"""


def _caps(*names: str) -> int:
    from isle.oci.runtime_spec import CAPABILITIES

    return sum(1 << CAPABILITIES[n] for n in names)


@pytest.mark.timeout(180)
def test_guest_sees_the_spec(tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str],
                             vmh) -> None:
    b = vmh.make_bundle(
        tmp_path / "b", busybox_rootfs, ["sh", "-c", SCRIPT],
        user={"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o27},
        cwd="/tmp", env=["PATH=/bin:/usr/bin", "FOO=bar"],
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 123}],
        oomScoreAdj=321, noNewPrivileges=True,
        capabilities={"bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
                      "effective": ["CAP_NET_BIND_SERVICE"],
                      "permitted": ["CAP_NET_BIND_SERVICE"],
                      "inheritable": ["CAP_NET_BIND_SERVICE"],
                      "ambient": ["CAP_NET_BIND_SERVICE"]},
    )
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["hostname"], cfg["domainname"] = "guestbox", "guest.example"
    cfg["root"]["readonly"] = True
    cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "nodev", "mode=1777", "size=1m"]})
    lx = cfg["linux"]
    lx["maskedPaths"] = ["/proc/kcore", "/sys/firmware"]
    lx["readonlyPaths"] = ["/proc/sys"]
    lx["sysctl"] = {"net.ipv4.ip_forward": "1"}
    lx["devices"] = [{"path": "/dev/h8dev", "type": "c", "major": 1, "minor": 3,
                      "fileMode": 0o600, "uid": 1000, "gid": 0}]
    lx["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                     "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    Path(b, "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "g1"],
                       env=vm_env, capture_output=True, timeout=150)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    nbs = f"{_caps('CAP_NET_BIND_SERVICE'):016x}"
    bnd = f"{_caps('CAP_KILL', 'CAP_CHOWN', 'CAP_NET_BIND_SERVICE'):016x}"
    for want in (f"CapInh: {nbs}", f"CapPrm: {nbs}", f"CapEff: {nbs}", f"CapBnd: {bnd}",
                 f"CapAmb: {nbs}", "NoNewPrivs: 1", "Seccomp: 2",
                 "Uid: 1000 1000 1000 1000", "Gid: 1000 1000 1000 1000", "Groups: 10 20 ",
                 "host guestbox guest.example", "root ro", "procsys ro",
                 "kcore 0 firmware 0", "limits 123 0027 321", "sysctl 1",
                 "links /proc/self/fd /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 pts/ptmx",
                 "dev null crw-rw-rw- 0 1,3", "dev zero crw-rw-rw- 0 1,5",
                 "dev full crw-rw-rw- 0 1,7", "dev random crw-rw-rw- 0 1,8",
                 "dev urandom crw-rw-rw- 0 1,9", "dev tty crw-rw-rw- 0 5,0",
                 "dev h8dev crw------- 1000 1,3", "no guest disk", "no guest ports",
                 "scratch tmpfs rw,nosuid,nodev,relatime,size=1024k,mode=1777,inode64"[:30],
                 "cwd /tmp bar", "mkdir denied", "write allowed"):
        assert any(line.startswith(want) for line in out), (want, out, r.stderr)


def test_bad_spec_fails_on_the_host_naming_the_field(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["true"])
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["linux"]["devices"] = [{"path": "/etc/passwd", "type": "c", "major": 1, "minor": 3}]
    Path(b, "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "g2"],
                       env=vm_env, capture_output=True, timeout=60)
    assert r.returncode != 0 and b"linux.devices[0].path" in r.stderr, r.stderr
    assert not (tmp_path / "root" / "g2").exists()


EXEC_SCRIPT = r"""
grep -E '^(Cap(Prm|Eff|Bnd)|NoNewPrivs|Seccomp|Groups):' /proc/self/status | tr -s ' \t' ' '
mkdir /tmp/x 2>/dev/null && echo "mkdir allowed" || echo "mkdir denied"
echo "limits $(ulimit -n)"
[ -e /dev/vda ] || echo "no guest disk"
[ -e /bin/isle-exec ] || echo "container root"
for f in 3 4 5 6 7 8 9; do [ -e /proc/$$/fd/$f ] && echo "fd $f open"; done; echo "fds checked"
"""


@pytest.mark.timeout(200)
def test_exec_gets_the_containers_seccomp_caps_and_limits(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    """runc's rule: an exec'd process gets the container's seccomp filter, and its capabilities and
    rlimits unless its process says otherwise; no_new_privs as its process says; only fds 0-2."""
    b = vmh.make_bundle(
        tmp_path / "b", busybox_rootfs,
        ["sh", "-c", "[ -e /proc/$$/fd/3 ] && echo fd3; echo up; while [ ! -e /tmp/stop ]; do "
         "sleep 0.1; done"],
        user={"uid": 0, "gid": 0, "additionalGids": [10, 20]}, noNewPrivileges=False,
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 123}],
        capabilities={k: ["CAP_KILL", "CAP_CHOWN"] for k in
                      ("bounding", "effective", "permitted")},
    )
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    Path(b, "config.json").write_text(json.dumps(cfg))
    root = tmp_path / "root"
    p = subprocess.Popen([RUNTIME, "--root", str(root), "run", "-b", b, "gx"], env=vm_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def ex(*args: str) -> list[str]:
        r = subprocess.run([RUNTIME, "--root", str(root), "exec", *args], env=vm_env,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.decode().splitlines()

    def has(out: list[str], *wants: str) -> None:
        for want in wants:
            assert any(line.startswith(want) for line in out), (want, "|".join(out))

    try:
        # the guest shell's control port (its fd 3, to the host's monitor) reaches no process
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        kc = f"{_caps('CAP_KILL', 'CAP_CHOWN'):016x}"
        # the container's process, other args: everything as the container's process
        out = ex("gx", "sh", "-c", EXEC_SCRIPT)
        has(out, "Seccomp: 2", "mkdir denied", "NoNewPrivs: 0", f"CapBnd: {kc}", f"CapEff: {kc}",
            "Groups: 10 20 ", "limits 123", "no guest disk", "container root", "fds checked")
        assert not [line for line in out if line.startswith("fd ")], out
        # a process.json: its capabilities and no_new_privs; the container's seccomp and rlimits
        proc = {"args": ["sh", "-c", EXEC_SCRIPT], "cwd": "/", "env": ["PATH=/bin"],
                "user": {"uid": 0, "gid": 0}, "noNewPrivileges": True,
                "capabilities": {k: ["CAP_KILL"] for k in ("bounding", "effective",
                                                           "permitted")}}
        Path(tmp_path, "p.json").write_text(json.dumps(proc))
        k = f"{_caps('CAP_KILL'):016x}"
        has(ex("-p", str(tmp_path / "p.json"), "gx"),
            "Seccomp: 2", "mkdir denied", "NoNewPrivs: 1", f"CapBnd: {k}", f"CapEff: {k}",
            "limits 123", "container root")
        # no capabilities in process.json: the container's
        del proc["capabilities"]
        Path(tmp_path, "p.json").write_text(json.dumps(proc))
        has(ex("-p", str(tmp_path / "p.json"), "gx"), "Seccomp: 2", f"CapBnd: {kc}")
        ex("gx", "touch", "/tmp/stop")
        p.communicate(timeout=60)
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run([RUNTIME, "--root", str(root), "delete", "--force", "gx"], env=vm_env,
                       capture_output=True, timeout=60)


@pytest.mark.timeout(200)
def test_foreground_run_runs_the_hooks_on_the_host(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    """`run` runs the hooks create + start + delete would (prestart, createRuntime and
    createContainer before the process, poststart after it started, poststop at the end), each
    given the state on stdin; a failing prestart ends the run before the process, leaving
    nothing; startContainer hooks (a binary of the container's, inside the guest) are refused."""
    out = tmp_path / "out"
    out.mkdir()
    kinds = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["echo", "ran"])
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["hooks"] = {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{k}"]}]
                    for k in kinds}
    Path(b, "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "hk1"],
                       env=vm_env, capture_output=True, timeout=150)
    assert (r.returncode, r.stdout) == (0, b"ran\n"), r.stderr
    for k in kinds:
        state = json.loads((out / k).read_text())
        assert state["id"] == "hk1" and state["bundle"] == b, (k, state)

    cfg["hooks"] = {"prestart": [{"path": "/bin/false"}],
                    "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/stop2"]}]}
    cfg["process"]["args"] = ["sh", "-c", "echo should-not-run"]
    Path(b, "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "hk2"],
                       env=vm_env, capture_output=True, timeout=150)
    assert r.returncode != 0 and b"should-not-run" not in r.stdout, r
    assert b"prestart" in r.stderr, r.stderr
    assert not (tmp_path / "root" / "hk2").exists()

    cfg["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
    Path(b, "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "hk3"],
                       env=vm_env, capture_output=True, timeout=60)
    assert r.returncode != 0 and b"hooks.startContainer" in r.stderr, r.stderr
    assert not (tmp_path / "root" / "hk3").exists()
