"""Set up the peers isle is measured and tested against, each in its own scratch directory.

Benchmarks and tests need nothing outside the repository: this module makes a busybox rootfs,
a private podman configuration, a crun wrapper for hybrid cgroup hosts and a private dockerd, with
this machine kind's workarounds (see each function). Everything it starts or writes lives under the
directory it is given; callers remove it.

    from peers import busybox_rootfs, podman_prefix, crun_hybrid, Dockerd
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["busybox_rootfs", "podman_prefix", "crun_hybrid", "Dockerd"]


def busybox_rootfs(d: str | os.PathLike[str]) -> str:
    """A minimal rootfs in d from Debian's busybox-static: applets as symlinks, /etc basics."""
    bb = shutil.which("busybox")
    if bb is None:
        raise RuntimeError("busybox is not installed (Debian's busybox-static: scripts/setup)")
    root = Path(d)
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
                "var/tmp", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "var/tmp"):
        os.chmod(root / sub, 0o1777)
    shutil.copy2(bb, root / "bin" / "busybox")
    applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for p in applets:
        if p == "bin/busybox":
            continue
        link = root / p
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/bin/busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return str(root)


def podman_prefix(d: str | os.PathLike[str]) -> list[str]:
    """argv prefix for a podman with private storage, runroot and config under d.

    This machine kind has no CAP_SYS_RESOURCE: podman's default nofile/nproc rlimits exceed the
    hard limits and fail, so smaller ones are configured; runc and cgroupfs as the host allows."""
    base = Path(d).resolve()
    for sub in ("storage", "run", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    conf = base / "containers.conf"
    conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{base}/events.log"\n')
    return ["env", f"CONTAINERS_CONF={conf}", "podman", "--root", f"{base}/storage",
            "--runroot", f"{base}/run", "--tmpdir", f"{base}/tmp"]


def crun_hybrid(d: str | os.PathLike[str]) -> str:
    """Path of a crun wrapper that works on hybrid cgroup hosts.

    crun refuses a hybrid layout when the cgroup2 mount lists controllers; hiding that file in a
    private mount namespace is enough."""
    p = Path(d) / "crun-hybrid"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        "#!/bin/sh\n"
        'e=$(mktemp)\n'
        "exec unshare -m --propagation private sh -c 'mount --bind \"$0\" "
        "/sys/fs/cgroup/unified/cgroup.controllers && rm -f \"$0\" && exec crun \"$@\"' "
        '"$e" "$@"\n')
    p.chmod(0o755)
    return str(p)


class Dockerd:
    """A real Docker engine (Debian's docker.io) with its own roots under d, no iptables changes.

    Stopped by its pid (never by name), so another dockerd on the host is left alone."""

    def __init__(self, d: str | os.PathLike[str]) -> None:
        self.dir = Path(d).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = self.dir / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Dockerd:
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd is not installed (Debian's docker.io: scripts/setup)")
        log = open(self.dir / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", self.host, "--data-root", str(self.dir / "root"),
             "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "dockerd.pid"),
             "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"dockerd did not start: see {self.dir / 'dockerd.log'}")
            time.sleep(0.1)
        return self

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # python bench/peers.py busybox-rootfs DIR | podman-env DIR
    import sys

    what, where = sys.argv[1], sys.argv[2]
    if what == "busybox-rootfs":
        print(busybox_rootfs(where))
    elif what == "podman-env":
        print(" ".join(podman_prefix(where)))
    elif what == "crun-hybrid":
        print(crun_hybrid(where))
    else:
        raise SystemExit(f"unknown peer {what!r}: busybox-rootfs, podman-env or crun-hybrid")
