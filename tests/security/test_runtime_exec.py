"""Runtime process hardening: what a container can see of the isle processes that enter it,
and what they leave behind in it.

- CVE-2019-5736 class: an `exec` helper (or an init joining an existing pid namespace) seen from
  inside must not expose a writable host executable through /proc/PID/exe, nor the caller's
  environment through /proc/PID/environ — with Docker's default capabilities and with
  CAP_SYS_PTRACE. The runtime under attack runs on a COPY of its interpreter under tmp_path, so a
  regression overwrites the copy, never the host's.
- CVE-2024-21626 class: a process.cwd through an fd inherited by the runtime
  (/proc/self/fd/N) must not put the container's process in a host directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
HERE = Path(__file__).resolve().parent
MARKER_VAR = "H1_SECRET_CANARY"

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
               "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
               "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static attacker binary (exe_attack.c), in a directory bind-mounted at /x."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the attacker")
    d = tmp_path_factory.mktemp("attacker")
    os.chmod(d, 0o755)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(d / "exe_attack"),
                    str(HERE / "exe_attack.c")], check=True, capture_output=True, timeout=120)
    return d / "exe_attack"


@pytest.fixture
def runtime_copy(tmp_path: Path) -> tuple[Path, Path]:
    """(launcher, interpreter): isle-runtime started on a private copy of its interpreter."""
    bin_ = REPO / ".venv" / "bin"
    script = bin_ / ".isle-runtime.py"  # the native front hands every verb but start to it
    script = script if script.exists() else bin_ / "isle-runtime"
    real = Path(script.read_text().split("\n", 1)[0][2:].split()[0]).resolve()
    d = tmp_path / "interp"
    d.mkdir()
    py = d / real.name
    shutil.copy2(real, py)
    launcher = d / "isle-runtime"
    launcher.write_text(f"#!{py} -SE\nimport sys\nsys.path[0] = {str(SRC)!r}\n"
                        "from isle.runtime.cli import exit_fast, main\nexit_fast(main())\n")
    launcher.chmod(0o755)
    return launcher, py


class CopyRuntime:
    def __init__(self, launcher: Path, root: Path) -> None:
        self.launcher, self.root = launcher, root

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 30, **kw) -> subprocess.CompletedProcess[str]:
        import tempfile

        # files, not pipes: a created init keeps the runtime's stdio open
        with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
            p = subprocess.run([str(self.launcher), "--root", str(self.root), *args],
                               stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=timeout,
                               env=env, **kw)
            o.seek(0)
            e.seek(0)
            cp = subprocess.CompletedProcess(p.args, p.returncode, o.read().decode(),
                                             e.read().decode())
        if check and cp.returncode != 0:
            raise AssertionError(f"isle-runtime {' '.join(args)} -> {cp.returncode}: {cp.stderr}")
        return cp

    def cleanup(self) -> None:
        if self.root.exists():
            for cid in os.listdir(self.root):
                if not cid.startswith("."):
                    self("delete", "--force", cid, check=False)


@pytest.fixture
def crt(runtime_copy: tuple[Path, Path], tmp_path: Path):
    r = CopyRuntime(runtime_copy[0], tmp_path / "crt-root")
    yield r
    r.cleanup()


def _verdict(out: Path, py: Path, before: str) -> str:
    log = out.read_text() if out.exists() else ""
    assert log.startswith("READY"), f"the attacker did not run: {log[:200]!r}"
    bad = [ln for ln in log.splitlines() if ln.startswith(("WROTE", "LEAK"))]
    assert not bad, f"escape: {bad}\n{log[-3000:]}"
    assert _sha(py) == before, "the runtime's interpreter copy was modified"
    return log


def _caps(extra: list[str]) -> dict:
    caps = DOCKER_CAPS + extra
    return {k: list(caps) for k in ("bounding", "effective", "permitted")}


def _attack_bundle(bundle, attacker: Path, outdir: Path, secs: int, extra_caps: list[str],
                   marker: str, name: str = "bundle", pidns: str | None = None):
    def edit(cfg: dict) -> None:
        cfg["process"]["capabilities"] = _caps(extra_caps)
        cfg["mounts"].append({"destination": "/x", "type": "bind", "source": str(attacker.parent),
                              "options": ["rbind", "ro"]})
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(outdir),
                              "options": ["rbind", "rw"]})
        if pidns:
            for n in cfg["linux"]["namespaces"]:
                if n["type"] == "pid":
                    n["path"] = pidns
    return bundle(["/x/exe_attack", str(secs), marker, "/out/log"], edit, name=name)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("extra_caps", [[], ["CAP_SYS_PTRACE"]], ids=["default", "ptrace"])
def test_runtime_exec_helper_hides_exe_and_env(crt, runtime_copy, bundle, attacker, tmp_path,
                                               extra_caps):
    """`isle-runtime exec` repeatedly while the container watches for the helper."""
    py = runtime_copy[1]
    before = _sha(py)
    marker = os.urandom(8).hex()
    outdir = tmp_path / "out"
    outdir.mkdir()
    b = _attack_bundle(bundle, attacker, outdir, 8, extra_caps, marker)
    crt("run", "-d", "--bundle", str(b), "victim")
    deadline = time.monotonic() + 5
    while not (outdir / "log").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    env = dict(os.environ, **{MARKER_VAR: marker})
    for _ in range(12):
        cp = crt("exec", "victim", "/bin/true", env=env, check=False)
        assert cp.returncode == 0, cp.stderr
    proc_json = tmp_path / "p.json"
    proc_json.write_text(json.dumps({"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"],
                                     "user": {"uid": 0, "gid": 0},
                                     "capabilities": _caps(extra_caps)}))
    for _ in range(6):
        crt("exec", "--process", str(proc_json), "victim", env=env)
    time.sleep(0.3)
    crt("delete", "--force", "victim")
    log = _verdict(outdir / "log", py, before)
    assert "SEEN" in log, "the attacker never saw a runtime process: the test proves nothing"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("extra_caps", [[], ["CAP_SYS_PTRACE"]], ids=["default", "ptrace"])
def test_runtime_init_joining_pidns_hides_exe_and_env(crt, runtime_copy, bundle, attacker,
                                                      tmp_path, extra_caps):
    """A container created into another's pid namespace: its init (before it execs the user's
    program) and its runtime are seen by the first container."""
    py = runtime_copy[1]
    before = _sha(py)
    marker = os.urandom(8).hex()
    outdir = tmp_path / "out"
    outdir.mkdir()
    b = _attack_bundle(bundle, attacker, outdir, 6, extra_caps, marker)
    crt("run", "-d", "--bundle", str(b), "victim")
    deadline = time.monotonic() + 5
    while not (outdir / "log").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = json.loads(crt("state", "victim").stdout)["pid"]
    env = dict(os.environ, **{MARKER_VAR: marker})
    for i in range(5):
        b2 = bundle(["/bin/true"], lambda cfg: [n.update(path=f"/proc/{pid}/ns/pid") for n in
                                                cfg["linux"]["namespaces"] if n["type"] == "pid"],
                    name=f"side{i}")
        crt("run", "--bundle", str(b2), f"side{i}", env=env)
    for i in range(3):  # create + start: the init waits on exec.fifo, seen by the victim
        b2 = bundle(["/bin/true"], lambda cfg: [n.update(path=f"/proc/{pid}/ns/pid") for n in
                                                cfg["linux"]["namespaces"] if n["type"] == "pid"],
                    name=f"cs{i}")
        crt("create", "--bundle", str(b2), f"cs{i}", env=env)
        time.sleep(0.2)
        crt("start", f"cs{i}", env=env)
        time.sleep(0.1)
        crt("delete", "--force", f"cs{i}")
    time.sleep(0.3)
    crt("delete", "--force", "victim")
    log = _verdict(outdir / "log", py, before)
    assert "SEEN" in log, "the attacker never saw a runtime process: the test proves nothing"


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("cap_add", [[], ["--cap-add", "SYS_PTRACE"]], ids=["default", "ptrace"])
def test_engine_exec_and_healthcheck_hide_exe_and_env(isle, runtime_copy, attacker, tmp_path,
                                                      cap_add):
    """`isle exec` repeatedly, and a health check every 0.2 s, while the container watches."""
    launcher, py = runtime_copy
    before = _sha(py)
    marker = os.urandom(8).hex()
    isle.env[MARKER_VAR] = marker
    outdir = tmp_path / "out"
    outdir.mkdir()
    cid = isle("run", "-d", "--runtime", str(launcher), *cap_add,
               "--health-cmd", "true", "--health-interval", "0.2s",
               "-v", f"{attacker.parent}:/x:ro", "-v", f"{outdir}:/out", "busybox",
               "sh", "-c", f"/x/exe_attack 8 {marker} /out/log").stdout.strip()
    deadline = time.monotonic() + 5
    while not (outdir / "log").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    for _ in range(10):
        isle("exec", cid, "true")
    isle("exec", "-u", "1000", "-w", "/tmp", cid, "true")
    time.sleep(1)
    isle("rm", "-f", cid)
    time.sleep(0.5)  # the health loop notices and exits (the leak check counts our children)
    log = _verdict(outdir / "log", py, before)
    assert "SEEN" in log, "the attacker never saw a runtime process: the test proves nothing"


@pytest.mark.parametrize("extra_caps", [[], ["CAP_SYS_PTRACE"]], ids=["default", "ptrace"])
def test_created_init_hidden_from_exec(crt, runtime_copy, bundle, tmp_path, extra_caps):
    """`create` (no start): the init is isle's Python until `start`; a process exec'd into the
    created container neither reads its environ/exe nor (with CAP_SYS_PTRACE) gets in at all."""
    py = runtime_copy[1]
    before = _sha(py)
    marker = os.urandom(8).hex()
    env = dict(os.environ, **{MARKER_VAR: marker})
    b = bundle(["/bin/true"], lambda cfg: cfg["process"].update(capabilities=_caps(extra_caps)))
    crt("create", "--bundle", str(b), "made", env=env)
    cp = crt("exec", "made", "/bin/sh", "-c", "cat /proc/1/environ /proc/1/cmdline; echo; "
             "readlink /proc/1/exe; echo PWNED >> /proc/1/exe", env=env, check=False)
    crt("delete", "--force", "made")
    assert marker not in cp.stdout, "the created init's caller environment leaked"
    assert _sha(py) == before
    if extra_caps:
        assert cp.returncode != 0 and "CAP_SYS_PTRACE" in cp.stderr, cp.stderr
    else:
        assert str(py) not in cp.stdout, cp.stdout


@pytest.mark.parametrize("extra_caps", [[], ["CAP_SYS_PTRACE"]], ids=["default", "ptrace"])
def test_unstarted_init_hidden_from_joining_container(crt, runtime_copy, bundle, tmp_path,
                                                      extra_caps):
    """A created (not started) container's init, still isle's, seen by a second container that
    joins its pid namespace: no caller environment, no host executable; with CAP_SYS_PTRACE
    the second container is refused."""
    py = runtime_copy[1]
    before = _sha(py)
    marker = os.urandom(8).hex()
    env = dict(os.environ, **{MARKER_VAR: marker})
    a = bundle(["/bin/true"], name="a")
    crt("create", "--bundle", str(a), "a", env=env)
    pid = json.loads(crt("state", "a").stdout)["pid"]

    def edit(cfg: dict) -> None:
        cfg["process"]["capabilities"] = _caps(extra_caps)
        for n in cfg["linux"]["namespaces"]:
            if n["type"] == "pid":
                n["path"] = f"/proc/{pid}/ns/pid"
    b = bundle(["/bin/sh", "-c", "cat /proc/1/environ /proc/1/cmdline; echo; readlink "
                "/proc/1/exe; echo PWNED >> /proc/1/exe"], edit, name="b")
    cp = crt("run", "--bundle", str(b), "b", env=env, check=False)
    crt("delete", "--force", "a")
    assert marker not in cp.stdout, "the created init's caller environment leaked"
    assert str(py) not in cp.stdout and str(tmp_path) not in cp.stdout, cp.stdout
    assert _sha(py) == before
    if extra_caps:
        assert cp.returncode != 0 and "has not started" in cp.stderr, cp.stderr


@pytest.mark.parametrize("how", ["_ro_clone", "_sealed_copy"])
def test_sealed_exe_cannot_be_written(tmp_path, how):
    """Both ways sys.libc.sealed_exe makes the interpreter a container may see: writable by
    nobody through the fd (or a reopen of it), and still executable."""
    from isle.sys import libc as L

    src = tmp_path / "py"
    shutil.copy2(Path(os.readlink("/proc/self/exe")), src)
    before = _sha(src)
    fd = getattr(L, how)(str(src))
    try:
        for flags in (os.O_WRONLY | os.O_APPEND, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
            try:
                w = os.open(f"/proc/self/fd/{fd}", flags)
            except OSError:
                continue
            try:
                with pytest.raises(OSError):
                    os.write(w, b"PWNED")
            finally:
                os.close(w)
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(fd, ["py", "-SE", "-c", "pass"], {})
            finally:
                os._exit(127)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        os.close(fd)
    assert _sha(src) == before


# -- finding 11: Docker's current default seccomp profile (io_uring denied) ------------------------
IO_URING_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    char params[120];
    memset(params, 0, sizeof params);
    long r = syscall(425 /* io_uring_setup */, 4, params);
    printf("setup=%ld errno=%d\n", r, r < 0 ? errno : 0);
    r = syscall(426 /* io_uring_enter */, -1, 0, 0, 0, 0, 0);
    printf("enter=%ld errno=%d\n", r, r < 0 ? errno : 0);
    r = syscall(427 /* io_uring_register */, -1, 0, 0, 0);
    printf("register=%ld errno=%d\n", r, r < 0 ? errno : 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def io_uring_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the probe")
    d = tmp_path_factory.mktemp("iouring")
    os.chmod(d, 0o755)
    (d / "p.c").write_text(IO_URING_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(d / "probe"), str(d / "p.c")], check=True,
                   capture_output=True, timeout=120)
    return d / "probe"


def _io_uring_result(out: str) -> dict[str, tuple[int, int]]:
    got = {}
    for line in out.splitlines():
        k, rest = line.split("=", 1)
        r, e = rest.split(" errno=")
        got[k] = (int(r), int(e))
    return got


def test_default_profile_denies_io_uring_runtime(rt, bundle, io_uring_probe):
    """The runtime with the shipped profile: io_uring_setup/enter/register fail with EPERM."""
    from isle.runtime.seccomp import DEFAULT_PROFILE_PATH

    profile = json.loads(Path(DEFAULT_PROFILE_PATH).read_text())

    def edit(cfg: dict) -> None:
        cfg["linux"]["seccomp"] = profile
        cfg["mounts"].append({"destination": "/x", "type": "bind",
                              "source": str(io_uring_probe.parent), "options": ["rbind", "ro"]})
    b = bundle(["/x/probe"], edit)
    cp = rt("run", "--bundle", str(b), "iou")
    got = _io_uring_result(cp.stdout)
    assert got == {k: (-1, 1) for k in ("setup", "enter", "register")}, cp.stdout


def test_default_profile_denies_io_uring_engine(isle, io_uring_probe):
    """`isle run` with Docker's default seccomp profile: the same EPERM."""
    cp = isle("run", "--rm", "-v", f"{io_uring_probe.parent}:/x:ro", "busybox", "sh", "-c", "/x/probe")
    got = _io_uring_result(cp.stdout)
    assert got == {k: (-1, 1) for k in ("setup", "enter", "register")}, cp.stdout


def test_default_profile_follows_docker_25(tmp_path):
    """The shipped profile is Docker 25+'s rendering: no io_uring, AF_VSOCK sockets refused,
    clone3 ENOSYS for the default capabilities."""
    from isle.runtime.seccomp import DEFAULT_PROFILE_PATH

    profile = json.loads(Path(DEFAULT_PROFILE_PATH).read_text())
    names = {n for s in profile["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" and not s.get("args")
             for n in s["names"]}
    assert not {"io_uring_setup", "io_uring_enter", "io_uring_register"} & names
    assert "socket" not in names
    assert {"fchmodat2", "cachestat", "pkey_alloc"} <= names
    assert profile.get("defaultErrnoRet") == 1
    clone3 = [s for s in profile["syscalls"] if "clone3" in s["names"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]


# -- finding 7 (CVE-2024-21626 class): a cwd through an fd the runtime inherited -------------------
def _host_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hostdir"
    d.mkdir()
    (d / "secret").write_text("HOST-SECRET-7\n")
    return d


ESCAPE = "cat secret 2>/dev/null; echo pwned > escaped; pwd; ls /proc/self/fd"


def _assert_not_escaped(cp: subprocess.CompletedProcess[str], d: Path) -> None:
    assert "HOST-SECRET-7" not in cp.stdout, cp.stdout
    assert not (d / "escaped").exists(), "the container wrote into a host directory"
    assert sorted(os.listdir(d)) == ["secret"]
    if cp.returncode != 0:
        assert "process.cwd" in cp.stderr, cp.stderr


@pytest.mark.parametrize("preserve", [False, True], ids=["inherited", "preserved"])
def test_cwd_through_inherited_fd_run(rt, bundle, tmp_path, preserve):
    d = _host_dir(tmp_path)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        n = 3 if preserve else fd
        b = bundle(["/bin/sh", "-c", ESCAPE], lambda cfg: cfg["process"].update(
            cwd=f"/proc/self/fd/{n}"))
        args = ["run", "--bundle", str(b)] + (["--preserve-fds", "1"] if preserve else []) + ["c7"]
        if preserve:  # the caller hands the dir over as fd 3, on purpose
            cp = rt(*args, check=False, pass_fds=(fd, 3) if fd != 3 else (3,),
                    preexec_fn=(lambda: os.dup2(fd, 3)) if fd != 3 else None)
        else:
            cp = rt(*args, check=False, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert cp.returncode != 0, f"started with a cwd outside the root:\n{cp.stdout}"
    _assert_not_escaped(cp, d)
    assert rt("list", "-q").stdout.split() == [], "a failed run left a container behind"


@pytest.mark.parametrize("how", ["cwd-flag", "process-json"])
def test_cwd_through_inherited_fd_exec(rt, bundle, tmp_path, how):
    d = _host_dir(tmp_path)
    b = bundle(["/bin/sleep", "30"])
    rt("run", "-d", "--bundle", str(b), "c7x")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        cwd = f"/proc/self/fd/{fd}"
        if how == "cwd-flag":
            cp = rt("exec", "--cwd", cwd, "c7x", "/bin/sh", "-c", ESCAPE, check=False,
                    pass_fds=(fd,))
        else:
            pj = tmp_path / "p.json"
            pj.write_text(json.dumps({"args": ["/bin/sh", "-c", ESCAPE], "cwd": cwd,
                                      "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}))
            cp = rt("exec", "--process", str(pj), "c7x", check=False, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert cp.returncode != 0, f"exec'd with a cwd outside the root:\n{cp.stdout}"
    _assert_not_escaped(cp, d)
    rt("delete", "--force", "c7x")
