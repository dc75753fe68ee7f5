"""A one-call demo of isle-runtime: busybox bundle from Debian's busybox-static, then `run` it.

    from isle.runtime.demo import run_demo
    run_demo()        # prints namespaces, hostname, pid 1, uid map, exit code; returns the code
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["run_demo", "make_rootfs", "busybox_binary"]

SCRIPT = ('echo "  hostname inside : $(hostname)"; echo "  pid inside      : $$"; '
          'echo "  uid inside      : $(id -u)"; '
          'echo "  uid map         : $(cat /proc/self/uid_map | tr -s \' \')"; '
          'echo "  processes seen  : $(ls /proc | grep -c \'^[0-9]\')"; '
          'echo "  root read-only  : $(touch /x 2>/dev/null && echo no || echo yes)"; exit 42')


def busybox_binary(cache: str) -> str:
    """/bin/busybox when it is Debian's static one; else extract busybox-static's .deb."""
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                head = f.read(4096)
            if b"/lib64/ld-linux" not in head and b"/lib/ld-" not in head:  # static: no interp
                return p
    from isle.sys.proc import run

    out = os.path.join(cache, "busybox-static")
    binary = os.path.join(out, "bin", "busybox")
    if not os.path.exists(binary):
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryDirectory() as d:
            run(["apt-get", "download", "busybox-static"], cwd=d, timeout=300)
            deb = [f for f in os.listdir(d) if f.endswith(".deb")][0]
            run(["dpkg-deb", "-x", os.path.join(d, deb), out], timeout=120)
    return binary


def make_rootfs(d: str, busybox: str | None = None) -> str:
    """A minimal rootfs in d: busybox, its applets as symlinks, /etc/passwd and group."""
    from isle.sys.proc import run

    bb = busybox or busybox_binary(os.path.dirname(os.path.abspath(d)))
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
                "var/tmp", "run"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(os.path.join(d, "tmp"), 0o1777)
    shutil.copy2(bb, os.path.join(d, "bin", "busybox"))
    for applet in run([bb, "--list-full"], timeout=30).stdout.decode().split():
        if applet == "bin/busybox":
            continue
        link = os.path.join(d, applet)
        if not os.path.lexists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink("/bin/busybox", link)
    with open(os.path.join(d, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(d, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return d


def _runtime_path() -> str:
    cand = os.path.join(os.path.dirname(sys.executable), "isle-runtime")
    return cand if os.path.exists(cand) else (shutil.which("isle-runtime") or "isle-runtime")


def run_demo(cache: str | None = None, echo: Callable[[str], None] = print) -> int:
    """Build (once, under cache) and run a busybox container; print what happened."""
    from isle.config import Settings
    from isle.oci.runtime_spec import default_spec
    from isle.sys.proc import run

    cache = cache or os.path.join(Settings().cache, "runtime-demo")
    os.makedirs(cache, exist_ok=True)
    os.chmod(cache, 0o755)  # the user-namespaced root must reach the rootfs
    rootfs = os.path.join(cache, "rootfs")
    if not os.path.exists(os.path.join(rootfs, "bin", "busybox")):
        echo(f"building a busybox rootfs from Debian's busybox-static in {rootfs}")
        make_rootfs(rootfs, busybox_binary(cache))
    bundle = os.path.join(cache, "bundle")
    os.makedirs(bundle, exist_ok=True)
    cfg = default_spec()
    cfg["root"] = {"path": rootfs, "readonly": True}
    cfg["hostname"] = "isle-demo"
    cfg["process"].update(terminal=False, args=["sh", "-c", SCRIPT])
    lx = cfg["linux"]
    if os.geteuid() == 0:
        lx["namespaces"].append({"type": "user"})
        lx["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    cid = f"isle-demo-{os.getpid()}"
    root = os.path.join(tempfile.gettempdir(), "isle-runtime-demo")
    rt = _runtime_path()
    echo(f"$ {rt} --root {root} run --bundle {bundle} {cid}")
    echo(f"  namespaces      : {', '.join(n['type'] for n in lx['namespaces'])}")
    cp = run([rt, "--root", root, "run", "--bundle", bundle, cid], timeout=60, check=False)
    for line in cp.stdout.decode().splitlines():
        echo(line)
    if cp.returncode not in (0, 42):
        echo(cp.stderr.decode().strip())
    echo(f"  exit code       : {cp.returncode} (the container's own; the script exits 42)")
    return cp.returncode
