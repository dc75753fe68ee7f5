"""Finding 5: an image's symlinks cannot steer the runtime's rootfs set-up out of the rootfs.

The image (a copy of busybox here) plants symlinks where the runtime creates devices, /dev
links, mount points, masked and read-only paths and /dev/console: to a canary directory under
the test's tmp dir, as an absolute host path and as a climbing ``../../..`` path. Each run must
leave the canary untouched (nothing created, deleted, written or mounted over) and the
container must still start: a symlink is followed *inside* the rootfs, as runc does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

RUNTIME = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "isle-runtime")

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]


class Canary:
    """A host directory with one file; snapshot() says what it holds, byte for byte."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "canary"
        self.dir.mkdir()
        self.file = self.dir / "keep"
        self.file.write_text("host data\n")
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int, bytes | str]]:
        out = {}
        for root, dirs, files in os.walk(self.dir):
            for n in dirs + files:
                p = os.path.join(root, n)
                st = os.lstat(p)
                body: bytes | str = os.readlink(p) if os.path.islink(p) else (
                    open(p, "rb").read() if os.path.isfile(p) else b"")
                out[os.path.relpath(p, self.dir)] = (st.st_mode, st.st_rdev, body)
        return out

    def check(self) -> None:
        assert self.snapshot() == self.before, "the runtime changed the host canary"
        with open("/proc/self/mountinfo") as f:
            assert not any(str(self.dir) in line for line in f), "mounted over the canary"


@pytest.fixture
def canary(tmp_path: Path) -> Canary:
    return Canary(tmp_path)


@pytest.fixture
def rootfs(tmp_path: Path, busybox_rootfs: Path) -> Path:
    """A writable copy of the busybox rootfs the test may plant symlinks in."""
    d = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, d, symlinks=True)
    return d


def _to(rootfs: Path, at: str, target: Path, form: str) -> str:
    """A symlink value at rootfs/at that names the host's target: 'abs' or climbing 'rel'."""
    if form == "abs":
        return str(target)
    depth = at.strip("/").count("/") + len(rootfs.parts)
    return "../" * (depth + 3) + str(target).lstrip("/")


def _plant(rootfs: Path, at: str, target: Path, form: str) -> None:
    p = rootfs / at.lstrip("/")
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(_to(rootfs, at, target, form))


def _spec(rootfs: Path, *, dev_tmpfs: bool = True, extra=None):
    def edit(c):
        c["root"] = {"path": str(rootfs), "readonly": False}
        if not dev_tmpfs:
            c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/dev"]
        if extra:
            extra(c)
    return edit


FORMS = ["abs", "rel"]
SCRIPT = "cat /etc/hostname >/dev/null 2>&1; echo started; ls /dev/null >/dev/null && echo devok"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("at,dev_tmpfs", [
    ("/dev", True), ("/dev", False), ("/proc", True), ("/sys", True), ("/dev/shm", False),
    ("/dev/pts", False), ("/dev/mqueue", False),
])
def test_symlinked_mount_points_stay_inside(rt, bundle, rootfs, canary, at, dev_tmpfs, form):
    _plant(rootfs, at, canary.dir, form)
    cp = rt("run", "-b", str(bundle(["sh", "-c", SCRIPT], _spec(rootfs, dev_tmpfs=dev_tmpfs))),
            "c1", check=False)
    canary.check()
    assert cp.returncode == 0 and "started" in cp.stdout, cp.stderr


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("node", ["/dev/null", "/dev/zero", "/dev/tty", "/dev/ptmx", "/dev/fd",
                                  "/dev/core", "/dev/stdout"])
def test_symlinked_device_nodes_and_links_stay_inside(rt, bundle, rootfs, canary, node, form):
    _plant(rootfs, node, canary.file, form)
    cp = rt("run", "-b", str(bundle(["sh", "-c", "stat -c '%t:%T %F' /dev/null; echo ok"],
                                    _spec(rootfs, dev_tmpfs=False))), "c1", check=False)
    canary.check()
    assert cp.returncode == 0 and "ok" in cp.stdout, cp.stderr
    assert cp.stdout.startswith("1:3 character special file"), cp.stdout


def test_dev_null_symlink_cannot_turn_a_mask_into_a_proc_file(rt, bundle, rootfs):
    """CVE-2025-31133: /dev/null -> /proc/sys/kernel/core_pattern must not make a masked /proc
    file (outside the read-only /proc/sys) a writable core_pattern. Reads only."""
    _plant(rootfs, "/dev/null", Path("/proc/sys/kernel/core_pattern"), "abs")
    script = "stat -L -c '%t:%T' /proc/cpuinfo /proc/version; wc -c </proc/cpuinfo"

    def extra(c):
        c["linux"]["maskedPaths"] += ["/proc/cpuinfo", "/proc/version"]
    cp = rt("run", "-b", str(bundle(["sh", "-c", script],
                                    _spec(rootfs, dev_tmpfs=False, extra=extra))),
            "c1", check=False)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["1:3", "1:3", "0"], cp.stdout


def test_masked_and_readonly_symlinks_do_not_redirect(rt, bundle, rootfs, canary):
    """A masked or read-only path that is a symlink does not mask / freeze its target."""
    (rootfs / "data").mkdir()
    (rootfs / "data" / "f").write_text("visible\n")
    (rootfs / "masked").symlink_to("/data")
    (rootfs / "frozen").symlink_to("data")
    _plant(rootfs, "/hostlink", canary.dir, "abs")

    def extra(c):
        c["linux"]["maskedPaths"] += ["/masked", "/hostlink", "/nope/x"]
        c["linux"]["readonlyPaths"] += ["/frozen", "/hostlink"]

    cp = rt("run", "-b", str(bundle(["sh", "-c", "cat /data/f; echo w >/data/g && echo rw"],
                                    _spec(rootfs, extra=extra))), "c1", check=False)
    canary.check()
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["visible", "rw"], cp.stdout


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ["bind-dir", "bind-file", "tmpfs"])
def test_symlinked_mount_destination_stays_inside(rt, bundle, rootfs, canary, tmp_path, kind,
                                                   form):
    src = tmp_path / "src"
    if kind == "bind-file":
        src.write_text("from the host\n")
    else:
        src.mkdir()
        (src / "f").write_text("from the host\n")
    _plant(rootfs, "/mnt/x", canary.dir if kind != "bind-file" else canary.file, form)
    m = ({"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs"} if kind == "tmpfs" else
         {"destination": "/mnt/x", "type": "bind", "source": str(src), "options": ["rbind", "ro"]})
    cp = rt("run", "-b", str(bundle(["sh", "-c", "ls /mnt/x >/dev/null && echo ok"],
                                    _spec(rootfs, extra=lambda c: c["mounts"].append(m)))),
            "c1", check=False)
    canary.check()
    assert cp.returncode == 0 and "ok" in cp.stdout, cp.stderr


def test_symlink_inside_the_rootfs_is_followed_like_runc(rt, bundle, rootfs):
    (rootfs / "real").mkdir()
    (rootfs / "mnt").mkdir(exist_ok=True)
    (rootfs / "mnt" / "x").symlink_to("../real")
    (rootfs / "tgt").symlink_to("/real/sub")  # dangling, inside: its target is made
    mounts = [{"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs"},
              {"destination": "/tgt", "type": "tmpfs", "source": "tmpfs"}]
    cp = rt("run", "-b", str(bundle(["sh", "-c", "grep -c ' /real' /proc/self/mountinfo"],
                                    _spec(rootfs, extra=lambda c: c["mounts"].extend(mounts)))),
            "c1", check=False)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "2"


@pytest.mark.parametrize("form", FORMS)
def test_console_symlink_is_not_a_mount_target(rt, bundle, rootfs, canary, tmp_path, form):
    """CVE-2025-52565: /dev/console -> elsewhere must not get the pty bound over it."""
    _plant(rootfs, "/dev/console", canary.file, form)
    (rootfs / "dev" / "pts").mkdir(exist_ok=True)
    sock_path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)

    def extra(c):
        c["process"]["terminal"] = True
    b = bundle(["sh", "-c", "stat -c '%F' /dev/console; echo done"],
               _spec(rootfs, dev_tmpfs=False, extra=extra))
    p = subprocess.Popen([RUNTIME, "--root", str(rt.root), "create", "-b", str(b),
                          "--console-socket", sock_path, "t1"], stderr=subprocess.PIPE)
    master = -1
    try:
        srv.settimeout(20)
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        master = fds[0]
        conn.close()
        assert p.wait(timeout=20) == 0, p.stderr.read()
        rt("start", "t1")
        data = b""
        deadline = time.monotonic() + 10
        while b"done" not in data and time.monotonic() < deadline:
            try:
                data += os.read(master, 1024)
            except OSError:
                break
        assert b"character special file" in data, data
    finally:
        if master >= 0:
            os.close(master)
        srv.close()
        p.stderr.close()
        rt("delete", "--force", "t1", check=False)
    canary.check()


def test_sysctl_write_lands_on_the_real_procfs(rt, bundle, rootfs, tmp_path):
    """CVE-2025-52881: a bind mount over a /proc/sys file (one of the few runc lets a mount
    cover) must not take the runtime's sysctl write; the runtime refuses clearly."""
    trap = tmp_path / "trap"
    trap.write_text("trap\n")

    def extra(c):
        c["mounts"].append({"destination": "/proc/sys/kernel/ns_last_pid", "type": "bind",
                            "source": str(trap), "options": ["bind"]})
        c["linux"]["sysctl"] = {"kernel.ns_last_pid": "100"}
    cp = rt("run", "-b", str(bundle(["true"], _spec(rootfs, extra=extra))), "c1", check=False)
    assert trap.read_text() == "trap\n"
    assert cp.returncode != 0 and "linux.sysctl.kernel.ns_last_pid" in cp.stderr, cp.stderr
    assert "mounted over it" in cp.stderr


@pytest.mark.parametrize("dest,plant", [
    ("/proc/sys/net", None),                        # named: refused, as runc does
    ("/mnt/x", "/proc/sys/kernel"),                 # steered there by the image: refused
    ("/proc/cpuinfo", "/proc/sys/kernel/core_pattern"),  # an lxcfs file, but steered
])
def test_mounts_onto_the_containers_procfs_are_refused(rt, bundle, rootfs, tmp_path, dest,
                                                       plant):
    src = tmp_path / "src"
    src.mkdir()
    if plant:
        _plant(rootfs, dest, Path(plant), "abs")
    if dest == "/proc/cpuinfo":
        (src / "f").write_text("x")
        src = src / "f"

    def extra(c):
        c["mounts"].append({"destination": dest, "type": "bind", "source": str(src),
                            "options": ["rbind"]})
    cp = rt("run", "-b", str(bundle(["true"], _spec(rootfs, extra=extra))), "c1", check=False)
    if dest == "/proc/cpuinfo":  # /proc is a mount: the image's /proc/cpuinfo is under it
        assert cp.returncode == 0, cp.stderr
        return
    assert cp.returncode != 0 and "mounts[7]" in cp.stderr and "procfs" in cp.stderr, cp.stderr
    assert not (rt.root / "c1").exists()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("form", FORMS)
def test_engine_image_with_symlinked_dev_and_etc_files(isle, rootfs, canary, tmp_path, form):
    """The same through the engine: an imported image whose /dev, /dev/shm and /etc/hosts (a
    file the engine binds its own over) point at the host; `isle run` keeps them inside."""
    _plant(rootfs, "/dev", canary.dir, form)
    (rootfs / "etc").mkdir(exist_ok=True)
    _plant(rootfs, "/etc/hosts", canary.file, form)
    _plant(rootfs, "/etc/resolv.conf", canary.dir / "resolv", form)
    tar = tmp_path / "img.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    isle("import", str(tar), "symdev:latest")
    cp = isle("run", "--rm", "--network", "none", "symdev:latest", "sh", "-c",
              "grep -c localhost /etc/hosts; ls /dev/null && echo ok", check=False)
    canary.check()
    assert cp.returncode == 0 and "ok" in cp.stdout, cp.stderr


def test_spec_device_in_a_symlinked_subdir_stays_inside(rt, bundle, rootfs, canary):
    _plant(rootfs, "/dev/net", canary.dir, "abs")

    def extra(c):
        c["linux"]["devices"] = [{"path": "/dev/net/tun", "type": "c", "major": 10,
                                  "minor": 200, "fileMode": 0o666, "uid": 0, "gid": 0}]
    cp = rt("run", "-b", str(bundle(["sh", "-c", "stat -L -c '%t:%T' /dev/net/tun"],
                                    _spec(rootfs, dev_tmpfs=False, extra=extra))),
            "c1", check=False)
    canary.check()
    assert cp.returncode == 0 and cp.stdout.strip() == "a:c8", (cp.stdout, cp.stderr)


@pytest.mark.parametrize("link", ["../../../../../..", "/", "."])
def test_dev_linked_to_the_root_is_a_clear_error(rt, bundle, rootfs, tmp_path, link):
    """A mount destination that resolves to the rootfs itself would bury the image (and with
    a host-relative reading, the host's directories): refused, naming the mount."""
    (rootfs / "dev").rename(rootfs / "olddev")
    (rootfs / "dev").symlink_to(link)
    b = bundle(["true"], _spec(rootfs))
    rt.root.mkdir(exist_ok=True)
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(rootfs))
    cp = rt("run", "-b", str(b), "c1", check=False)
    assert cp.returncode != 0
    assert "mounts[1]" in cp.stderr and "/dev resolves to the container's root" in cp.stderr, \
        cp.stderr
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(rootfs))) == before
    assert not (rt.root / "c1").exists()


def test_no_mount_namespace_mounts_go_with_the_container(rt, bundle, rootfs, canary, tmp_path):
    """Without a mount namespace the spec's mounts land in the host's; a symlinked destination
    still resolves inside the rootfs, and delete detaches exactly those mounts (by checked fd)."""
    _plant(rootfs, "/mnt", canary.dir, "abs")

    def extra(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
        c["linux"]["maskedPaths"] = []
        c["linux"]["readonlyPaths"] = []
        c["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs"}]
    cp = rt("run", "-b", str(bundle(["sh", "-c", "echo hi >/mnt/x/f && echo ok"],
                                    _spec(rootfs, extra=extra))), "c1", check=False)
    canary.check()
    assert cp.returncode == 0 and "ok" in cp.stdout, cp.stderr
    with open("/proc/self/mountinfo") as f:
        assert not any(str(rootfs) in line for line in f)
