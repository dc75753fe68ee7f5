"""What Docker users trip on, each checked against Debian's dockerd doing the same thing.

One dockerd (own roots, no iptables) and one docker-registry (plain HTTP on 127.0.0.1) serve
the module; busybox reaches dockerd as a docker-archive isle saved. The comparisons are of
behaviour (exit codes, what is left behind, the words of a message), not of byte-exact output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ISLE = str(REPO / ".venv" / "bin" / "isle")

pytestmark = [pytest.mark.root, pytest.mark.netns]

def _peers() -> object:
    spec = importlib.util.spec_from_file_location("isle_du_peers", REPO / "bench" / "peers.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Cli:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.prefix, self.env = argv, env

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run([*self.prefix, *args], capture_output=True, text=True,
                            timeout=timeout, env=self.env, input=input)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(self.prefix[:1] + list(args))} -> {cp.returncode}\n"
                                 f"{cp.stdout}\n{cp.stderr}")
        return cp


@pytest.fixture(scope="module")
def isle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    d = tmp_path_factory.mktemp("isle-du")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
    cli = Cli([ISLE, "--root", str(d / "root"), "--runroot", str(d / "run")], env)
    try:
        yield cli
    finally:
        ids = cli("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            cli("rm", "-f", *ids, check=False)
        for n in cli("network", "ls", "-q", check=False).stdout.split():
            if n != "bridge":
                cli("network", "rm", n, check=False)
        shutil.rmtree(d / "run", ignore_errors=True)


@pytest.fixture(scope="module")
def docker(isle: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("needs root and Debian's docker.io")
    d = tmp_path_factory.mktemp("dockerd-du")
    peer = _peers().Dockerd(d / "dockerd").start()  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISLE_", "DOCKER_"))}
    env.update(DOCKER_HOST=peer.host, DOCKER_CONFIG=str(d / "config"))
    cli = Cli(["docker"], env)
    try:
        isle("save", "-o", str(d / "busybox.tar"), "busybox")
        cli("load", "-i", str(d / "busybox.tar"))
        yield cli
    finally:
        ids = cli("ps", "-aq", check=False).stdout.split()
        if ids:
            cli("rm", "-f", *ids, check=False)
        cli("network", "prune", "-f", check=False)
        peer.stop()
        end = time.monotonic() + 15  # dockerd's mounts under its root go with it
        while time.monotonic() < end and str(d) in Path("/proc/self/mountinfo").read_text():
            time.sleep(0.1)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, registries) -> Iterator[str]:
    if shutil.which("docker-registry") is None:
        pytest.skip("needs Debian's docker-registry")
    reg = registries.start_registry(tmp_path_factory.mktemp("registry-du"))
    try:
        yield reg.addr
    finally:
        registries.stop_registry(reg)


def _no_netns_mounts_of(root: str) -> bool:
    return root not in Path("/proc/self/mountinfo").read_text()


# -- run pulls -------------------------------------------------------------------------------------
@pytest.mark.registry
@pytest.mark.leaks_ok  # the module's dockerd and registry outlive each test (isle's: checked)
@pytest.mark.timeout(240)
def test_run_pulls_a_missing_image(isle: Cli, docker: Cli, registry: str,
                                   tmp_path: Path) -> None:
    ref = f"{registry}/du/busybox:1"
    push = isle("push", "--tls-verify=false", "busybox", ref)
    assert "uploading" in push.stderr and "downloading" not in push.stderr  # push says what it does
    fresh = Cli([ISLE, "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")],
                isle.env)
    for cli, extra in ((fresh, ["--tls-verify=false"]), (docker, [])):
        never = cli("run", "--rm", "--pull", "never", ref, "true", check=False)
        assert never.returncode == 125 and "no such image" in never.stderr.lower(), never.stderr
        cp = cli("run", "--rm", *extra, ref, "echo", "pulled")
        assert cp.stdout.strip() == "pulled"
        assert f"Unable to find image '{ref}' locally" in cp.stderr
        again = cli("run", "--rm", "--pull", "never", ref, "echo", "local")  # now it is here
        assert again.stdout.strip() == "local" and "Unable to find" not in again.stderr
        always = cli("run", "--rm", "--pull", "always", *extra, ref, "true")
        assert always.returncode == 0
        bad = cli("run", "--rm", "--pull", "sometimes", ref, "true", check=False)
        assert bad.returncode == 125 and "sometimes" in bad.stderr
    assert fresh("ps", "-aq").stdout == ""
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


# -- -w --------------------------------------------------------------------------------------------
@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_workdir_is_made_when_missing(isle: Cli, docker: Cli) -> None:
    for cli in (isle, docker):
        cp = cli("run", "--rm", "-w", "/srv/new/dir", "busybox", "sh", "-c", "pwd; stat -c %a .")
        assert cp.stdout.split() == ["/srv/new/dir", "755"], (cli.prefix, cp.stdout)
    # an existing file where the directory should be is an error in both, not a silent change
    for cli in (isle, docker):
        cp = cli("run", "--rm", "-w", "/etc/passwd", "busybox", "true", check=False)
        assert cp.returncode != 0
    isle("rm", "-f", *isle("ps", "-aq").stdout.split(), check=False)


# -- --cpus, port clash ----------------------------------------------------------------------------
@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_cpus_above_the_host_refused_as_docker_does(isle: Cli, docker: Cli) -> None:
    n = len(os.sched_getaffinity(0))
    msgs = []
    for cli in (isle, docker):
        cp = cli("run", "--rm", "--cpus", str(n + 1), "busybox", "true", check=False)
        assert cp.returncode == 125, cp.stderr
        m = re.search(r"Range of CPUs is from 0\.01 to [\d.]+, as there are only \d+ CPUs "
                      r"available", cp.stderr)
        assert m, cp.stderr
        msgs.append(m.group(0))
    assert msgs[0] == msgs[1]
    assert isle("ps", "-aq").stdout == ""
    assert isle("run", "--rm", "--cpus", "0.5", "busybox", "true").returncode == 0


@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_port_clash_leaves_no_exited_container(isle: Cli, docker: Cli) -> None:
    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        docker("network", "create", "du-ports")
        for cli, net in ((isle, []), (docker, ["--network", "du-ports"])):
            cp = cli("run", "-d", *net, "--name", "clash", "-p", f"{port}:80", "busybox",
                     "sleep", "100", check=False)
            assert cp.returncode == 125 and str(port) in cp.stderr, cp.stderr
            status = cli("ps", "-a", "--filter", "name=clash", "--format", "{{.Status}}").stdout
            assert "Exited" not in status and "Up" not in status, (cli.prefix, status)
            cli("rm", "-f", "clash")
    finally:
        srv.close()
        docker("network", "rm", "du-ports", check=False)


@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_ip_outside_the_network_is_refused_before_a_container_exists(isle: Cli,
                                                                     docker: Cli) -> None:
    """--ip outside the network's subnets: 125 naming the address (Docker's too); isle checks it
    at create time, so no Created container is left behind."""
    try:
        for cli in (isle, docker):
            cli("network", "create", "--subnet", "10.213.7.0/24", "du-ip")
            cp = cli("run", "-d", "--network", "du-ip", "--ip", "10.1.2.3", "--name", "badip",
                     "busybox", "true", check=False)
            assert cp.returncode == 125 and "10.1.2.3" in cp.stderr, (cli.prefix, cp.stderr)
            cli("rm", "-f", "badip", check=False)
        cp = isle("run", "-d", "--network", "du-ip", "--ip", "10.1.2.3", "busybox", "true",
                  check=False)
        assert "--ip: 10.1.2.3 is outside the subnets of network du-ip (10.213.7.0/24)" \
            in cp.stderr, cp.stderr
        assert isle("ps", "-aq").stdout == ""
        assert isle("run", "--rm", "--network", "du-ip", "--ip", "10.213.7.9", "busybox",
                    "true").returncode == 0
    finally:
        for cli in (isle, docker):
            cli("network", "rm", "du-ip", check=False)


# -- network connect -------------------------------------------------------------------------------
@pytest.mark.leaks_ok
@pytest.mark.timeout(180)
def test_network_connect_a_running_container(isle: Cli, docker: Cli) -> None:
    root = isle.prefix[2]
    for cli in (isle, docker):
        cli("network", "create", "du-a")
        cli("network", "create", "du-b")
        cli("run", "-d", "--name", "nc", "--network", "du-a", "busybox", "sleep", "300")
        cli("run", "-d", "--name", "peer", "--network", "du-b", "busybox", "sleep", "300")
        cli("network", "connect", "du-b", "nc")
        addrs = cli("exec", "nc", "ip", "-4", "-o", "addr").stdout
        assert len(re.findall(r"\binet\b", addrs)) == 3, addrs  # lo + one per network
        nets = cli("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                   "nc").stdout.split()
        assert sorted(nets) == ["du-a", "du-b"]
        # DNS on the new network: the peer's name resolves from nc
        cli("exec", "nc", "ping", "-c", "1", "-W", "5", "peer")
        cli("network", "disconnect", "du-b", "nc")
        addrs = cli("exec", "nc", "ip", "-4", "-o", "addr").stdout
        assert len(re.findall(r"\binet\b", addrs)) == 2, addrs
        cli("rm", "-f", "nc", "peer")
        cli("network", "rm", "du-a", "du-b")
    assert _no_netns_mounts_of(root), [ln for ln in Path("/proc/self/mountinfo").read_text()
                                       .splitlines() if root in ln]


# -- messages --------------------------------------------------------------------------------------
@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_messages(isle: Cli, docker: Cli, tmp_path: Path) -> None:
    for cli in (isle, docker):
        cp = cli("inspect", "no-such-thing-du", check=False)
        assert cp.returncode == 1 and "no such object: no-such-thing-du" in cp.stderr.lower()
    # two `rm -f` of one container race: the loser names the container as it was named
    for _ in range(3):
        isle("run", "-d", "--name", "racer", "busybox", "sleep", "100")
        res: list[subprocess.CompletedProcess[str]] = []

        def rm(res: list[subprocess.CompletedProcess[str]] = res) -> None:
            res.append(isle("rm", "-f", "racer", check=False))

        ts = [threading.Thread(target=rm) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for cp in res:
            if cp.returncode:
                assert "racer" in cp.stderr and not re.search(r"[0-9a-f]{64}", cp.stderr)
    # a Containerfile of random bytes: one line, not a traceback
    (tmp_path / "Containerfile").write_bytes(os.urandom(4096).replace(b"\n", b"x"))
    cp = isle("build", "-t", "junk", str(tmp_path), check=False)
    assert cp.returncode != 0 and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert "Traceback" not in cp.stderr
    (tmp_path / "Containerfile").write_bytes(b"FROM busybox\n" + bytes(range(1, 255)) * 30)
    cp = isle("build", "-t", "junk", str(tmp_path), check=False)
    assert cp.returncode != 0 and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert len(cp.stderr) < 300


# -- templates -------------------------------------------------------------------------------------
TEMPLATES = [
    "{{.Name}}", "{{join .Config.Cmd \" \"}}", "{{json .Config.Cmd}}",
    "{{range .Config.Cmd}}[{{.}}]{{end}}", "{{upper .State.Status}}", "{{lower \"AB\"}}",
    "{{index .Config.Cmd 1}}", "{{index .Config.Labels \"du\"}}", "{{len .Config.Cmd}}",
    "{{if .State.Running}}up{{else}}down{{end}}", "{{println .State.Status}}",
    "{{.Config.Labels}}", "{{json .Config.Labels}}", "{{.State.Status | upper}}",
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
    "{{with .Config}}{{.Cmd}}{{end}}", "{{printf \"%s:%d\" .State.Status .State.ExitCode}}",
]


@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_templates_render_as_docker_does(isle: Cli, docker: Cli) -> None:
    for cli in (isle, docker):
        cli("create", "--name", "tpl", "-l", "du=yes", "busybox", "sleep", "100")
    try:
        for t in TEMPLATES:
            got = [cli("inspect", "--format", t, "tpl").stdout for cli in (isle, docker)]
            assert got[0] == got[1], (t, got)
        for t in ("{{.Names}}", "table {{.Names}}\t{{.Image}}", "{{json .Names}}"):
            got = [cli("ps", "-a", "--filter", "name=tpl", "--format", t).stdout
                   for cli in (isle, docker)]
            assert got[0].split() == got[1].split(), (t, got)
        for t in ("{{.Repository}}:{{.Tag}}", "table {{.Repository}}\t{{.Tag}}",
                  "{{json .Repository}}"):
            got = [cli("images", "--format", t, "busybox").stdout for cli in (isle, docker)]
            assert got[0].split() == got[1].split(), (t, got)
        rows = [json.loads(x) for x in isle("images", "--format", "json").stdout.splitlines()]
        assert {"Repository", "Tag", "ID", "Size"} <= rows[0].keys()
    finally:
        for cli in (isle, docker):
            cli("rm", "-f", "tpl", check=False)


# -- info, version -----------------------------------------------------------------------------
@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_info_and_version_readable(isle: Cli, docker: Cli) -> None:
    for verb in ("info", "version"):
        text = isle(verb).stdout
        assert not re.search(r"[{\[]'|': |\bTrue\b|\bFalse\b|\bNone\b", text), text  # no reprs
        assert "Server:" in text
    v = isle("version").stdout
    for prog in ("conmon", "runc", "crun", "qemu", "netavark", "runsc"):
        m = re.search(rf"^ {prog}:\n  Version:\s+(\S+)", v, re.M)
        assert m and m.group(1), (prog, v)
    assert isle("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    comps = json.loads(isle("version", "--format", "{{json .Server.Components}}").stdout)
    assert {"Engine", "runc", "conmon"} <= {c["Name"] for c in comps}
    n = [cli("info", "--format", "{{.NCPU}}").stdout.strip() for cli in (isle, docker)]
    assert n[0] == n[1] == str(os.cpu_count())
    for cli in (isle, docker):
        assert isinstance(json.loads(cli("info", "--format", "{{json .}}").stdout), dict)
        assert isinstance(json.loads(cli("info", "--format", "json").stdout), dict)


def _in_pty(cli: Cli, args: list[str], rows: int = 33, cols: int = 99) -> str:
    """cli ARGS on a terminal of rows x cols (util-linux `script`): its output, \r dropped."""
    import shlex

    cmd = f"stty rows {rows} cols {cols}; {shlex.join([*cli.prefix, *args])}"
    cp = subprocess.run(["script", "-qefc", cmd, "/dev/null"], capture_output=True, text=True,
                        timeout=150, env=cli.env, stdin=subprocess.DEVNULL)
    return cp.stdout.replace("\r", "")


@pytest.mark.leaks_ok
@pytest.mark.timeout(120)
def test_run_tty_has_the_terminal_size_from_the_start(isle: Cli) -> None:
    """`run -it IMAGE stty size` as the first instruction: the CLI sends its terminal's size
    with the create (as Docker's CLI does since API 1.42, HostConfig.ConsoleSize), so the pty is
    33x99 before the process runs; Debian's docker 20.10 only resizes after the start, too
    late for this (its `stty size` fails), so it is not the reference here."""
    if not shutil.which("script"):
        pytest.skip("no util-linux script")
    out = _in_pty(isle, ["run", "--rm", "-it", "busybox", "stty", "size"])
    assert out.strip() == "33 99", out
    assert isle("ps", "-aq").stdout == ""


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tty_in_a_vm(tmp_path: Path) -> None:
    """-it under --isolation vm: a terminal of the caller's size from the first instruction
    (process.consoleSize), with a node in the container's /dev (tty names it)."""
    if not shutil.which("script"):
        pytest.skip("no util-linux script")
    cli = Cli([ISLE, "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")],
              {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")})
    try:
        out = _in_pty(cli, ["run", "--rm", "-it", "--isolation", "vm", "--network", "none",
                            "busybox", "sh", "-c",
                            "stty size; [ -t 0 ] && [ -t 1 ] && tty"])
        assert out.split() == ["33", "99", "/dev/console"], out
        assert cli("ps", "-aq").stdout == ""
    finally:
        ids = cli("ps", "-aq", check=False).stdout.split()
        if ids:
            cli("rm", "-f", *ids, check=False)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_workdir_is_made_in_a_vm(tmp_path: Path) -> None:
    """The same -w under --isolation vm (the guest's disk is chosen after the directory exists)."""
    cli = Cli([ISLE, "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")],
              {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")})
    try:
        cp = cli("run", "--rm", "--isolation", "vm", "-w", "/srv/vm/dir", "busybox", "pwd",
                 timeout=150)
        assert cp.stdout.strip() == "/srv/vm/dir"
        assert cli("ps", "-aq").stdout == ""
    finally:
        ids = cli("ps", "-aq", check=False).stdout.split()
        if ids:
            cli("rm", "-f", *ids, check=False)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
