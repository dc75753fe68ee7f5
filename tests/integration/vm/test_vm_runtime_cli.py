"""isle-vm-runtime end to end under TCG: stdio, exit codes, process settings, lifecycle, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


RUNTIME = str(
    __import__("pathlib").Path(__file__).resolve().parents[3] / ".venv/bin/isle-vm-runtime"
)


def rt(
    root: Path, *args: str, env: dict[str, str], **kw: object
) -> subprocess.CompletedProcess[bytes]:
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run([RUNTIME, "--root", str(root), *args], env=env, timeout=150, **kw)  # type: ignore[call-overload]


@pytest.mark.timeout(180)
def test_run_keeps_stdout_stderr_apart_and_exit_code_exact(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(
        tmp_path / "b", busybox_rootfs, ["sh", "-c", "echo out; echo err >&2; echo out2; exit 42"]
    )
    r = rt(tmp_path / "root", "run", "-b", b, "c1", env=vm_env)
    assert r.returncode == 42, r.stderr
    assert r.stdout == b"out\nout2\n"  # no kernel console line may leak in
    assert r.stderr == b"err\n"
    assert not (tmp_path / "root" / "c1").exists()


@pytest.mark.timeout(180)
def test_run_applies_user_cwd_env_hostname_rlimits_and_a_writable_root(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    script = (
        'echo "$(id -u):$(id -g) $(pwd) $FOO $(hostname) $(ulimit -n)"; '
        "echo data > /tmp/f && cat /tmp/f; touch /etc/x 2>/dev/null || echo ro-etc-ok"
    )
    b = vmh.make_bundle(
        tmp_path / "b",
        busybox_rootfs,
        ["sh", "-c", script],
        user={"uid": 65534, "gid": 65534},
        cwd="/tmp",
        env=["PATH=/bin", "FOO=bar baz"],
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 256}],
    )
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["hostname"] = "vmbox"
    Path(b, "config.json").write_text(json.dumps(cfg))
    r = rt(tmp_path / "root", "run", "-b", b, "c2", env=vm_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "65534:65534 /tmp bar baz vmbox 256",
        "data",
        "ro-etc-ok",
    ]


@pytest.mark.timeout(240)
def test_create_start_kill_delete(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(
        tmp_path / "b",
        busybox_rootfs,
        ["sh", "-c", 'trap "echo got-term; exit 5" TERM; echo up; while :; do sleep 0.1; done'],
    )
    root = tmp_path / "root"
    out = open(tmp_path / "out", "wb")
    r = rt(
        root,
        "create",
        "-b",
        b,
        "--pid-file",
        str(tmp_path / "pid"),
        "c3",
        env=vm_env,
        stdout=out,
        stderr=out,
    )
    assert r.returncode == 0
    state = json.loads(rt(root, "state", "c3", env=vm_env).stdout)
    assert state["status"] == "created" and state["pid"] == int((tmp_path / "pid").read_text())
    assert rt(root, "start", "c3", env=vm_env).returncode == 0
    assert json.loads(rt(root, "state", "c3", env=vm_env).stdout)["status"] == "running"
    assert rt(root, "start", "c3", env=vm_env).returncode == 1  # already running
    assert b"c3" in rt(root, "list", env=vm_env).stdout
    deadline = time.monotonic() + 60
    while b"up" not in (tmp_path / "out").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rt(root, "pause", "c3", env=vm_env).returncode == 0
    assert json.loads(rt(root, "state", "c3", env=vm_env).stdout)["status"] == "paused"
    assert rt(root, "delete", "c3", env=vm_env).returncode == 1  # paused is not stopped
    assert rt(root, "resume", "c3", env=vm_env).returncode == 0
    assert json.loads(rt(root, "state", "c3", env=vm_env).stdout)["status"] == "running"
    assert rt(root, "kill", "c3", "TERM", env=vm_env).returncode == 0
    deadline = time.monotonic() + 60
    while json.loads(rt(root, "state", "c3", env=vm_env).stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert (root / "c3" / "exit").read_text() == "5"
    assert rt(root, "delete", "c3", env=vm_env).returncode == 0
    assert rt(root, "state", "c3", env=vm_env).returncode == 1
    out.close()
    assert (tmp_path / "out").read_bytes() == b"up\ngot-term\n"


@pytest.mark.timeout(180)
def test_delete_force_of_a_created_vm(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["true"])
    root = tmp_path / "root"
    with open(os.devnull, "wb") as dn:
        assert rt(root, "create", "-b", b, "c4", env=vm_env, stdout=dn, stderr=dn).returncode == 0
    assert rt(root, "delete", "--force", "c4", env=vm_env).returncode == 0
    assert not (root / "c4").exists()


@pytest.mark.timeout(180)
def test_qemu_sigkilled_mid_run_is_a_clear_error(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", "echo up; sleep 100"])
    root = tmp_path / "root"
    p = subprocess.Popen(
        [RUNTIME, "--root", str(root), "run", "-b", b, "c5"],
        env=vm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None
    assert p.stdout.readline() == b"up\n"
    qpid = json.loads((root / "c5" / "state.json").read_text())["qemu_pid"]
    os.kill(qpid, signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert b"QEMU killed by signal 9" in err
    assert not (root / "c5").exists()


def test_no_kernel_cached_is_a_clear_error(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["true"])
    env = dict(vm_env, ISLE_CACHE=str(tmp_path / "empty-cache"))
    r = rt(tmp_path / "root", "run", "-b", b, "c6", env=env)
    assert r.returncode == 1 and b"fetch-guest-kernel" in r.stderr
    assert not (tmp_path / "root" / "c6").exists()


@pytest.mark.timeout(240)
def test_template_clones_answer_fast_and_keep_writes_private(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(
        tmp_path / "b",
        busybox_rootfs,
        ["sh", "-c", "cat /seen 2>/dev/null || echo fresh; echo x > /seen; exit 3"],
    )
    # a cache of its own: with clones the default, the session's cache may hold this boot's
    # template already, and then no run of this test would be the cold one
    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(os.path.realpath(os.path.join(vm_env["ISLE_CACHE"], "kernel")), cache / "kernel")
    env = dict(vm_env, ISLE_VM_TEMPLATE="1", ISLE_CACHE=str(cache))
    times = []
    try:
        for i in range(3):
            t0 = time.monotonic()
            r = rt(tmp_path / "root", "run", "-b", b, f"t{i}", env=env)
            times.append(time.monotonic() - t0)
            assert (r.returncode, r.stdout) == (3, b"fresh\n"), r.stderr
        # the first run made the template (a cold boot); clones skip the boot
        assert min(times[1:]) < times[0]
        assert vmh.qemus(str(cache)) == []
    finally:
        from isle.vm import snapshot

        snapshot.remove(str(cache))


@pytest.mark.timeout(180)
def test_stdin_is_forwarded_and_shared_output_file_keeps_one_offset(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(tmp_path / "b", busybox_rootfs, ["sh", "-c", "wc -l; echo done >&2"])
    log = tmp_path / "log"
    with open(log, "wb") as f:  # one file description for us, stdout and stderr (like `>log 2>&1`)
        f.write(b"before\n")
        f.flush()
        r = subprocess.run(
            [RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "c8"],
            env=vm_env,
            input=b"x\n" * 1000,
            stdout=f,
            stderr=f,
            timeout=150,
        )
        f.write(b"after\n")
    assert r.returncode == 0
    assert log.read_bytes() == b"before\n1000\ndone\nafter\n"


@pytest.mark.timeout(200)
def test_exec_beside_a_foreground_run(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    b = vmh.make_bundle(
        tmp_path / "b",
        busybox_rootfs,
        ["sh", "-c", "echo up; while [ ! -e /tmp/stop ]; do sleep 0.1; done; echo bye"],
    )
    root = tmp_path / "root"
    p = subprocess.Popen(
        [RUNTIME, "--root", str(root), "run", "-b", b, "c9"],
        env=vm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        r = rt(
            root,
            "exec",
            "-u",
            "65534:65534",
            "--cwd",
            "/tmp",
            "c9",
            "sh",
            "-c",
            "echo $(id -u) $(pwd); echo e >&2; exit 7",
            env=vm_env,
        )
        assert (r.returncode, r.stdout, r.stderr) == (7, b"65534 /tmp\n", b"e\n")
        r = rt(root, "exec", "c9", "sh", "-c", "wc -c", env=vm_env, input=b"12345")
        assert (r.returncode, r.stdout) == (0, b"5\n")
        r = rt(root, "exec", "c9", "/nonexistent", env=vm_env)
        assert r.returncode == 127 and b"nonexistent" in r.stderr
        # an exec still running when the container's process ends dies with it (137, as with a
        # pid namespace); the exec that ended it reports its own code, not a lost connection
        sleeper = subprocess.Popen(
            [RUNTIME, "--root", str(root), "exec", "c9", "sh", "-c", "echo s; exec sleep 100"],
            env=vm_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert sleeper.stdout is not None and sleeper.stdout.readline() == b"s\n"
        r = rt(root, "exec", "c9", "sh", "-c", "touch /tmp/stop; exit 5", env=vm_env)
        assert (r.returncode, r.stderr) == (5, b"")
        sleeper.communicate(timeout=60)
        assert sleeper.returncode == 137
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0 and out == b"bye\n"
        # kill --all reaches every process in the guest
        p = subprocess.Popen(
            [RUNTIME, "--root", str(root), "run", "-b", b, "c10"],
            env=vm_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        assert rt(root, "kill", "--all", "c10", "KILL", env=vm_env).returncode == 0
        p.communicate(timeout=60)
        assert p.returncode == 137
    finally:
        if p.poll() is None:  # a failed assertion above: let the runtime clean up after itself
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for c in ("c9", "c10"):
            rt(root, "delete", "--force", c, env=vm_env)


@pytest.mark.timeout(180)
def test_stdout_and_stderr_may_be_sockets(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    import socket

    b = vmh.make_bundle(
        tmp_path / "b", busybox_rootfs, ["sh", "-c", "seq 1 20000; echo err >&2; exit 2"]
    )
    out_r, out_w = socket.socketpair()
    err_r, err_w = socket.socketpair()
    with out_r, err_r:
        with out_w, err_w:
            r = subprocess.run(
                [RUNTIME, "--root", str(tmp_path / "root"), "run", "-b", b, "c11"],
                env=vm_env,
                stdout=out_w,
                stderr=err_w,
                timeout=150,
            )
        out = b"".join(iter(lambda: out_r.recv(65536), b""))
        err = b"".join(iter(lambda: err_r.recv(65536), b""))
    assert r.returncode == 2
    assert out == "".join(f"{i}\n" for i in range(1, 20001)).encode()  # nothing lost at exit
    assert err == b"err\n"


def _virtiofsds() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and open(f"/proc/{d}/comm").read().strip() == "virtiofsd":
                out.append(int(d))
        except OSError:
            pass
    return out


@pytest.mark.timeout(180)
def test_bind_mounted_directories_are_shared_over_virtiofs(
    tmp_path: Path, busybox_rootfs: str, vm_env: dict[str, str], vmh
) -> None:
    """A bind-mounted host directory is the same directory in the guest (writes land on the
    host); a read-only one stays read-only on the host's side even if the guest remounts it rw;
    no virtiofsd outlives the VM."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "f").write_text("from-host\n")
    before = set(_virtiofsds())
    b = vmh.make_bundle(
        tmp_path / "b", busybox_rootfs,
        ["sh", "-c", "cat /ro/f; echo from-guest > /rw/out; mount -o remount,rw /ro; "
                     "echo x > /ro/g 2>/dev/null && echo ro-broken || echo ro-kept"],
    )
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    cfg["mounts"] += [
        {"destination": "/rw", "type": "bind", "source": str(rw), "options": ["rbind", "rw"]},
        {"destination": "/ro", "type": "bind", "source": str(ro), "options": ["rbind", "ro"]},
    ]
    (tmp_path / "b" / "config.json").write_text(json.dumps(cfg))
    r = rt(tmp_path / "root", "run", "-b", b, "fs1", env=vm_env)
    assert (r.returncode, r.stdout) == (0, b"from-host\nro-kept\n"), r.stderr
    assert (rw / "out").read_text() == "from-guest\n"
    assert sorted(os.listdir(ro)) == ["f"]
    assert set(_virtiofsds()) <= before
