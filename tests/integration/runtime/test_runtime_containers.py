"""isle-runtime on the real kernel: isolation, lifecycle, exec, pause, hooks, console, errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "isle-runtime")

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


def _own_cgroup_dirs(cid: str) -> list[str]:
    out = []
    for base in Path("/sys/fs/cgroup").iterdir():
        for root, dirs, _ in os.walk(base):
            if root.count("/") > 8:
                dirs[:] = []
            out += [os.path.join(root, d) for d in dirs if d == cid]
    return out


def test_run_isolates_pid_uts_root_caps_rlimits_and_returns_exit_code(rt, bundle):
    script = ("echo pid=$$; hostname; id -u; touch /x 2>/dev/null && echo rw || echo ro; "
              "wc -c </proc/cpuinfo; grep -E 'Cap(Eff|Bnd)' /proc/self/status; ulimit -n; "
              "ls /proc | grep -c '^[0-9]'; exit 7")

    def edit(c):
        c["hostname"] = "islebox"
        c["process"]["capabilities"]["bounding"].append("CAP_TEST")  # ignored, as runc does
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]
        c["linux"]["maskedPaths"].append("/proc/cpuinfo")

    cp = rt("run", "-b", str(bundle(["sh", "-c", script], edit)), "c1", check=False)
    assert cp.returncode == 7, cp.stderr
    lines = cp.stdout.split("\n")
    assert lines[0] == "pid=1"
    assert lines[1] == "islebox"
    assert lines[2] == "0"
    assert lines[3] == "ro"
    assert lines[4].strip() == "0"  # masked
    # default caps: AUDIT_WRITE(29) KILL(5) NET_BIND_SERVICE(10)
    assert lines[5].split()[1] == lines[6].split()[1] == "0000000020000420"
    assert lines[7] == "123"
    assert int(lines[8]) <= 3  # only this container's processes are visible
    assert not (rt.root / "c1").exists()  # run deletes afterwards
    assert "ignoring unknown or unavailable capabilities: CAP_TEST" in cp.stderr


def test_process_settings_devices_sysctl_and_preserved_fds(rt, bundle, tmp_path):
    script = ("id -u; id -G; umask; grep NoNewPrivs /proc/self/status | cut -f2; "
              "cat /proc/self/oom_score_adj; cat /proc/sys/net/ipv4/ip_forward; "
              "stat -c '%t:%T %a' /dev/fuse; readlink /dev/ptmx; echo via-fd3 >&3; exit 0")

    def edit(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7],
                                "umask": 0o27}
        c["process"]["oomScoreAdj"] = 500
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                  "fileMode": 0o640}]

    import subprocess

    side = tmp_path / "side"
    with open(side, "wb") as f:
        fd = f.fileno()
        cp = subprocess.run([RUNTIME, "--root", str(rt.root), "run", "--preserve-fds", "1", "-b",
                             str(bundle(["sh", "-c", script], edit)), "ps1"],
                            capture_output=True, text=True, timeout=30, pass_fds=(3,),
                            preexec_fn=lambda: os.dup2(fd, 3))
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.split("\n")
    assert out[0] == "1000"
    assert out[1].split() == ["1000", "5", "7"]
    assert out[2] == "0027"
    assert out[3] == "1"  # noNewPrivileges from runc's default spec
    assert out[4] == "500"
    assert out[5] == "1"
    assert out[6] == "a:e5 640"  # 10:229 in hex
    assert out[7] == "pts/ptmx"
    assert side.read_text() == "via-fd3\n"


def test_lifecycle_create_start_state_kill_delete(rt, bundle, tmp_path):
    b = bundle(["sleep", "60"])
    pidfile = tmp_path / "pid"
    rt("create", "--bundle", str(b), "--pid-file", str(pidfile), "c2")
    st = rt.state("c2")
    assert st["status"] == "created" and st["pid"] == int(pidfile.read_text())
    assert st["bundle"] == str(b) and st["id"] == "c2"
    assert _own_cgroup_dirs("c2"), "create made a cgroup"
    assert rt("start", "c2", check=False).returncode == 0
    assert rt.state("c2")["status"] == "running"
    assert rt("start", "c2", check=False).returncode == 1  # cannot start twice
    cp = rt("delete", "c2", check=False)
    assert cp.returncode == 1 and "not stopped" in cp.stderr
    assert [ln for ln in rt("list", "-q").stdout.split()] == ["c2"]
    listed = json.loads(rt("list", "--format", "json").stdout)
    assert listed[0]["status"] == "running"
    rt("kill", "c2", "KILL")  # pid 1 of a pid ns ignores TERM without a handler
    for _ in range(200):
        if rt.state("c2")["status"] == "stopped":
            break
        time.sleep(0.02)
    assert rt.state("c2")["status"] == "stopped"
    rt("delete", "c2")
    assert not (rt.root / "c2").exists()
    assert not _own_cgroup_dirs("c2")
    assert rt("state", "c2", check=False).returncode == 1


def test_delete_force_after_init_sigkilled_leaves_nothing(rt, bundle):
    rt("run", "-d", "-b", str(bundle(["sleep", "60"])), "c3")
    pid = rt.state("c3")["pid"]
    os.kill(pid, signal.SIGKILL)
    rt("delete", "--force", "c3")
    assert not (rt.root / "c3").exists() and not _own_cgroup_dirs("c3")
    assert rt("delete", "--force", "c3").returncode == 0  # idempotent like runc


def test_user_namespace_maps_root_to_unprivileged_host_uid(rt, bundle):
    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]

    b = bundle(["sh", "-c", "id -u; cat /proc/self/uid_map; sleep 30"], edit)
    rt("create", "-b", str(b), "u1", stdout=None)
    pid = rt.state("u1")["pid"]
    with open(f"/proc/{pid}/status") as f:
        uids = [ln for ln in f if ln.startswith("Uid:")][0].split()
    assert uids[1] == "200000"
    rt("start", "u1")
    cp = rt("exec", "u1", "sh", "-c", "id -u; cat /proc/self/uid_map; echo $$")
    uid, cid0, host0, size, xpid = cp.stdout.split()
    assert (uid, cid0, host0, size) == ("0", "0", "200000", "65536") and int(xpid) > 1
    rt("delete", "--force", "u1")


def test_pause_resume_exec_and_ps(rt, bundle):
    rt("run", "--detach", "-b", str(bundle(["sleep", "60"])), "p1")
    rt("pause", "p1")
    assert rt.state("p1")["status"] == "paused"
    assert rt("exec", "p1", "true", check=False).returncode == 1  # no exec while paused
    rt("resume", "p1")
    assert rt.state("p1")["status"] == "running"
    cp = rt("exec", "-e", "FOO=bar", "--cwd", "/tmp", "p1", "sh", "-c",
            "echo $FOO $(pwd) $$; exit 5", check=False)
    assert cp.returncode == 5
    foo, cwd, pid = cp.stdout.split()
    assert (foo, cwd) == ("bar", "/tmp") and int(pid) > 1
    pids = json.loads(rt("ps", "--format", "json", "p1").stdout)
    assert rt.state("p1")["pid"] in pids
    proc = {"args": ["sleep", "30"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 65534,
                                                                               "gid": 65534}}
    pf = rt.root.parent / "exec.json"
    pf.write_text(json.dumps(proc))
    pidf = rt.root.parent / "exec.pid"
    rt("exec", "--process", str(pf), "--detach", "--pid-file", str(pidf), "p1")
    xpid = int(pidf.read_text())
    with open(f"/proc/{xpid}/status") as f:
        assert [ln for ln in f if ln.startswith("Uid:")][0].split()[1] == "65534"
    assert len(json.loads(rt("ps", "--format", "json", "p1").stdout)) == 2
    rt("kill", "--all", "p1", "9")
    rt("delete", "--force", "p1")


def test_hooks_get_state_on_stdin(rt, bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()

    def hook(kind):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{kind}.json"]}

    def edit(c):
        c["hooks"] = {k: [hook(k)] for k in ("createRuntime", "createContainer", "poststart",
                                             "poststop")}
        c["annotations"] = {"org.test": "yes"}

    rt("run", "-b", str(bundle(["true"], edit)), "h1")
    states = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert set(states) == {"createRuntime", "createContainer", "poststart", "poststop"}
    assert states["createRuntime"]["id"] == "h1" and states["createRuntime"]["pid"] > 0
    assert states["createRuntime"]["status"] == "created"
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    assert states["poststart"]["annotations"] == {"org.test": "yes"}


def test_failing_create_hook_fails_create_and_leaves_nothing(rt, bundle):
    def edit(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}

    cp = rt("create", "-b", str(bundle(["true"], edit)), "h2", check=False)
    assert cp.returncode == 1 and "hooks.createRuntime[0]" in cp.stderr
    assert not (rt.root / "h2").exists() and not _own_cgroup_dirs("h2")


def test_console_socket_gets_a_working_pty(rt, bundle, tmp_path):
    sock_path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)

    def edit(c):
        c["process"]["terminal"] = True

    b = bundle(["sh", "-c", "tty; stty size; echo done"], edit)
    import subprocess

    p = subprocess.Popen([RUNTIME, "--root", str(rt.root), "create", "-b", str(b),
                          "--console-socket", sock_path, "t1"], stderr=subprocess.PIPE)
    conn, _ = srv.accept()
    _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    master = fds[0]
    assert p.wait(timeout=20) == 0, p.stderr.read()
    rt("start", "t1")
    data = b""
    deadline = time.monotonic() + 10
    while b"done" not in data and time.monotonic() < deadline:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        data += chunk
    os.close(master)
    conn.close()
    srv.close()
    p.stderr.close()
    text = data.decode()
    assert "/dev/pts/0" in text or "/dev/console" in text, text
    rt("delete", "--force", "t1")


@pytest.mark.parametrize("edit,field", [
    (lambda c: c["linux"]["namespaces"].append({"type": "foo"}), "linux.namespaces[5].type"),
    (lambda c: c["root"].update(path="/nonexistent/rootfs"), "root.path"),
    (lambda c: c["process"].update(args=[]), "process.args"),
    (lambda c: (c["linux"]["namespaces"].append({"type": "user"}),
                c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10},
                                               {"containerID": 5, "hostID": 3000, "size": 10}],
                                  gidMappings=[{"containerID": 0, "hostID": 0, "size": 1}])),
     "linux.uidMappings"),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "bind", "source": "/nope",
                                   "options": ["bind"]}), "mounts[7].source"),
    (lambda c: c["linux"].update(sysctl={"kernel.no_such_knob": "1"}), "linux.sysctl"),
    (lambda c: c["process"].update(args=["/no/such/binary"]), "process.args[0]"),
    (lambda c: c["linux"].update(resources={"cpu": {"cpus": "97-99"}}),
     "linux.resources.cpu.cpus"),  # the kernel refuses it, after the init was forked
])
def test_bad_input_is_one_clear_error_and_leaves_nothing(rt, bundle, edit, field):
    cp = rt("create", "-b", str(bundle(["true"], edit)), "bad", check=False)
    assert cp.returncode == 1
    assert field in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert not (rt.root / "bad").exists()
    assert not _own_cgroup_dirs("bad")


def test_malformed_json_and_json_log(rt, tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_text("{not json")
    log = tmp_path / "log.json"
    import subprocess

    cp = subprocess.run([RUNTIME, "--root", str(rt.root), "--log", str(log), "--log-format",
                         "json", "create", "--bundle", str(b), "m1"], capture_output=True,
                        text=True, timeout=10)
    assert cp.returncode == 1 and "malformed JSON" in cp.stderr
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "malformed JSON" in entry["msg"] and entry["time"]


def test_demo_builds_busybox_and_reports():
    import shutil
    import tempfile

    from isle.runtime.demo import run_demo

    cache = tempfile.mkdtemp(prefix="isle-rt-demo-")  # traversable by the mapped root
    os.chmod(cache, 0o755)
    lines: list[str] = []
    try:
        assert run_demo(cache=cache, echo=lines.append) == 42, lines
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    text = "\n".join(lines)
    assert "hostname inside : isle-demo" in text and "pid inside      : 1" in text
    assert "0 100000 65536" in text and "exit code       : 42" in text


@pytest.mark.netns
def test_joins_netns_by_path_and_time_namespace_offsets(rt, bundle):
    import subprocess
    import uuid

    ns = f"isle-rt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:

        def edit(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                        if n["type"] != "network"]
            c["linux"]["namespaces"] += [{"type": "network", "path": f"/run/netns/{ns}"},
                                         {"type": "time"}]
            c["linux"]["timeOffsets"] = {"boottime": {"secs": 10 * 86400, "nanosecs": 0}}

        cp = rt("run", "-b", str(bundle(["sh", "-c", "readlink /proc/self/ns/net; cut -d. -f1 "
                                          "/proc/uptime"], edit)), "n1")
        netns, uptime = cp.stdout.split()
        assert netns == f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"
        with open("/proc/uptime") as f:
            host_up = float(f.read().split()[0])
        assert int(uptime) >= 10 * 86400 + int(host_up) - 5
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_oom_kills_show_in_state_annotations(rt, bundle):
    def edit(c):
        c["linux"]["resources"] = {"memory": {"limit": 16 * 1024 * 1024}}

    b = bundle(["sh", "-c", 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); sleep 60'], edit)
    rt("run", "-d", "-b", str(b), "oom1")
    for _ in range(100):
        st = rt.state("oom1")
        if int(st.get("annotations", {}).get("org.isle.oom_kills", "0")) > 0:
            break
        time.sleep(0.05)
    assert int(st["annotations"]["org.isle.oom_kills"]) >= 1
    rt("delete", "--force", "oom1")


def test_delete_force_after_runtime_killed_mid_create(rt, bundle, tmp_path):
    import subprocess

    marker = tmp_path / "hook-started"

    def edit(c):  # the runtime waits in this hook: kill it there
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"touch {marker}; exec sleep 2"]}]}

    p = subprocess.Popen([RUNTIME, "--root", str(rt.root), "create", "-b",
                          str(bundle(["true"], edit)), "mid1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        if marker.exists():
            break
        time.sleep(0.01)
    assert marker.exists()
    st = json.loads((rt.root / "mid1" / "state.json").read_text())
    p.kill()
    p.wait()
    assert _own_cgroup_dirs("mid1")
    rt("delete", "--force", "mid1")
    assert not (rt.root / "mid1").exists() and not _own_cgroup_dirs("mid1")
    for _ in range(100):  # the init saw the runtime go and exited
        if not os.path.exists(f"/proc/{st['pid']}") or open(
                f"/proc/{st['pid']}/stat").read().split(") ")[1][0] == "Z":
            break
        time.sleep(0.02)
    else:
        raise AssertionError("container init outlived delete --force")
    time.sleep(2.1)  # let the orphaned hook (sleep 2) finish so nothing is left running


def test_session_keyring_per_container_unless_no_new_keyring(rt, bundle):
    b = bundle(["sleep", "30"])
    rt("create", "-b", str(b), "keyring-a")
    rt("create", "--no-new-keyring", "-b", str(b), "keyring-b")
    with open("/proc/keys") as f:
        keys = f.read()
    assert "keyring   keyring-a:" in keys and "keyring-b" not in keys
    rt("delete", "--force", "keyring-a")
    rt("delete", "--force", "keyring-b")


@pytest.mark.root
@pytest.mark.timeout(90)
def test_run_survives_a_signal_sent_while_the_container_is_being_made(rt, bundle) -> None:
    """A foreground `run` holds terminal signals until the init exists, then forwards them.

    Before the fix, a SIGINT landing between fork and the forwarding handlers killed the runtime
    itself (exit by signal), orphaning the container. Several delays cover the window.
    """
    import signal
    import time

    b = bundle(["sh", "-c", "trap 'exit 7' INT; sleep 1 & wait; exit 3"])
    for i, delay in enumerate((0.0, 0.002, 0.005, 0.01, 0.02)):
        p = subprocess.Popen([RUNTIME, "--root", str(rt.root), "run", "-b", str(b), f"sig{i}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (rt.root / f"sig{i}").exists() and time.monotonic() < deadline:
            time.sleep(0.0005)  # the state dir appears just before the init is forked
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        # the runtime exits with the container's code (7 if the trap ran, else 3: pid 1 ignores INT),
        # never with its own 130 or by the signal, and leaves no container behind
        assert p.returncode in (3, 7), (delay, p.returncode, err)
        assert not (rt.root / f"sig{i}").exists()


def test_kill_all_reaches_what_a_stopped_container_left_in_a_shared_pid_namespace(rt, bundle):
    """runc's `kill --all` signals the cgroup whatever the state: containerd's shim sends it once
    a pod container's init has exited, for the processes it left in the pod's pid namespace (there
    the init's death kills nothing; they go to the pod's pid 1)."""
    rt("run", "--detach", "-b", str(bundle(["sleep", "300"], name="pod")), "pod")
    pod_pid = rt.state("pod")["pid"]

    def join(c):
        for n in c["linux"]["namespaces"]:
            if n["type"] == "pid":
                n["path"] = f"/proc/{pod_pid}/ns/pid"

    rt("create", "-b", str(bundle(["sh", "-c", "sleep 301 & exit 0"], join, name="c")), "c")
    rt("start", "c")
    for _ in range(200):
        if rt.state("c")["status"] == "stopped":
            break
        time.sleep(0.02)
    assert rt.state("c")["status"] == "stopped"
    assert json.loads(rt("ps", "--format", "json", "c").stdout), "the sleep stays in its cgroup"
    assert rt("kill", "c", "9", check=False).returncode != 0  # the init alone: not running
    rt("kill", "--all", "c", "9")
    for _ in range(200):
        if not json.loads(rt("ps", "--format", "json", "c").stdout):
            break
        time.sleep(0.02)
    assert json.loads(rt("ps", "--format", "json", "c").stdout) == []
    rt("delete", "c")
    rt("delete", "--force", "pod")


def _ignoring_caller() -> None:
    """A caller like a shell's background job (INT and QUIT ignored), on top of the SIGPIPE and
    SIGXFSZ Python ignores (kept: restore_signals=False)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def test_the_container_process_starts_with_no_ignored_signal(rt, bundle):
    """An ignored disposition survives execve: the container's process and an exec'd one start
    with every signal at its default action whatever the caller ignored, as with runc."""
    b = bundle(["sleep", "30"])
    out = subprocess.run([RUNTIME, "--root", str(rt.root), "run", "-b",
                          str(bundle(["grep", "SigIgn", "/proc/self/status"], name="b1")), "sig1"],
                         capture_output=True, text=True, timeout=30, preexec_fn=_ignoring_caller,
                         restore_signals=False)
    assert out.stdout.split() == ["SigIgn:", "0000000000000000"], out.stderr
    rt("run", "-d", "-b", str(b), "sig2", preexec_fn=_ignoring_caller, restore_signals=False,
       stdin=subprocess.DEVNULL)
    ex = subprocess.run([RUNTIME, "--root", str(rt.root), "exec", "sig2", "grep", "SigIgn",
                         "/proc/self/status"], capture_output=True, text=True, timeout=30,
                        preexec_fn=_ignoring_caller, restore_signals=False)
    assert ex.stdout.split() == ["SigIgn:", "0000000000000000"], ex.stderr
    init = rt("exec", "sig2", "grep", "SigIgn", "/proc/1/status").stdout
    assert init.split() == ["SigIgn:", "0000000000000000"]
    rt("delete", "--force", "sig2")
