"""Crash safety: SIGKILL of the CLI (and its process group) at swept delays, then the records,
the host's resources and the next command must be right. ISLE_CRASH_SWEEP=1 sweeps more delays.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root]

SWEEP = bool(os.environ.get("ISLE_CRASH_SWEEP"))


def _mounts_under(path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(path))]


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _events(isle, action: str) -> list[dict]:
    c = sqlite3.connect(isle.root / "isle.db")
    try:
        rows = c.execute("SELECT actor, attrs FROM events WHERE action = ?", (action,)).fetchall()
    finally:
        c.close()
    return [{"actor": a, **json.loads(x)} for a, x in rows]


def _start_group(isle, *args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """The CLI as its own process group (as a shell job is): killpg reaches it and its helpers."""
    return subprocess.Popen(isle.argv(*args), stdin=stdin, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=isle.env, start_new_session=True)


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def _wait_running(isle, name: str, timeout: float = 30) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cp = isle("inspect", name, check=False)
        if cp.returncode == 0:
            st = json.loads(cp.stdout)[0]
            if st["State"]["Pid"] > 0:
                return st["Id"]
        time.sleep(0.05)
    raise AssertionError(f"{name} never ran")


def _wait_gone(isle, name: str, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if isle("ps", "-a", "--filter", f"name=^{name}$", "-q").stdout.strip() == "":
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} was not removed: {isle('ps', '-a').stdout}")


def _bridges(links_before: set[str]) -> list[str]:
    """This root's default bridge(s): made by the test's first run (other tests' links on a
    shared host come and go, so only ours are looked at)."""
    return [x for x in _links() - links_before
            if x.startswith("isle") and os.path.isdir(f"/sys/class/net/{x}/brif")]


def _assert_nothing_left(isle, bridges: list[str]) -> None:
    assert _mounts_under(isle.root) == []
    assert _mounts_under(isle.runroot) == []
    for b in bridges:  # no veth of a container left on it (ours stays; another test's may go)
        if os.path.isdir(f"/sys/class/net/{b}/brif"):
            assert os.listdir(f"/sys/class/net/{b}/brif") == [], b
    assert list((isle.root / "containers").iterdir()) == [] \
        if (isle.root / "containers").exists() else True


@pytest.mark.parametrize("flags", [[], ["-t"], ["-i"]], ids=["direct", "conmon-tty", "conmon-i"])
@pytest.mark.netns
def test_run_rm_honoured_after_cli_sigkill(isle, flags):
    """The container outlives its killed CLI; its real exit code is recorded and --rm honoured."""
    links = _links()
    isle("run", "--rm", "busybox", "true")  # the image pulled, the default network made
    links = _bridges(links)
    stdin = subprocess.PIPE if flags == ["-i"] else subprocess.DEVNULL
    p = _start_group(isle, "run", "--rm", *flags, "--name", "fg", "busybox", "sh", "-c",
                     "sleep 1; exit 7", stdin=stdin)
    cid = _wait_running(isle, "fg")
    t_kill = time.time()
    _kill_group(p)
    _wait_gone(isle, "fg")
    dies = [e for e in _events(isle, "die") if e["actor"] == cid]
    assert [e["exitCode"] for e in dies] == ["7"]
    assert not [e for e in _events(isle, "destroy") if e["actor"] != cid and False]
    assert time.time() - t_kill < 15
    _assert_nothing_left(isle, links)


def test_run_rm_sigkill_sweep(isle):
    """Kill `run --rm` at swept delays (mid-start too): never a stuck record or a leaked mount."""
    links = _links()
    isle("run", "--rm", "busybox", "true")
    links = _bridges(links)
    delays = [0.05, 0.15, 0.3, 0.5, 0.8] if SWEEP else [0.1, 0.4]
    for i, d in enumerate(delays):
        p = _start_group(isle, "run", "--rm", "--name", f"s{i}", "busybox", "sh", "-c",
                         "sleep 0.5; exit 3")
        time.sleep(d)
        _kill_group(p)
    for i in range(len(delays)):
        end = time.monotonic() + 15
        while time.monotonic() < end:
            out = isle("ps", "-a", "--filter", f"name=^s{i}$", "--format",
                       "{{.State}}").stdout.strip()
            if out in ("", "exited", "created"):
                break
            time.sleep(0.1)
        assert out in ("", "exited", "created"), out  # created: killed before start (Docker too)
    # what nobody outlived (killed before the container ran) the next command may show as
    # exited with its reason; rm removes it and everything it held
    ids = isle("ps", "-aq").stdout.split()
    if ids:  # (one may be removed meanwhile by whoever outlived it)
        isle("rm", "-f", *ids, check=False)
    assert isle("ps", "-aq").stdout == ""
    _assert_nothing_left(isle, links)


def test_foreground_conmon_run_is_not_held_by_its_exit_command(isle):
    """conmon waits for its exit command, the CLI for conmon: the exit command must not wait
    for the CLI in between (it detaches), or every `run --rm -t` took the 30 s timeout."""
    isle("run", "--rm", "--network", "none", "busybox", "true")
    t = time.monotonic()
    cp = isle("run", "--rm", "-t", "--network", "none", "busybox", "sh", "-c", "exit 4",
              check=False)
    assert cp.returncode == 4 and time.monotonic() - t < 10
    assert isle("ps", "-aq").stdout == ""


_TRAP = "trap 'exit 5' TERM INT; while :; do sleep 0.1; done"


@pytest.mark.parametrize("flags", [[], ["-t"], ["-i"]], ids=["direct", "tty", "stdin"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signals_are_proxied_and_rm_honoured(isle, flags, sig):
    """Docker's sig-proxy: SIGTERM/SIGINT to `isle run --rm [-t|-i]` reach the container, whose
    exit is the CLI's and which is removed."""
    p = subprocess.Popen(isle.argv("run", "--rm", *flags, "--network", "none", "--name", "sp",
                                   "busybox", "sh", "-c", _TRAP),
                         stdin=subprocess.PIPE if "-i" in flags else subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=isle.env,
                         start_new_session=True)
    try:
        _wait_running(isle, "sp")
        time.sleep(0.3)  # the trap set
        p.send_signal(sig)
        assert p.wait(timeout=20) == 5
    finally:
        if p.poll() is None:
            _kill_group(p)
    _wait_gone(isle, "sp")


def test_sig_proxy_false_leaves_the_container_alone(isle):
    p = subprocess.Popen(isle.argv("run", "--rm", "--sig-proxy=false", "--network", "none",
                                   "--name", "np", "busybox", "sh", "-c",
                                   "trap 'exit 5' TERM; sleep 1.5; exit 0"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=isle.env,
                         start_new_session=True)
    cid = _wait_running(isle, "np")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=20)
    _wait_gone(isle, "np")  # it ran to its own end, then --rm held
    assert [e["exitCode"] for e in _events(isle, "die") if e["actor"] == cid] == ["0"]


def _build_leftovers(isle, steps: set[str]) -> dict[str, list[str]]:
    """What RUN steps (ids) of builds hold on the host: overlay, runtime state, cgroups (cgroupsPath
    /<id> in every hierarchy), live-build markers."""
    cgroups = [f"/sys/fs/cgroup/{h}/{x}" for h in os.listdir("/sys/fs/cgroup") for x in steps
               if os.path.isdir(f"/sys/fs/cgroup/{h}/{x}")]
    state, markers = isle.runroot / "build", isle.runroot / "build-steps"
    return {"mounts": [m for m in _mounts_under(isle.root) if "build-run-" in m],
            "state": sorted(set(os.listdir(state)) & steps) if state.is_dir() else [],
            "cgroups": cgroups,
            "markers": [x for x in os.listdir(markers) if not x.startswith(".")]
            if markers.is_dir() else []}


def _kill_build_mid_run(isle, ctx, delay: float) -> set[str]:
    """Start a build whose RUN step sleeps, SIGKILL its process group mid-RUN: -> its step ids."""
    p = _start_group(isle, "build", "--network", "none", "-t", "killed", str(ctx))
    end = time.monotonic() + 60
    while time.monotonic() < end and not [m for m in _mounts_under(isle.root) if "build-run-" in m]:
        time.sleep(0.1)
    time.sleep(delay)
    steps = {x for x in os.listdir(isle.runroot / "build-steps") if x.startswith("isle-build-")}
    _kill_group(p)
    return steps


@pytest.mark.timeout(180)
@pytest.mark.parametrize("delay", [1.5] + ([0.5, 2.5] if SWEEP else []))
def test_killed_build_is_cleaned_by_the_next_command(isle, tmp_path, delay):
    """A build SIGKILLed (with its group) mid-RUN leaves its step's overlay, runtime state and
    cgroups; the next command of any kind (`isle ps` here) cleans them up; then a second killed
    build: `system df` counts the build cache, `system prune` leaves nothing (and never deletes
    under a live mount: test_sweep_tmp_spares_live_writers_and_mounts)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM busybox\nRUN echo a > /a; sleep 30\n")
    isle("run", "--rm", "--network", "none", "busybox", "true")
    steps = _kill_build_mid_run(isle, ctx, delay)
    left = _build_leftovers(isle, steps)
    assert steps and left["mounts"] and left["markers"], left  # the step's work stays until...
    assert left["state"] and left["cgroups"], left
    assert isle("ps").returncode == 0  # ...the next command
    nothing = {"mounts": [], "state": [], "cgroups": [], "markers": []}
    assert _build_leftovers(isle, steps) == nothing
    steps = _kill_build_mid_run(isle, ctx, 0.5)
    df = isle("system", "df").stdout
    assert "Build Cache" in df, df
    isle("system", "prune", "-f")
    assert _build_leftovers(isle, steps) == nothing
    assert os.listdir(isle.root / "images" / "tmp") == []


def test_sweep_tmp_spares_live_writers_and_mounts(tmp_path):
    """Killed pulls' temp blobs go; a live writer's and anything under a mount stay."""
    from isle.image.blobs import sweep_tmp, tmp_usage

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp / f"blob-{dead.pid}-aa").write_bytes(b"x" * 100000)
    (tmp / f"layer-{dead.pid}-bb").mkdir()
    (tmp / f"layer-{dead.pid}-bb" / "f").write_bytes(b"y" * 5000)
    (tmp / f"blob-{os.getpid()}-cc").write_bytes(b"live")
    (tmp / "new-unowned").mkdir()  # unowned and fresh: another process's work
    busy = tmp / "build-run-busy"
    busy.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(busy)], check=True)
    try:
        os.utime(busy, (0, 0))  # old, but mounted
        assert tmp_usage(str(tmp))[0] == 5
        n, freed = sweep_tmp(str(tmp))
        assert n == 2 and freed >= 100000
        assert sorted(os.listdir(tmp)) == sorted([f"blob-{os.getpid()}-cc", "new-unowned",
                                                  "build-run-busy"])
    finally:
        subprocess.run(["umount", str(busy)], check=True)


def _settle(isle) -> None:
    """The next commands after the kills: every record settles, rm -f takes all, nothing stays."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        states = isle("ps", "-a", "--format", "{{.State}}").stdout.split()
        if all(s in ("running", "exited", "created") for s in states):
            break
        time.sleep(0.1)
    ids = isle("ps", "-aq").stdout.split()
    if ids:
        isle("rm", "-f", *ids, check=False)
    assert isle("ps", "-aq").stdout == ""


@pytest.mark.timeout(240)
def test_sigkill_sweep_run_d_rm_f_network_create(isle):
    """SIGKILL of the CLI's group at swept delays during run -d, rm -f and network create."""
    links = _links()
    isle("run", "--rm", "busybox", "true")
    bridges = _bridges(links)
    delays = [0.05, 0.1, 0.2, 0.3, 0.5] if SWEEP else [0.05, 0.2]
    for i, d in enumerate(delays):
        p = _start_group(isle, "run", "-d", "--name", f"d{i}", "busybox", "sleep", "60")
        time.sleep(d)
        _kill_group(p)
    for i, d in enumerate(delays):
        st = isle("ps", "-a", "--filter", f"name=^d{i}$", "--format", "{{.State}}").stdout.strip()
        assert st in ("", "running", "exited", "created"), st
    for i, d in enumerate(delays):  # rm -f killed midway, then again
        isle("run", "-d", "--name", f"r{i}", "busybox", "sleep", "60")
        p = _start_group(isle, "rm", "-f", f"r{i}")
        time.sleep(d)
        _kill_group(p)
    for i, d in enumerate(delays):
        p = _start_group(isle, "network", "create", f"net{i}")
        time.sleep(d)
        _kill_group(p)
    _settle(isle)
    nets = [n for n in isle("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith("net")]
    for n in nets:  # a half-made network is either whole or absent, and removable
        isle("network", "rm", n)
    _assert_nothing_left(isle, bridges)


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_vm_run_rm_survives_cli_sigkill(isle):
    """--isolation vm: the CLI killed while the guest runs; its code recorded, --rm honoured."""
    p = _start_group(isle, "run", "--rm", "--isolation", "vm", "--network", "none", "--name",
                     "vmk", "busybox", "sh", "-c", "sleep 4; exit 6")
    cid = _wait_running(isle, "vmk", timeout=120)
    time.sleep(1)
    _kill_group(p)
    _wait_gone(isle, "vmk", timeout=60)
    assert [e["exitCode"] for e in _events(isle, "die") if e["actor"] == cid] == ["6"]
    assert _mounts_under(isle.root) == [] and _mounts_under(isle.runroot) == []


def _registry(d) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "config.yml").write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + str(d / "data") +
        f"\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: isle-crash\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                proc.kill()
                raise
            time.sleep(0.1)


@pytest.mark.registry
@pytest.mark.timeout(240)
def test_killed_pull_temp_blobs_go_with_the_next_pull(isle, tmp_path):
    """A pull SIGKILLed (with its group) mid-transfer: system df counts what it left, the next
    pull cleans it and completes the image."""
    import shutil

    if shutil.which("docker-registry") is None:
        pytest.skip("needs Debian's docker-registry")
    (tmp_path / "reg").mkdir()
    reg, addr = _registry(tmp_path / "reg")
    try:
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Containerfile").write_text(
            "FROM busybox\nRUN head -c 40000000 /dev/urandom > /big\n")
        isle("build", "--network", "none", "-t", f"{addr}/big", str(ctx), timeout=120)
        isle("push", "--tls-verify=false", f"{addr}/big", timeout=120)
        isle("rmi", f"{addr}/big")
        isle("image", "prune", "-a", "-f", check=False)
        delays = [0.3, 0.6, 1.0] if SWEEP else [0.4]
        for d in delays:
            p = _start_group(isle, "pull", "--tls-verify=false", f"{addr}/big")
            time.sleep(d)
            _kill_group(p)
            assert "Build Cache" in isle("system", "df").stdout
        isle("pull", "--tls-verify=false", f"{addr}/big", timeout=120)
        tmp = isle.root / "images" / "tmp"
        assert [x for x in os.listdir(tmp)] == [], os.listdir(tmp)
        out = isle("run", "--rm", "--network", "none", f"{addr}/big", "wc", "-c", "/big").stdout
        assert out.split()[0] == "40000000"
    finally:
        reg.terminate()
        reg.wait(10)
