"""Review finding 9: QEMU (microVMs, template clones, whole-OS VMs) must run jailed, as
Firecracker's jailer and libvirt run it: its own unprivileged uid, no capabilities at all,
no_new_privs, a seccomp sandbox, a mount namespace holding only its files, inside the
container's cgroup. An attacker who takes over QEMU from the guest then holds nothing.

Each test boots a real VM under TCG and, while it runs, looks at its QEMU from the host, then
acts as that QEMU (its mount namespace, uid and groups, via nsenter) and tries what an attacker
would: read a root-only canary, write the guest kernel, signal another VM's QEMU."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

_p = Path(__file__).resolve().parent.parent / "integration" / "vm" / "conftest.py"
_spec = importlib.util.spec_from_file_location("isle_sec_vm", _p)
assert _spec and _spec.loader
_vm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_vm)
vm_cache = _vm.vm_cache
vm_env = _vm.vm_env
vmh = _vm.vmh

REPO = Path(__file__).resolve().parents[2]
RUNTIME = str(REPO / ".venv" / "bin" / "isle-vm-runtime")
ISLE = str(REPO / ".venv" / "bin" / "isle")
UID_BASE = 0x70000000
JAIL_ROOT = {"bin", "dev", "etc", "lib", "lib64", "run", "sbin", "tmp", "usr", "var"}


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _qemu_child(monitor: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == monitor and cmd.startswith(b"qemu-system"):
                return int(d)
        time.sleep(0.05)
    raise AssertionError(f"no QEMU under {monitor}")


def _template_group(pid: int) -> set[int]:
    """{TEMPLATE_GID} for a template's clone (its RAM is the template's file), else none."""
    from isle.vm.jail import TEMPLATE_GID

    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return {TEMPLATE_GID} if b"mem-path=" in f.read() else set()


def _assert_jailed(pid: int, *, groups: set[int] | None = None, net: bool = True
                   ) -> dict[str, str]:
    st = _status(pid)
    uids = {int(x) for x in st["Uid"].split()}
    gids = {int(x) for x in st["Gid"].split()}
    assert len(uids) == 1 and len(gids) == 1, st["Uid"]
    (uid,), (gid,) = uids, gids
    assert uid != 0 and gid != 0 and UID_BASE <= uid < UID_BASE + 65536, uid
    for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[k], 16) == 0, (k, st[k])
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    if groups is None:  # the documented policy: none, but a template's clone is in its group
        groups = _template_group(pid)
    assert {int(g) for g in st["Groups"].split()} == groups
    # its own mount namespace (and ipc), whose root holds only the jail
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert os.readlink(f"/proc/{pid}/ns/ipc") != os.readlink("/proc/self/ns/ipc")
    if net:  # no user networking: no network of the host's (loopback, abstract sockets) either
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    top = set(os.listdir(f"/proc/{pid}/root"))
    assert top <= JAIL_ROOT, top
    assert not os.path.exists(f"/proc/{pid}/root/proc") and not os.path.exists(
        f"/proc/{pid}/root/root") and not os.path.exists(f"/proc/{pid}/root/home")
    dev = set(os.listdir(f"/proc/{pid}/root/dev"))
    assert {"null", "zero", "urandom"} <= dev <= {"null", "random", "urandom", "zero", "shm", "kvm"}
    assert "net" not in os.listdir(f"/proc/{pid}/root/dev")  # taps come as fds
    return {"uid": str(uid), "gid": str(gid), "groups": ",".join(st["Groups"].split())}


def _as_qemu(pid: int, ids: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """argv run the way a QEMU taken over by the guest would run it: its mount, ipc and network
    namespaces, its uid,
    gid and groups, no capabilities, no_new_privs."""
    cmd = ["nsenter", "-t", str(pid), "-m", "-i", "-n", "--",
           "setpriv", f"--reuid={ids['uid']}", f"--regid={ids['gid']}",
           f"--groups={ids['groups']}" if ids["groups"] else "--clear-groups",
           "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _cgroup_of(pid: int, ctrl: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if ctrl in ctrls.split(","):
                return path
    raise AssertionError(f"{pid} has no {ctrl} cgroup")


def _rt(root: Path, *args: str, env: dict[str, str]):
    """The runtime's CLI; `create` leaves a monitor holding its stdio: files, not pipes."""
    with open(root.parent / f"rt-{args[0]}.log", "w+b") as log:
        cp = subprocess.run([RUNTIME, "--root", str(root), *args], env=env, timeout=150,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.seek(0)
        cp.stderr = log.read()
    return cp


@pytest.mark.timeout(300)
def test_microvm_qemu_is_jailed_in_the_container_cgroup_and_holds_nothing(
        tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh) -> None:
    canary = tmp_path / "secret"
    canary.write_text("root-only\n")
    canary.chmod(0o644)  # world-readable even: the jail must not contain it at all
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", "sleep 60"])
    cfg = json.loads((Path(b) / "config.json").read_text())
    cfg["linux"]["resources"] = {"memory": {"limit": 128 << 20}, "pids": {"limit": 20}}
    cfg["linux"]["cgroupsPath"] = f"/isle-sec-test/{tmp_path.name[-12:]}"
    (Path(b) / "config.json").write_text(json.dumps(cfg))
    root = tmp_path / "root"
    try:
        r = _rt(root, "create", "-b", b, "j1", env=vm_env)
        assert r.returncode == 0, r.stderr
        assert _rt(root, "start", "j1", env=vm_env).returncode == 0
        state = json.loads((root / "j1" / "state.json").read_text())
        qemu = state["qemu_pid"]
        assert qemu == _qemu_child(state["pid"])
        ids = _assert_jailed(qemu)
        # none of the caller's environment reaches QEMU
        with open(f"/proc/{qemu}/environ", "rb") as f:
            assert f.read().split(b"\0")[:-1] == [b"PATH=/usr/bin:/bin"]

        # inside the container's cgroup, with the spec's limits plus QEMU's own overhead
        cg = cfg["linux"]["cgroupsPath"]
        from isle.runtime.vm.spec import QEMU_MEMORY_OVERHEAD_MIB, QEMU_THREADS

        for ctrl in ("memory", "pids", "cpu", "devices"):
            assert _cgroup_of(qemu, ctrl) == cg, ctrl
        mem = int(Path(f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes").read_text())
        assert mem == (128 + QEMU_MEMORY_OVERHEAD_MIB) << 20
        pids = Path(f"/sys/fs/cgroup/pids{cg}/pids.max").read_text().strip()
        assert pids == str(20 + QEMU_THREADS + 1)
        assert qemu in [int(x) for x in
                        Path(f"/sys/fs/cgroup/pids{cg}/cgroup.procs").read_text().split()]

        # acting as this QEMU: the host's files are not there, the guest's are not writable
        got = _as_qemu(qemu, ids, "cat", str(canary))
        assert got.returncode != 0 and "root-only" not in got.stdout
        assert "No such file" in got.stderr, got.stderr
        for path in ("/etc/shadow", "/etc/passwd", "/root", str(root), "/var/lib/isle",
                     "/proc/1/environ"):
            got = _as_qemu(qemu, ids, "cat", path)
            assert got.returncode != 0 and not got.stdout, (path, got.stdout)
        kernel = next(a for a in open(f"/proc/{qemu}/cmdline", "rb").read().split(b"\0")
                      if a.endswith(b"vmlinuz") or b"/kernel/" in a).decode()
        got = _as_qemu(qemu, ids, "sh", "-c", f"echo x >> {kernel}")
        assert got.returncode != 0
        # a mount (its namespace is its own, yet no capability) or a setuid helper fails too
        assert _as_qemu(qemu, ids, "mount", "-t", "tmpfs", "x", "/tmp").returncode != 0
        assert _as_qemu(qemu, ids, "su", "-c", "id").returncode != 0
        # no other process is visible to it as its own: root's (pid 1) cannot be signalled
        got = _as_qemu(qemu, ids, "kill", "-0", "1")
        assert got.returncode != 0

        # the host's abstract unix sockets and loopback are another network namespace's
        import socket

        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(f"\0isle-sec-qemu-{os.getpid()}")
        srv.listen(1)
        try:
            assert _as_qemu(qemu, ids, "python3", "-c", "print(1)").stdout == "1\n"
            got = _as_qemu(qemu, ids, "python3", "-c",
                           "import socket,sys; s=socket.socket(socket.AF_UNIX);"
                           f"s.connect('\\0isle-sec-qemu-{os.getpid()}')")
            assert got.returncode != 0, "reached a host abstract socket"
        finally:
            srv.close()

        # a second VM: another uid, so neither QEMU can signal nor reach the other's sockets
        b2 = vmh.make_bundle(tmp_path / "b2", busybox_rootfs, ["sh", "-c", "sleep 60"])
        assert _rt(root, "create", "-b", b2, "j2", env=vm_env).returncode == 0
        q2 = json.loads((root / "j2" / "state.json").read_text())["qemu_pid"]
        ids2 = _assert_jailed(q2)
        assert ids2["uid"] != ids["uid"]
        got = _as_qemu(qemu, ids, "kill", "-9", str(q2))
        assert got.returncode != 0 and _status(q2)["State"][0] in "SR"
        rundir2 = json.loads((root / "j2" / "state.json").read_text())["rundir"]
        st = os.stat(rundir2)
        assert (st.st_uid, st.st_mode & 0o777) == (int(ids2["uid"]), 0o700)
    finally:
        for c in ("j1", "j2"):
            _rt(root, "delete", "-f", c, env=vm_env)
    assert not os.path.exists(f"/sys/fs/cgroup/memory{cfg['linux']['cgroupsPath']}")


@pytest.mark.timeout(300)
def test_template_clone_qemu_is_jailed_too(
        tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh) -> None:
    from isle.vm.jail import TEMPLATE_GID

    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", "echo up; sleep 60"])
    env = dict(vm_env, ISLE_VM_TEMPLATE="1")
    root = tmp_path / "root"
    # the first run makes the template (and is a clone itself)
    r = _rt(root, "run", "-b", vmh.make_bundle(tmp_path / "b0", busybox_rootfs, ["true"]),
            "t0", env=env)
    assert r.returncode == 0, r.stderr
    try:
        r = _rt(root, "create", "-b", b, "t1", env=env)
        assert r.returncode == 0, r.stderr
        state = json.loads((root / "t1" / "state.json").read_text())
        qemu = state["qemu_pid"]
        ids = _assert_jailed(qemu, groups={TEMPLATE_GID})
        ram = [a for a in open(f"/proc/{qemu}/cmdline", "rb").read().split(b"\0")
               if b"mem-path=" in a][0].decode().split("mem-path=")[1].split(",")[0]
        assert "share=off" in open(f"/proc/{qemu}/cmdline", "rb").read().decode(errors="replace")
        # its jail has its own template's RAM file and no other file of /dev/shm
        assert os.listdir(f"/proc/{qemu}/root/dev/shm") == [os.path.basename(ram)]
        assert _cgroup_of(qemu, "memory") == "/isle/t1"
        # nothing else under /dev/shm is reachable as the clone
        probe = Path("/dev/shm") / f"isle-sec-probe-{os.getpid()}"
        probe.write_text("x")
        try:
            os.chown(probe, 0, TEMPLATE_GID)
            probe.chmod(0o660)
            got = _as_qemu(qemu, ids, "sh", "-c", f"echo pwned > {probe}")
            assert got.returncode != 0 and probe.read_text() == "x"
        finally:
            probe.unlink()
    finally:
        _rt(root, "delete", "-f", "t1", env=env)
    assert not os.path.exists("/sys/fs/cgroup/memory/isle/t1")


CODE = bytes.fromhex("31c08ed8fc baf803 be177c ac 84c0 7403 ee ebf8 fa f4 ebfd".replace(" ", ""))


@pytest.mark.timeout(240)
def test_whole_os_vm_qemu_is_jailed_and_its_disks_come_by_fd(tmp_path: Path, vmh) -> None:
    base = tmp_path / "os.img"
    base.write_bytes((CODE + b"ok\r\n\0").ljust(510, b"\0") + b"\x55\xaa" + b"\0" * (1 << 20))
    base.chmod(0o600)  # root's: QEMU's uid could not open it by path
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
    isle = [ISLE, "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"), "vm"]

    def call(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(isle + list(a), capture_output=True, text=True, timeout=90, env=env)
        assert not check or cp.returncode == 0, cp.stderr
        return cp

    call("create", "w1", "--disk", str(base), "--memory", "64M")
    try:
        call("start", "w1")
        info = json.loads(call("inspect", "w1").stdout)[0]
        qemu = info["pid"]
        ids = _assert_jailed(qemu)
        assert "-daemonize" not in open(f"/proc/{qemu}/cmdline", "rb").read().decode()
        cg = _cgroup_of(qemu, "memory")  # /isle/vm-<name>-<tag of the root>: roots never share
        assert cg.startswith("/isle/vm-w1-") and _cgroup_of(qemu, "pids") == cg, cg
        # neither the user's disk nor the VM's overlay is in the jail: they came as fds
        assert not os.path.exists(f"/proc/{qemu}/root{base}")
        assert not os.path.exists(f"/proc/{qemu}/root{info['disk']}")
        got = _as_qemu(qemu, ids, "cat", str(base))
        assert got.returncode != 0
        # isle's record of the pid is root's, beside QEMU's run directory, not QEMU's to forge
        pidfile = tmp_path / "run" / "vms" / "w1.pid"
        assert pidfile.stat().st_uid == 0 and int(pidfile.read_text().split()[0]) == qemu
        got = _as_qemu(qemu, ids, "sh", "-c", f"echo 1 > {pidfile}")
        assert got.returncode != 0 and int(pidfile.read_text().split()[0]) == qemu
        # a console socket isle talks to is still reachable by root
        assert os.path.exists(info["console"])
    finally:
        call("rm", "-f", "w1", check=False)
    assert not os.path.exists(f"/sys/fs/cgroup/memory{cg}")
    assert not list((tmp_path / "run" / "vms").glob("*"))
    assert vmh.qemus(str(tmp_path)) == []


@pytest.mark.timeout(300)
def test_engine_vm_container_limits_bound_its_qemu(tmp_path: Path, vm_cache: str) -> None:
    """`isle run --isolation vm --memory --pids-limit --cpus`: the engine's spec reaches QEMU's
    cgroup (the container's), and rm takes the cgroup with it."""
    from isle.runtime.vm.spec import QEMU_MEMORY_OVERHEAD_MIB, QEMU_THREADS

    env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
    env.update(ISLE_CACHE=vm_cache, ISLE_VM_READY_TIMEOUT="100")

    def isle(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([ISLE, "--root", str(tmp_path / "root"), "--runroot",
                             str(tmp_path / "run"), *a], capture_output=True, text=True,
                            env=env, timeout=180, stdin=subprocess.DEVNULL)
        assert not check or cp.returncode == 0, cp.stderr
        return cp

    cid = isle("run", "-d", "--isolation", "vm", "--network", "none", "--memory", "128m",
               "--pids-limit", "30", "--cpus", "1", "busybox", "sleep", "120").stdout.strip()
    try:
        monitor = isle("inspect", cid, "--format", "{{.State.Pid}}").stdout.strip()
        qemu = _qemu_child(int(monitor))
        _assert_jailed(qemu)
        mem_cg, pids_cg = _cgroup_of(qemu, "memory"), _cgroup_of(qemu, "pids")
        assert cid[:12] in mem_cg and mem_cg == pids_cg
        limit = int(Path(f"/sys/fs/cgroup/memory{mem_cg}/memory.limit_in_bytes").read_text())
        assert limit == (128 + QEMU_MEMORY_OVERHEAD_MIB) << 20
        pids = Path(f"/sys/fs/cgroup/pids{pids_cg}/pids.max").read_text().strip()
        assert pids == str(30 + QEMU_THREADS + 1)
        quota = Path(f"/sys/fs/cgroup/cpu{_cgroup_of(qemu, 'cpu')}/cpu.cfs_quota_us").read_text()
        assert int(quota) > 0
    finally:
        isle("rm", "-f", cid, check=False)
    assert not os.path.exists(f"/sys/fs/cgroup/memory{mem_cg}")
