"""Review finding 3 (RUN half): `isle build` RUN steps get exactly the sandbox of `isle run`.

Each probe is a real attempt from inside a RUN step: reach a host service on 127.0.0.1 (and
through the bridge gateway), make and open host device nodes (a loop device, the host's root
disk, /dev/kvm, /dev/fuse, /dev/tty1), call syscalls Docker's seccomp profile blocks, read
masked /proc files and write read-only ones, hold more than Docker's default capabilities. The
same probe then runs under `isle run`: both must print the same results, and every attack fails.
"""

from __future__ import annotations

import http.server
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.netns]

SECRET = "isle-build-secret-" + os.urandom(6).hex()
# Docker's default capability set (moby oci/caps/defaults.go) as a CapEff mask
DOCKER_CAPEFF = "00000000a80425fb"
STANDARD_DEV = {"console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random",
                "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}


def _root_disk() -> tuple[int, int]:
    """major, minor of the block device behind the host's / (the disk a step must not reach)."""
    d = os.stat("/").st_dev
    return os.major(d), os.minor(d)


def _probe(port: int, pub_port: int) -> str:
    maj, mnr = _root_disk()
    devs = [("loop", "b", 7, 0), ("disk", "b", maj, mnr), ("kvm", "c", 10, 232),
            ("fuse", "c", 10, 229), ("tty1", "c", 4, 1)]
    lines = [
        'r() { echo "P:$1=$2"; }',
        # busybox-static's wget crashes here: plain HTTP over nc; the body is the last line
        "get() { b=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $1 $2 2>/dev/null "
        "| tail -n 1); echo ${b:-refused}; }",
        "r caps $(grep '^CapEff:' /proc/self/status | cut -f2)",
        "r capbnd $(grep '^CapBnd:' /proc/self/status | cut -f2)",
        "r seccomp $(grep '^Seccomp:' /proc/self/status | cut -f2)",
        "r nnp $(grep '^NoNewPrivs:' /proc/self/status | cut -f2)",
        "r dev \"$(ls /dev | tr '\\n' ' ')\"",
        # (c) seccomp / capabilities
        "unshare -U true 2>/dev/null && r unshare ok || r unshare denied",
        "mkdir -p /mnt; mount -t tmpfs x /mnt 2>/dev/null && r mount ok || r mount denied",
        # (d) masked and read-only /proc
        "r timer_list $(cat /proc/timer_list 2>/dev/null | wc -c)",
        "r keys $(cat /proc/keys 2>/dev/null | wc -c)",
        "v=$(cat /proc/sys/vm/overcommit_ratio); "
        "(echo $v > /proc/sys/vm/overcommit_ratio) 2>/dev/null && r procsys writable || r procsys ro",
        "[ -e /proc/sysrq-trigger ] && { (echo h > /proc/sysrq-trigger) 2>/dev/null "
        "&& r sysrq writable || r sysrq ro; } || r sysrq ro",
        # (a) network: the host's loopback service, and the same port through the gateway
        f"r lo $(get 127.0.0.1 {port})",
        "gw=$(ip route 2>/dev/null | awk '/^default/ {print $3}')",
        "r route ${gw:+default}",
        f"[ -n \"$gw\" ] && r gw $(get $gw {port}) || r gw refused",
        f"[ -n \"$gw\" ] && r pub $(get $gw {pub_port}) || r pub refused",
    ]
    # (b) device nodes: absent from /dev; made with mknod, they cannot be opened (open only:
    # nothing is read or written, a tty read would block and a disk write would harm the host)
    for name, kind, ma, mi in devs:
        lines.append(f"[ -e /dev/{name} ] && r {name}_in_dev yes || r {name}_in_dev no")
        lines.append(f"mknod /tmp/{name} {kind} {ma} {mi} 2>/dev/null; "
                     f"(: < /tmp/{name}) 2>/dev/null && r {name}_read ok || r {name}_read denied; "
                     f"(: >> /tmp/{name}) 2>/dev/null && r {name}_write ok || r {name}_write denied; "
                     f"rm -f /tmp/{name}")
    return "; ".join(lines)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a: object) -> None:
        pass


def _serve(addr: str, body: bytes) -> tuple[http.server.HTTPServer, threading.Thread]:
    h = type("H", (_Handler,), {"body": body})
    srv = http.server.ThreadingHTTPServer((addr, 0), h)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv, t


@pytest.fixture
def services() -> Iterator[tuple[int, int]]:
    """A secret on 127.0.0.1:P (must stay unreachable) and a public page on 0.0.0.0:Q (what a
    container on the default bridge reaches through its gateway)."""
    s1, t1 = _serve("127.0.0.1", SECRET.encode())
    s2, t2 = _serve("0.0.0.0", b"public")
    try:
        yield s1.server_address[1], s2.server_address[1]
    finally:
        for s, t in ((s1, t1), (s2, t2)):
            s.shutdown()
            s.server_close()
            t.join(5)


def _results(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("P:") and "=" in line:
            k, _, v = line[2:].partition("=")
            out[k] = v.strip()
    return out


def _build(isle, tmp_path: Path, script: str, *extra: str, check: bool = True,
           name: str = "c") -> tuple[int, str]:
    ctx = tmp_path / name
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text("FROM busybox\nRUN " + script + "\n")
    cp = isle("build", "--no-cache", *extra, "-t", f"probe-{name}:1", str(ctx), check=check,
              timeout=120)
    return cp.returncode, cp.stdout + cp.stderr


def _nothing_left(isle) -> None:
    netns = isle.runroot / "networks" / "netns"
    if netns.is_dir():
        assert [n for n in os.listdir(netns) if not n.startswith(".")] == []
    build_state = isle.runroot / "build"
    if build_state.is_dir():
        assert [n for n in os.listdir(build_state) if n.startswith("isle-build")] == []
    with open("/proc/self/mountinfo") as f:
        assert "build-run-" not in f.read()


def _check_hardened(r: dict[str, str], network: str) -> None:
    assert r["caps"] == DOCKER_CAPEFF and r["capbnd"] == DOCKER_CAPEFF, r
    assert r["seccomp"] == "2", r
    assert set(r["dev"].split()) <= STANDARD_DEV, r["dev"]
    assert r["unshare"] == "denied" and r["mount"] == "denied", r
    assert r["timer_list"] == "0" and r["keys"] == "0", r
    assert r["procsys"] == "ro" and r["sysrq"] == "ro", r
    for name in ("loop", "disk", "kvm", "fuse", "tty1"):
        assert r[f"{name}_in_dev"] == "no", (name, r)
        assert r[f"{name}_read"] == "denied" and r[f"{name}_write"] == "denied", (name, r)
    assert r["lo"] == "refused" and r["gw"] == "refused", r
    if network == "default":
        assert r["route"] == "default" and r["pub"] == "public", r
    else:
        assert r["route"] == "" and r["pub"] == "refused", r


@pytest.mark.timeout(300)
@pytest.mark.parametrize("network,runtime", [("default", ""), ("none", ""), ("default", "runc")])
def test_run_step_has_the_sandbox_of_isle_run(isle, tmp_path: Path, services, network,
                                              runtime) -> None:
    import shutil

    from isle.image.store import ImageStore

    if runtime and not shutil.which(runtime):
        pytest.skip(f"{runtime} is not installed")
    port, pub = services
    script = _probe(port, pub)
    flag = [] if network == "default" else ["--network", network]
    rc, out = _build(isle, tmp_path, script, *flag, *(["--runtime", runtime] if runtime else []))
    assert SECRET not in out
    built = _results(out)
    _check_hardened(built, network)
    # the files bound for the step (hosts, resolv.conf) and other mount points are not its layer
    img = ImageStore(str(isle.root / "images")).resolve("probe-c:1")
    layer = Path(img.layer_dirs[-1])
    assert not [p for p in ("etc/hosts", "etc/resolv.conf", "proc", "sys", "dev")
                if os.path.lexists(layer / p)], sorted(str(p) for p in layer.rglob("*"))
    run = isle("run", "--rm", *(["--network", "none"] if network == "none" else []),
               "busybox", "sh", "-c", script, timeout=120)
    assert SECRET not in run.stdout + run.stderr
    ran = _results(run.stdout)
    assert ran == built, {k: (ran.get(k), built.get(k)) for k in set(ran) | set(built)
                          if ran.get(k) != built.get(k)}
    _nothing_left(isle)


@pytest.mark.timeout(120)
def test_network_host_is_the_hosts_and_bad_values_are_refused(isle, tmp_path: Path,
                                                              services) -> None:
    port, _ = services
    rc, out = _build(isle, tmp_path, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 {port}",
                     "--network", "host")
    assert rc == 0 and SECRET in out  # documented: host networking is the host's loopback too
    rc, out = _build(isle, tmp_path, "true", "--network", "container:x", check=False, name="bad")
    assert rc != 0 and "--network" in out, out
    _nothing_left(isle)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("step,ok", [("exit 3", False), ("sh -c 'kill -9 $$'; exit $?", False),
                                     ("sleep 1000 & sleep 1000 & exit 0", True)])
def test_failed_or_killed_step_leaves_nothing(isle, tmp_path: Path, step: str, ok: bool) -> None:
    rc, out = _build(isle, tmp_path, step, check=False)
    if ok:
        assert rc == 0, out  # the step's leftover processes die with it (and its cgroups go)
    else:
        assert rc != 0 and "Containerfile:2" in out, out
    _nothing_left(isle)
    assert not [p for p in os.listdir(isle.root / "images" / "tmp")]


@pytest.mark.timeout(120)
def test_user_lookup_stays_in_the_image(isle, tmp_path: Path) -> None:
    """USER resolves names in the image's /etc/passwd; a symlink to a host file is not followed
    out of the rootfs (the host's passwd names are not found)."""
    canary = tmp_path / "passwd"
    canary.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    ctx = tmp_path / "u"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM busybox\nRUN rm -f /etc/passwd && ln -s {canary} /etc/passwd\n"
        "USER hostonly\nRUN id -u\n")
    cp = isle("build", "--no-cache", "-t", "u:1", str(ctx), check=False, timeout=120)
    assert cp.returncode != 0 and "hostonly" in cp.stderr and "4242" not in cp.stderr, cp.stderr
    assert canary.read_text() == "hostonly:x:4242:4242::/:/bin/sh\n"
    _nothing_left(isle)


@pytest.mark.timeout(120)
def test_workdir_symlink_cannot_create_host_dirs(isle, tmp_path: Path) -> None:
    """A RUN step's working directory is made inside the rootfs, even through a symlink."""
    target = tmp_path / "host-dir"
    target.mkdir()
    ctx = tmp_path / "w"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM busybox\nRUN ln -s {target} /link\nWORKDIR /link/made\nRUN pwd\n")
    isle("build", "--no-cache", "-t", "w:1", str(ctx), check=False, timeout=120)
    assert os.listdir(target) == []
    assert stat.S_ISDIR(os.stat(target).st_mode)
    _nothing_left(isle)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_interrupted_build_leaves_nothing(isle, tmp_path: Path, sig: str) -> None:
    """isle build stopped in the middle of a step: the step's processes, cgroups, network
    namespace, veth, overlay mount and runtime state all go."""
    import signal
    import subprocess
    import time

    ctx = tmp_path / "i"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM busybox\nRUN echo started; sleep 1000\n")
    p = subprocess.Popen(isle.argv("build", "--no-cache", str(ctx)), env=isle.env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    deadline = time.time() + 60
    for line in p.stdout:
        if line.strip() == b"started" or time.time() > deadline:
            break
    p.send_signal(getattr(signal, "SIG" + sig))
    try:
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    _nothing_left(isle)


def _step_processes() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cgroup") as f:
                    if "/isle-build-" in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


@pytest.mark.timeout(180)
def test_build_killed_outright_is_swept_by_the_next(isle, tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the next build removes the step's container,
    cgroups, network and overlay of every build that is gone."""
    import signal
    import subprocess
    import time

    ctx = tmp_path / "k"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM busybox\nRUN echo started; sleep 1000\n")
    before = set(_step_processes())
    p = subprocess.Popen(isle.argv("build", "--no-cache", str(ctx)), env=isle.env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    deadline = time.time() + 60
    for line in p.stdout:
        if line.strip() == b"started" or time.time() > deadline:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    try:
        assert set(_step_processes()) - before  # the step outlived its build
        (ctx / "Containerfile").write_text("FROM busybox\nRUN true\n")
        isle("build", "--no-cache", str(ctx), timeout=120)
        deadline = time.time() + 10
        while set(_step_processes()) - before and time.time() < deadline:
            time.sleep(0.1)
        assert not set(_step_processes()) - before
        _nothing_left(isle)
        assert not [n for n in os.listdir(isle.runroot / "build-steps") if not n.startswith(".")]
    finally:
        for pid in set(_step_processes()) - before:  # only if the sweep failed
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(120)
def test_run_flags(isle, tmp_path: Path, services) -> None:
    """RUN --network=none narrows; RUN --network=host needs the build's --network host; flags
    isle does not honour (BuildKit's --mount, --security=insecure) are refused, not ignored."""
    port, _ = services
    rc, out = _build(isle, tmp_path, "--network=none ip route | grep -q default || echo P:none=1")
    assert "P:none=1" in out
    for flags in ("--network=host", "--security=insecure", "--mount=type=bind,source=/,target=/h"):
        rc, out = _build(isle, tmp_path, f"{flags} cat /h/etc/hostname; nc 127.0.0.1 {port}",
                         check=False, name="f")
        assert rc != 0 and "Containerfile:2" in out and SECRET not in out, out
        assert flags.split("=")[0] in out, out
    _nothing_left(isle)
