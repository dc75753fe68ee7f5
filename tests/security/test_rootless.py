"""Rootless isle, as a real unprivileged user made here (useradd, /etc/subuid and /etc/subgid
ranges, a private XDG_RUNTIME_DIR): run, run -d + logs + exec + stop + rm, pull from a registry
on 127.0.0.1, slirp4netns networking, VM isolation. Each test also checks what such a user must
NOT get: ids beyond its ranges, the host's cgroups, someone else's runtime directory.

The user has no network: the embedded default image `busybox` is made offline by isle."""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ISLE = REPO / ".venv" / "bin" / "isle"
BIN = REPO / ".venv" / "bin"

pytestmark = [pytest.mark.root]


def _read(p: str) -> bytes | None:
    try:
        return Path(p).read_bytes()
    except FileNotFoundError:
        return None


def _restore(path: str, before: bytes | None, name: str) -> None:
    """Put back path as it was, dropping only our user's lines if someone else changed it since."""
    now = _read(path)
    if now == before:
        return
    if before is None:
        kept = [ln for ln in (now or b"").splitlines(keepends=True) if not ln.startswith(
            name.encode() + b":")]
        if kept:
            Path(path).write_bytes(b"".join(kept))
        else:
            os.unlink(path)
        return
    others = [ln for ln in (now or b"").splitlines() if not ln.startswith(name.encode() + b":")]
    if others == before.splitlines():
        Path(path).write_bytes(before)          # exactly as it was
    else:                                        # another test added lines meanwhile: keep them
        Path(path).write_bytes(b"".join(ln + b"\n" for ln in others))


class User:
    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.pw = pwd.getpwnam(name)
        self.uid, self.gid = self.pw.pw_uid, self.pw.pw_gid
        self.base = base
        self.home = Path(self.pw.pw_dir)
        self.xdg_run = base / "run"
        self.data = self.home / "data"

    def env(self, **extra: str) -> dict[str, str]:
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
               "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "XDG_RUNTIME_DIR": str(self.xdg_run), "XDG_DATA_HOME": str(self.data),
               "XDG_CACHE_HOME": str(self.home / "cache")}
        env.update(extra)
        return env

    def run(self, *argv: str, timeout: float = 120, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """argv as the user: real, effective and saved ids, no groups of root, a clean env."""
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
             "--inh-caps=-all", "env", "-i", *(
                 f"{k}={v}" for k, v in (env or self.env()).items()), *argv],
            cwd=str(self.home), capture_output=True, text=True, timeout=timeout, input=input)

    def isle(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.run(str(ISLE), *args, **kw)

    def procs(self) -> list[str]:
        out = subprocess.run(["pgrep", "-a", "-u", str(self.uid)], capture_output=True,
                             text=True).stdout
        return [ln for ln in out.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def ruser():
    if not shutil.which("newuidmap") or not shutil.which("newgidmap"):
        pytest.skip("needs Debian's uidmap (newuidmap, newgidmap)")
    name = "isr" + secrets.token_hex(3)
    saved = {f: _read(f) for f in ("/etc/subuid", "/etc/subgid")}
    tun = stat.S_IMODE(os.stat("/dev/net/tun").st_mode) if os.path.exists("/dev/net/tun") else None
    base = Path(tempfile.mkdtemp(prefix="isle-rootless-"))   # pytest's tmp_path is root-only
    os.chmod(base, 0o755)
    made = False
    try:
        subprocess.run(["useradd", "-d", str(base / "home"), "-m", "-s", "/bin/sh", "-K",
                        "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name], check=True,
                       capture_output=True)
        made = True
        u = User(name, base)
        # a range off every existing one (other tests may add theirs meanwhile: stay far away)
        start = 1_200_000 + (int(secrets.token_hex(2), 16) % 200) * 65536
        for f, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
            subprocess.run(["usermod", flag, f"{start}-{start + 65535}", name], check=True)
        u.sub = start  # type: ignore[attr-defined]
        u.xdg_run.mkdir(mode=0o700)
        os.chown(u.xdg_run, u.uid, u.gid)
        if tun is not None and tun & 0o006 != 0o006:
            os.chmod("/dev/net/tun", 0o666)      # what scripts/setup restores (Debian's udev)
        yield u
    finally:
        if made:
            uid = pwd.getpwnam(name).pw_uid
            for _ in range(3):  # only this throwaway user's processes
                subprocess.run(["pkill", "-KILL", "-U", str(uid)], capture_output=True)
                time.sleep(0.2)
            subprocess.run(["userdel", name], capture_output=True)
        for f, before in saved.items():
            _restore(f, before, name)
        if tun is not None:
            os.chmod("/dev/net/tun", tun)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def user(ruser):
    """The module's user; after each test none of its processes may be left."""
    yield ruser
    left: list[str] = []
    for _ in range(100):
        left = ruser.procs()
        if not left:
            break
        time.sleep(0.1)   # conmon and slirp4netns are reaped by init shortly after they exit
    assert not left, f"the rootless user's processes were left behind: {left}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- run -------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_rootless_run_maps_subids_through_newuidmap(user):
    cp = user.isle("run", "--rm", "busybox", "sh", "-c",
                   "id -u; cat /proc/self/uid_map /proc/self/gid_map; touch /made; "
                   "chown 1000:1000 /made; stat -c '%u:%g' /made")
    assert cp.returncode == 0, cp.stderr
    lines = [ln.split() for ln in cp.stdout.splitlines()]
    assert lines[0] == ["0"]
    # root inside is the user outside, 1.. its /etc/subuid and /etc/subgid range: both maps
    # were written (the kernel alone refuses a gid map wider than the caller's own gid)
    assert lines[1] == ["0", str(user.uid), "1"] and lines[2] == ["1", str(user.sub), "65536"]
    assert lines[3] == ["0", str(user.gid), "1"] and lines[4] == ["1", str(user.sub), "65536"]
    assert lines[5] == ["1000:1000"]
    # state where XDG says, all of it the user's
    state = user.data / "isle"
    assert (state / "isle.db").exists()
    assert (user.xdg_run / "isle").is_dir()
    for top, dirs, files in os.walk(state):
        for n in dirs + files:
            assert os.lstat(os.path.join(top, n)).st_uid != 0, n
    # cgroup v1 here: no delegation, so no cgroup is made and nothing is written to the host's
    assert not [p for p in Path("/sys/fs/cgroup").glob("*/isle*") if str(user.uid) in p.name]


@pytest.mark.timeout(120)
def test_rootless_cannot_map_ids_outside_its_ranges(user, busybox_rootfs, tmp_path):
    """isle-runtime as the user, with a spec that maps host root (0) or someone else's range:
    newuidmap refuses, the runtime says which mapping, and nothing runs or stays."""
    from isle.oci.runtime_spec import default_spec

    import json

    bdir = user.home / "b-outside"
    rootfs = bdir / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    canary = user.home / "canary"
    canary.write_text("untouched")
    os.chown(canary, 0, 0)
    os.chmod(canary, 0o644)
    for bad_uid, bad_gid in (([{"containerID": 0, "hostID": 0, "size": 1}],
                              [{"containerID": 0, "hostID": user.gid, "size": 1}]),
                             ([{"containerID": 0, "hostID": user.uid, "size": 1}],
                              [{"containerID": 0, "hostID": 0, "size": 1},
                               {"containerID": 1, "hostID": user.sub, "size": 10}]),
                             ([{"containerID": 0, "hostID": user.uid, "size": 1},
                               {"containerID": 1, "hostID": user.sub + 65000, "size": 2000}],
                              [{"containerID": 0, "hostID": user.gid, "size": 1}])):
        spec = default_spec(rootless=True)
        spec["root"]["path"] = "rootfs"
        spec["process"]["args"] = ["sh", "-c", "echo pwned > /canary"]
        spec["mounts"].append({"destination": "/canary", "type": "bind", "source": str(canary),
                               "options": ["rbind"]})
        spec["linux"]["uidMappings"], spec["linux"]["gidMappings"] = bad_uid, bad_gid
        (bdir / "config.json").write_text(json.dumps(spec))
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(bdir)], check=True)
        cp = user.run(str(BIN / "isle-runtime"), "--root", str(user.xdg_run / "rt"), "run",
                      "--bundle", str(bdir), "c1")
        assert cp.returncode != 0
        assert "Mappings" in cp.stderr and ("newuidmap" in cp.stderr
                                            or "newgidmap" in cp.stderr), cp.stderr
        assert canary.read_text() == "untouched"
        ls = user.run(str(BIN / "isle-runtime"), "--root", str(user.xdg_run / "rt"), "list", "-q")
        assert ls.stdout.split() == []


@pytest.mark.timeout(240)
def test_rootless_detached_logs_exec_stop_rm(user):
    cp = user.isle("run", "-d", "--name", "d1", "busybox", "sh", "-c",
                   "echo started; exec sleep 300")
    assert cp.returncode == 0, cp.stderr
    try:
        out = ""
        for _ in range(50):
            out = user.isle("logs", "d1").stdout
            if "started" in out:
                break
            time.sleep(0.1)
        assert out == "started\n"
        cp = user.isle("exec", "d1", "sh", "-c", "id -u; cat /proc/self/uid_map")
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.split()[:4] == ["0", "0", str(user.uid), "1"]
        cp = user.isle("stop", "-t", "2", "d1")
        assert cp.returncode == 0, cp.stderr
        assert "Exited" in user.isle("ps", "-a").stdout
    finally:
        cp = user.isle("rm", "-f", "d1")
    assert cp.returncode == 0, cp.stderr
    assert user.isle("ps", "-aq").stdout.split() == []
    # run -d --rm: conmon's exit command (run as the user) removes it
    cp = user.isle("run", "-d", "--rm", "--network", "none", "busybox", "true")
    assert cp.returncode == 0, cp.stderr
    left = ["x"]
    for _ in range(100):
        left = user.isle("ps", "-aq").stdout.split()
        if not left:
            break
        time.sleep(0.1)
    assert left == []
    # the health loop is the user's too
    cp = user.isle("run", "-d", "--name", "hc", "--network", "none", "--health-cmd", "true",
                   "--health-interval", "1s", "busybox", "sleep", "60")
    assert cp.returncode == 0, cp.stderr
    try:
        status = ""
        for _ in range(100):
            status = user.isle("ps").stdout
            if "(healthy)" in status:
                break
            time.sleep(0.1)
        assert "(healthy)" in status
    finally:
        assert user.isle("rm", "-f", "hc").returncode == 0


@pytest.mark.timeout(120)
def test_rootless_runroot_never_someone_elses(user, tmp_path):
    """Without XDG_RUNTIME_DIR isle falls back to /tmp/isle-<uid>: a name anyone can take first.
    A directory another user made there (writable by it, or a symlink to its own) is not used."""
    fallback = Path(f"/tmp/isle-{user.uid}")
    assert not os.path.lexists(fallback)
    trap = tmp_path / "trap"
    trap.mkdir()
    os.chmod(trap, 0o777)
    try:
        os.symlink(trap, fallback)                       # the attacker (root here) got there first
        env = user.env()
        del env["XDG_RUNTIME_DIR"]
        cp = user.isle("info", "--format", "{{.RunRoot}}", env=env)
        assert cp.returncode == 0, cp.stderr
        runroot = cp.stdout.strip()
        assert not runroot.startswith(str(fallback)) and runroot.startswith(str(user.home)), runroot
        cp = user.isle("run", "--rm", "--network", "none", "busybox", "true", env=env)
        assert cp.returncode == 0, cp.stderr
        assert os.listdir(trap) == []
        # an XDG_RUNTIME_DIR that others can write is not used either
        os.chmod(user.xdg_run, 0o777)
        cp = user.isle("info", "--format", "{{.RunRoot}}")
        assert cp.returncode == 0 and cp.stdout.strip(), cp.stderr
        assert not cp.stdout.strip().startswith(str(user.xdg_run)), cp.stdout
    finally:
        os.chmod(user.xdg_run, 0o700)
        os.unlink(fallback)


# -- pull --------------------------------------------------------------------------------------
def _image_conftest():
    spec = importlib.util.spec_from_file_location(
        "isle_sec_rootless_image", REPO / "tests" / "integration" / "image" / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = mod     # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.registry
@pytest.mark.timeout(240)
def test_rootless_push_and_pull_from_a_local_registry(user, tmp_path):
    img = _image_conftest()
    reg = img.start_registry(tmp_path / "reg")
    try:
        ref = f"{reg.addr}/rootless/bb:1"
        assert user.isle("tag", "busybox", ref).returncode == 0
        cp = user.isle("push", "--tls-verify=false", ref)
        assert cp.returncode == 0, cp.stderr
        cp = user.isle("rmi", ref, "busybox")          # the layers go: pull must fetch them
        assert cp.returncode == 0, cp.stderr
        assert user.isle("images", "-q").stdout.split() == []
        cp = user.isle("pull", "--tls-verify=false", ref)
        assert cp.returncode == 0, cp.stderr
        assert "pull complete" in cp.stdout + cp.stderr
        cp = user.isle("run", "--rm", "--network", "none", ref, "echo", "pulled")
        assert cp.returncode == 0 and cp.stdout == "pulled\n", cp.stderr
        for top, dirs, files in os.walk(user.data / "isle"):
            for n in dirs + files:
                assert os.lstat(os.path.join(top, n)).st_uid != 0, n   # nothing as root
    finally:
        img.stop_registry(reg)
        user.isle("rmi", "-f", f"{reg.addr}/rootless/bb:1")


# -- network -----------------------------------------------------------------------------------
class _Secret:
    """A TCP server on the host's 127.0.0.1 that hands out a secret to whoever connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self.stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            with c:
                c.sendall(b"HOST-LOOPBACK-SECRET\n")

    def close(self) -> None:
        self.stop = True
        self.t.join(5)
        self.sock.close()


@pytest.mark.netns
@pytest.mark.timeout(180)
def test_rootless_network_outbound_ports_but_not_host_loopback(user):
    if not shutil.which("slirp4netns"):
        pytest.skip("needs slirp4netns")
    secret = _Secret()
    port = _free_port()
    try:
        # the container's root tries the host's loopback every way slirp could route it
        probes = "; ".join(f"nc -w 2 {a} {secret.port} </dev/null"
                           for a in ("10.0.2.2", "10.0.2.3", "10.0.2.4", "10.0.2.254",
                                     "127.0.0.1"))
        cp = user.isle("run", "--rm", "busybox", "sh", "-c",
                       f"ip -o -4 addr show tap0; ip route; {probes}; true")
        assert cp.returncode == 0, cp.stderr
        assert "10.0.2.100/24" in cp.stdout and "default via 10.0.2.2" in cp.stdout
        assert "SECRET" not in cp.stdout and secret.hits == 0
        # unless the user asks for it (podman's option): then 10.0.2.2 is the host's 127.0.0.1
        cp = user.isle("run", "--rm", "--network", "slirp4netns:allow_host_loopback=true",
                       "busybox", "sh", "-c", f"nc -w 3 10.0.2.2 {secret.port} </dev/null")
        assert cp.returncode == 0 and "HOST-LOOPBACK-SECRET" in cp.stdout, cp.stderr
        for bad in ("slirp4netns:allow_host_loopback=yes", "slirp4netns:mtu=1"):
            cp = user.isle("run", "--rm", "--network", bad, "busybox", "true")
            assert cp.returncode != 0 and "slirp4netns option" in cp.stderr, cp.stderr
        # user networks cannot be joined rootless here: refused at create, nothing recorded
        cp = user.isle("network", "create", "rn1")
        assert cp.returncode != 0 and "user networks need root" in cp.stderr, cp.stderr
        assert "rn1" not in user.isle("network", "ls").stdout
        # a published port on 127.0.0.1 reaches the container (slirp4netns's host socket)
        cp = user.isle("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox",
                       "sh", "-c", "echo rootless-web > /i && exec httpd -f -p 80 -h /")
        assert cp.returncode == 0, cp.stderr
        data = b""
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
                    c.sendall(b"GET /i HTTP/1.0\r\n\r\n")
                    while chunk := c.recv(4096):
                        data += chunk
                if data:
                    break
            except OSError:
                time.sleep(0.1)
        assert b"rootless-web" in data
        # exec'd processes share the network; slirp4netns is the user's, gone with the container
        cp = user.isle("exec", "web", "ip", "-o", "-4", "addr", "show", "tap0")
        assert cp.returncode == 0 and "10.0.2.100" in cp.stdout, cp.stderr
    finally:
        user.isle("rm", "-f", "web")
        secret.close()
    assert not [p for p in user.procs() if "slirp4netns" in p and "defunct" not in p]


# -- VM isolation ------------------------------------------------------------------------------
@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rootless_vm_runs_as_the_user_without_host_loopback(user):
    if not shutil.which("qemu-system-x86_64") or not os.path.exists(
            "/var/cache/isle/kernel/current/vmlinuz"):
        pytest.skip("needs QEMU and the guest kernel scripts/setup fetches")
    secret = _Secret()
    try:
        cp = user.isle("run", "--rm", "--isolation", "vm", "busybox", "sh", "-c",
                       f"echo hi; nc -w 2 10.0.2.2 {secret.port} </dev/null; true")
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.startswith("hi\n")
        # QEMU's user networking cannot keep 10.0.2.2 off the host's loopback: no network,
        # with a warning; asking for one, or for ports, is a clear error
        assert "no network" in cp.stderr and "SECRET" not in cp.stdout and secret.hits == 0
        for extra in (["--network", "slirp4netns"], ["-p", "127.0.0.1::80"]):
            cp = user.isle("run", "--rm", "--isolation", "vm", *extra, "busybox", "true")
            assert cp.returncode != 0 and "rootless VM" in cp.stderr, cp.stderr
        # a volume needs virtiofsd, which needs root here: a clear error, nothing left
        vol = user.home / "vol"
        vol.mkdir(exist_ok=True)
        os.chown(vol, user.uid, user.gid)
        cp = user.isle("run", "--rm", "--isolation", "vm", "--network", "none", "-v",
                       f"{vol}:/data:ro", "busybox", "true")
        assert cp.returncode != 0 and "without root" in cp.stderr, cp.stderr
        assert user.isle("ps", "-aq").stdout.split() == []
    finally:
        secret.close()


# -- build: tests/security/test_rootless_build.py ---------------------------------------------


# -- cgroups -----------------------------------------------------------------------------------
CG_PROBE = r"""
import json, sys
sys.path[:0] = [sys.argv[1]]
from isle.runtime import cgroup as c
from isle.errors import ConfigError, Unsupported
root, own = sys.argv[2], sys.argv[3]
out = {"base": c.delegated_base(root, own)}
m = c._rootless_manager(None, "abc", root, own)
out["path"] = m.path if m is not None else None
out["outside"] = []
base = own.split("::", 1)[1].strip().rsplit("/", 1)[0]
for bad in ("/system.slice/evil", base, base + "x/y", "system.slice:isle:abc"):
    try:
        c._rootless_manager(bad, "abc", root, own)
        out["outside"].append("accepted " + bad)
    except ConfigError as e:
        out["outside"].append(str(e))
if m is not None:
    m.create()
    out["made"] = m.dir
c._rootless_manager(None, "abc", root + "/nonexistent", own)   # not v2: no cgroup
try:
    c.resources_with_defaults({"memory": {"limit": 1 << 26}}, None)
    out["limits"] = "ignored silently"
except Unsupported as e:
    out["limits"] = str(e)
out["devices"] = c.resources_with_defaults({"devices": [{"allow": False, "access": "rwm"}]}, [])
print(json.dumps(out))
"""


@pytest.mark.timeout(60)
def test_rootless_cgroup_v2_delegation_only_below_what_is_ours(user):
    """cgroup v2 delegation (systemd's user@UID.service): containers go below the parent of the
    runtime's own cgroup when the user may write there; never outside it, never on v1 (here),
    and asked-for limits are refused when there is no cgroup. A fake cgroup2 tree as the user."""
    fake = user.home / "cg"
    svc = "/user.slice/user-1.slice/user@1.service"
    own = f"{svc}/app.slice/term.scope"
    (fake / own.lstrip("/")).mkdir(parents=True)
    (fake / "cgroup.controllers").write_text("cpu memory pids\n")
    for d in (fake / svc.lstrip("/"), fake / svc.lstrip("/") / "app.slice",
              fake / own.lstrip("/")):
        (d / "cgroup.procs").write_text("")
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(fake / svc.lstrip("/"))],
                   check=True)
    import json

    cp = user.run("/usr/bin/python3.11", "-S", "-c", CG_PROBE, str(REPO / "src"), str(fake),
                  f"0::{own}\n")
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["base"] == f"{svc}/app.slice"
    assert out["path"] == f"{svc}/app.slice/isle-abc"
    assert (fake / svc.lstrip("/") / "app.slice" / "isle-abc").is_dir()
    assert all("outside the cgroup delegated" in o for o in out["outside"]), \
        "\n".join(out["outside"])
    assert not (fake / "system.slice").exists()
    assert "cannot be enforced" in out["limits"] and "v1" in out["limits"]
    assert "devices" not in out["devices"]
    # a tree that is not the user's: no base at all
    subprocess.run(["chown", "-R", "0:0", str(fake / svc.lstrip("/"))], check=True)
    cp = user.run("/usr/bin/python3.11", "-S", "-c",
                  "import sys; sys.path[:0] = [sys.argv[1]]; from isle.runtime import cgroup as c;"
                  " print(c.delegated_base(sys.argv[2], sys.argv[3]))",
                  str(REPO / "src"), str(fake), f"0::{own}\n")
    assert cp.stdout.strip() == "None", cp.stderr


@pytest.mark.timeout(120)
def test_rootless_without_subid_ranges_is_a_clear_error(ruser):
    """A user with no /etc/subuid range: a clear error naming the file and the fix; nothing runs,
    nothing of the user's is left (and no other user's range is borrowed)."""
    name = "isq" + secrets.token_hex(3)
    saved = {f: _read(f) for f in ("/etc/subuid", "/etc/subgid")}
    subprocess.run(["useradd", "-d", str(ruser.base / name), "-m", "-s", "/bin/sh", "-K",
                    "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name], check=True,
                   capture_output=True)
    try:
        u = User(name, ruser.base)
        u.xdg_run = ruser.base / f"run-{name}"
        u.xdg_run.mkdir(mode=0o700)
        os.chown(u.xdg_run, u.uid, u.gid)
        u.data = u.home / "data"
        cp = u.isle("run", "--rm", "--network", "none", "busybox", "true")
        assert cp.returncode != 0
        assert "no /etc/subuid entry" in cp.stderr and "--add-subuids" in cp.stderr, cp.stderr
        assert u.isle("ps", "-aq").stdout.split() == []
        assert u.procs() == []
    finally:
        subprocess.run(["pkill", "-KILL", "-U", str(pwd.getpwnam(name).pw_uid)],
                       capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)
        for f, before in saved.items():
            _restore(f, before, name)
