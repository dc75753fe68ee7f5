"""VM-isolated pods, Kata's way: one VM per pod sandbox, the pod's containers run inside it.

containerd's CRI marks each bundle with ``io.kubernetes.cri.container-type`` (``sandbox`` or
``container``) and ``io.kubernetes.cri.sandbox-id``. The sandbox (the pause container) boots the
pod's VM as any VM container does, connected to the pod's network namespace, with two additions:
a shared directory (``<root>/.pod-<sandbox id>``, a shared mount so what is bound under it later
reaches virtiofsd's own mount namespace) exported to the guest once over virtio-fs (tag
vm.job.POD_TAG), and more exec slots (POD_SLOTS). A container of that pod boots nothing: its
rootfs (and its directory mounts) are bound under ``<shared>/<cid>/`` on the host, and its process
runs in the pod's VM on an exec slot (vm.job.render_pod: its own root, mounts and spec applied by
isle-exec; the guest's network, hostname and IPC are the pod's, so its containers share
``localhost``).

The container's pid for containerd's runc shim is a host-side relay per container (like
``exec -d``): ``create`` leaves it waiting for ``start``; it then streams the process's stdio to
the fds the shim gave and exits with the process's exit code (recorded in <root>/<cid>/exit).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from typing import Any, Callable

from isle.errors import ConfigError, InvalidState, IsleError, NotFound, VMError
from isle.runtime.vm import state as st

__all__ = ["CONTAINER_TYPE", "SANDBOX_ID", "POD_SLOTS", "role", "member_of", "shared_dir",
           "setup_sandbox", "sandbox_config", "as_sandbox", "teardown_sandbox", "create",
           "start", "kill", "delete", "exec_in", "pids", "detached", "pod_tag", "seccomp_path"]

CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
#: exec slots of a pod's VM: each running container takes one, each exec another (the virtio
#: serial device has 31 ports: ctl, stdio, 3 per slot, a console)
POD_SLOTS = 8
START_TIMEOUT = 60.0
#: a pod's VM holds all its containers: at least this much memory (MiB) unless the sandbox's
#: spec asks more (128 MiB with 8 slots' ports ran out of memory at boot)
POD_MEMORY_MIB = 256


def role(annotations: dict[str, str] | None) -> tuple[str, str]:
    """("sandbox" | "container" | "", sandbox id) from the CRI's annotations."""
    ann = annotations or {}
    kind = ann.get(CONTAINER_TYPE, "")
    return (kind if kind in ("sandbox", "container") else "", ann.get(SANDBOX_ID, ""))


def member_of(root: str, cid: str) -> str:
    """The sandbox id when cid is a container running in its pod's VM under root, else ""."""
    try:
        s = st.load(root, cid)
    except (NotFound, ConfigError):
        return ""
    kind, sid = role(s.annotations)
    return sid if kind == "container" and not s.qemu_pid else ""


def shared_dir(root: str, sid: str) -> str:
    """The pod's shared directory (outside <root>/<sid>, whose removal must never reach it)."""
    return os.path.join(os.path.abspath(root), f".pod-{sid}")


def _sys() -> Any:
    from isle.sys.libc import LinuxSyscalls

    return LinuxSyscalls()


def guest_view(root: str, sid: str) -> str:
    """What the pod's VM is given of its shared directory: a read-only bind of it, in its peer
    group, so the binds the host makes under the shared directory later (each container's root
    and volumes, read-write mounts of their own) appear there too, while the directory itself and
    each container's entry stay read-only to the guest: guest root can never rename an entry or
    plant a symlink where the host makes, mounts or unmounts the next one."""
    return shared_dir(root, sid) + ".guest"


def setup_sandbox(root: str, sid: str) -> str:
    """Make the pod's shared directory: a mount of its own, shared, so binds made under it after
    virtiofsd started reach the guest; a marker the guest waits for; and the read-only view of
    it the guest gets (guest_view). The view's path."""
    from isle.sys.fs import private_dir
    from isle.sys.libc import MS_BIND, MS_RDONLY, MS_REMOUNT, MS_SHARED

    d, view = shared_dir(root, sid), guest_view(root, sid)
    private_dir(d)
    private_dir(view)
    sc = _sys()
    sc.mount(d, d, None, MS_BIND)
    sc.mount(None, d, None, MS_SHARED)
    with open(os.path.join(d, ".isle-pod"), "w"):
        pass
    sc.mount(d, view, None, MS_BIND)  # a bind of a shared mount: in its peer group
    # read-only at the top only, deliberately (as runc's classic, non-recursive read-only bind):
    # the containers' roots and volumes the host binds under d later reach the view as mounts
    # of their own and stay writable to the guest, which runs those containers
    # (tests/security/test_vm_pod_share.py)
    sc.mount(None, view, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    return view


def sandbox_config(root: str, sid: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The config a pod sandbox's VM is prepared from (before anything is rendered from it):
    cfg (not changed) with the pod's shared directory (setup_sandbox's guest view) as one more
    bind mount at spec.POD_SHARE, last, so its virtio-fs tag is the last of spec.shares_of (kept
    in <root>/<sid>/pod-tag for the containers). A share of the VM only: spec.to_job leaves it
    out of the sandbox's own process; the containers' scripts mount it (vm.job.render_pod).

    The CRI's host /dev/shm directory for the pod is left out: the pod's containers do not share
    it (each has a tmpfs of its own in the guest), nor does the sandbox then (the guest's standard
    tmpfs), and a share less lets the pod's VM clone a template (boot.template_wanted)."""
    from isle.runtime.vm import spec as vmspec
    from isle.runtime.vm.monitor import note

    try:
        view = setup_sandbox(root, sid)
        mounts = [m for m in cfg.get("mounts") or [] if m.get("destination") != "/dev/shm"]
        out = {**cfg, "mounts": [*mounts,
                                 {"type": "bind", "source": view,
                                  "destination": vmspec.POD_SHARE, "options": ["rbind", "rw"]}]}
        note(os.path.join(root, sid), "pod-tag", vmspec.shares_of(out)[-1][0])
    except BaseException:
        _remove_shared(root, sid)
        raise
    return out


def as_sandbox(p: Any) -> Any:
    """The Prepared VM of a pod sandbox (from sandbox_config's config) as the pod's VM: POD_SLOTS
    exec slots, POD_MEMORY_MIB at least, a pod VM's layout (Boot.pod: a PCIe slot the share is
    hot-plugged into when the VM starts as a template's clone, vm.snapshot.restore; a template
    unless refused or another share is there: boot.template_wanted)."""
    import dataclasses

    return dataclasses.replace(
        p, boot=dataclasses.replace(
            p.boot, slots=POD_SLOTS, pod=True, memory_mib=max(p.boot.memory_mib, POD_MEMORY_MIB)))


def _remove_shared(root: str, sid: str) -> None:
    """The guest's view first (its propagated copies of the containers' binds), then the
    shared directory."""
    view = guest_view(root, sid)
    _unmount_under(view)
    try:
        os.rmdir(view)
    except OSError:
        pass
    _remove_tree(shared_dir(root, sid))


def pod_tag(root: str, sid: str) -> str:
    """The virtio-fs tag of the pod's shared directory in its VM (sandbox_config noted it)."""
    from isle.vm.job import POD_TAG

    try:
        with open(os.path.join(root, sid, "pod-tag")) as f:
            return f.read().strip() or POD_TAG
    except OSError:
        return POD_TAG


def _unmount_under(path: str) -> None:
    """Detach every mount at or under path (deepest first), ours only."""
    from isle.sys import procfs
    from isle.sys.libc import MNT_DETACH

    sc = _sys()
    prefix = path.rstrip("/") + "/"
    for m in sorted((m for m in procfs.mountpoints() if m == path or m.startswith(prefix)),
                    key=len, reverse=True):
        try:
            sc.umount2(m, MNT_DETACH)
        except IsleError:
            pass


def _remove_tree(path: str) -> None:
    """rmtree only once nothing is mounted under path (a container's rootfs must never go)."""
    from isle.sys import procfs

    _unmount_under(path)
    prefix = path.rstrip("/") + "/"
    if any(m == path or m.startswith(prefix) for m in procfs.mountpoints()):
        print(f"isle-vm-runtime: {path}: still mounted, left in place", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def teardown_sandbox(root: str, sid: str) -> None:
    """After the pod's VM is gone: its containers' leftovers (relays, binds, state), then the
    shared directory."""
    for cid in st.list_ids(root):
        if cid != sid and member_of(root, cid) == sid:
            try:
                delete(cid, root, force=True)
            except IsleError as exc:
                print(f"isle-vm-runtime: {exc}", file=sys.stderr)
    _remove_shared(root, sid)


def _sandbox(root: str, sid: str, cid: str) -> st.State:
    if not sid:
        raise ConfigError(f"annotations.{SANDBOX_ID}",
                          f"container {cid} is a pod container without a sandbox id")
    try:
        s = st.load(root, sid)
    except NotFound:
        raise NotFound(f"pod sandbox {sid} of container {cid} does not run under {root}") from None
    if s.status not in ("running", "paused") or not s.rundir:
        raise InvalidState(f"pod sandbox {sid} of container {cid} is {s.status}, not running")
    return s


def _binds(cfg: dict[str, Any]) -> list[tuple[int, str, str, bool]]:
    """The container's directory mounts to bind under its shared directory: (n, source,
    destination, ro). The sandbox's /dev/shm is not one: the guest gives each its own tmpfs."""
    from isle.runtime.vm import spec as vmspec

    return [(n, src, dest, ro) for n, (_, src, dest, ro) in enumerate(vmspec.shares_of(cfg))
            if dest != "/dev/shm"]


def _job(cfg: dict[str, Any], cid: str, stdin: bool) -> Any:
    """The container's Job for its pod's VM: its seccomp copy kept per container in the guest;
    no network or hostname of its own (the pod's); /dev/shm a tmpfs of its own."""
    import dataclasses

    from isle.runtime.vm import spec as vmspec
    from isle.vm.job import STANDARD_MOUNTS

    job = vmspec.to_job(cfg, stdin=stdin)
    opts = list(job.spec_opts)
    for i, o in enumerate(opts[:-1]):
        if o in ("-W", "-S") and opts[i + 1] == vmspec.GUEST_SECCOMP:
            opts[i + 1] = seccomp_path(cid)
    mounts = list(job.mounts)
    if any(m.destination == "/dev/shm" for m in mounts):
        shm = next(m for m in STANDARD_MOUNTS if m.destination == "/dev/shm")
        mounts = [shm if m.destination == "/dev/shm" else m for m in mounts]
    return dataclasses.replace(job, spec_opts=tuple(opts), net=None, hostname="",
                               mounts=tuple(mounts))


def seccomp_path(cid: str) -> str:
    """Where a pod container's process keeps its seccomp program in the guest (for its execs)."""
    return f"/seccomp-{cid}.bpf"


def create(cid: str, bundle: str, root: str, pid_file: str | None = None) -> None:
    """A pod container: its rootfs bound into the pod's shared directory, a relay left waiting
    for `start` (its pid to pid_file)."""
    from isle.oci import runtime_spec
    from isle.runtime.vm import spec as vmspec
    from isle.runtime.vm.boot import stdin_wanted
    from isle.sys.libc import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT

    bundle = os.path.abspath(bundle)
    cfg = runtime_spec.load(os.path.join(bundle, "config.json"))
    ann = cfg.get("annotations") or {}
    sid = role(ann)[1]
    if (cfg.get("process") or {}).get("terminal"):
        raise ConfigError("process.terminal", "a terminal for a container in a VM pod is not "
                          "supported yet (exec -t is)")
    _sandbox(root, sid, cid)
    job = _job(cfg, cid, stdin_wanted(0))
    rootfs = vmspec.rootfs_path(cfg, bundle)
    binds = _binds(cfg)
    st.create_dir(root, cid)
    mine = os.path.join(shared_dir(root, sid), cid)
    sc = _sys()
    try:
        os.makedirs(os.path.join(mine, "rootfs"), mode=0o755)
        sc.mount(rootfs, os.path.join(mine, "rootfs"), None, MS_BIND | MS_REC)
        for n, src, _, ro in binds:
            dst = os.path.join(mine, f"m{n}")
            os.mkdir(dst, 0o755)
            sc.mount(src, dst, None, MS_BIND | MS_REC)
            if ro:
                sc.mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        s = st.State(id=cid, bundle=bundle, annotations=ann)
        st.save(root, s)
        relay = _spawn_relay(root, cid, sid, job, tuple((n, d, ro) for n, _, d, ro in binds))
    except BaseException:
        _remove_tree(mine)
        try:
            rundir = st.load(root, cid).rundir
        except IsleError:
            rundir = ""
        if os.path.basename(rundir).startswith("isle-pod-"):
            shutil.rmtree(rundir, ignore_errors=True)
        st.remove(root, cid)
        raise
    if pid_file:
        from isle.sys.fs import atomic_write

        atomic_write(pid_file, str(relay).encode(), durable=False)


def _spawn_relay(root: str, cid: str, sid: str, job: Any,
                 binds: tuple[tuple[int, str, bool], ...]) -> int:
    """Fork the container's relay (a new session, nobody's child but init's or the subreaper's);
    it listens on relay.sock in a short private directory (the state's rundir: a socket path
    under a CRI root with a 64-character id is too long) before its pid is returned."""
    from isle.vm.microvm import short_dir

    rundir = short_dir("isle-pod-")
    s = st.load(root, cid)
    s.rundir = rundir
    st.save(root, s)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    lsock.bind(os.path.join(rundir, "relay.sock"))
    lsock.listen(4)
    try:
        relay = detached(lambda: _relay(root, cid, sid, job, binds, lsock))
    finally:
        lsock.close()
    s = st.load(root, cid)
    s.status, s.pid, s.pid_start = "created", relay, st.starttime(relay)
    st.save(root, s)
    return relay


def detached(body: Callable[[], int]) -> int:
    """Run body in a daemon (a new session, double-forked: nobody's child but init's or the
    subreaper's, e.g. containerd's shim) that exits with body's return; the daemon's pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setsid()
            child = os.fork()
            if child:
                os.write(w, f"{child}".encode())
                os._exit(0)
            os.close(w)
            os._exit(body())
        finally:
            os._exit(1)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        text = f.read().strip()
    if not text.isdigit():
        raise VMError("a daemon process did not start")
    return int(text)


def _relay(root: str, cid: str, sid: str, job: Any, binds: tuple[tuple[int, str, bool], ...],
           lsock: socket.socket) -> int:
    """The relay's life: wait for `start`, run the process in the pod's VM, stream its stdio,
    record and return its exit code."""
    from isle.runtime.vm import control
    from isle.runtime.vm.monitor import note
    from isle.vm.job import render_pod

    tag = pod_tag(root, sid)

    def script(i: int) -> str:
        return render_pod(job, i, cid, binds, tag)

    sdir = os.path.join(root, cid)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    while True:
        conn, _ = lsock.accept()
        conn.settimeout(10)
        try:
            cmd = conn.recv(256).decode().split()
        except OSError:
            conn.close()
            continue
        if cmd == ["start"]:
            break
        conn.close()
    lsock.close()
    starter: list[socket.socket] = [conn]

    def started(slot: int) -> None:
        note(sdir, "slot", str(slot))
        s = st.load(root, cid)
        s.status = "running"
        st.save(root, s)
        for c in starter:
            try:
                c.sendall(b"ok\n")
            except OSError:
                pass
            c.close()
        starter.clear()

    try:
        code = control.exec_(sid, root, job, script=script, on_slot=started)
    except IsleError as exc:
        for c in starter:  # refused before it started: the start fails with the reason
            try:
                c.sendall(f"error {exc}\n".encode())
            except OSError:
                pass
            c.close()
        print(f"isle-vm-runtime: {exc}", file=sys.stderr)
        code = 255
    note(sdir, "exit", str(code))
    return code


def start(cid: str, root: str) -> None:
    s = st.load(root, cid)
    if s.status != "created":
        raise InvalidState(f"container {cid} is {s.status}, not created")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(START_TIMEOUT)
    try:
        sock.connect(os.path.join(s.rundir, "relay.sock"))
        sock.sendall(b"start\n")
        ans = sock.recv(4096).decode().strip()
    except OSError as exc:
        raise VMError(f"container {cid}: its relay does not answer ({exc})") from exc
    finally:
        sock.close()
    if ans != "ok":
        raise VMError(f"container {cid}: {ans.removeprefix('error ') or 'relay went away'}")


def _slot(root: str, cid: str) -> int:
    try:
        with open(os.path.join(root, cid, "slot")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def kill(cid: str, root: str, sig: int) -> None:
    """The signal to the container's process in the pod's VM: the first process of its pid
    namespace, as runc signals a container's init (SIGKILL ends them all; `kill --all` does no
    more); before start, to the relay (nothing runs in the guest yet)."""
    from isle.runtime.vm import control

    s = st.load(root, cid)
    if s.status not in ("created", "running", "paused"):
        raise InvalidState(f"container not running: {cid} is {s.status}")
    slot = _slot(root, cid)
    if s.status == "created" or not slot:
        st.signal_if_same(s.pid, s.pid_start, sig)
        return
    sb = _sandbox(root, role(s.annotations)[1], cid)
    control.ask(sb, f"xkill {slot} {sig} {cid}", timeout=10)


def delete(cid: str, root: str, force: bool = False) -> None:
    import time

    s = st.load(root, cid)
    if s.status in ("running", "paused") and not force:
        raise InvalidState(f"container {cid} is {s.status}: stop it or use --force")
    if st.pid_alive(s.pid, s.pid_start):
        try:
            kill(cid, root, signal.SIGKILL)
        except IsleError:
            pass
        for _ in range(200):  # the relay ends when the guest reports the process's end
            if not st.pid_alive(s.pid, s.pid_start):
                break
            time.sleep(0.02)
        st.signal_if_same(s.pid, s.pid_start, signal.SIGKILL)
    sid = role(s.annotations)[1]
    if sid:
        _remove_tree(os.path.join(shared_dir(root, sid), cid))
    if os.path.basename(s.rundir).startswith("isle-pod-"):
        shutil.rmtree(s.rundir, ignore_errors=True)
    st.remove(root, cid)


def exec_in(cid: str, root: str, job: Any, tty_fd: int = -1) -> int:
    """`exec` into a pod container: in its pod's VM, in its namespaces and root (isle-exec -J),
    with its seccomp."""
    import dataclasses

    from isle.runtime.vm import control
    from isle.runtime.vm import spec as vmspec
    from isle.vm.job import pod_ctr, render_exec

    s = st.load(root, cid)
    if s.status != "running":
        raise InvalidState(f"container {cid} is {s.status}, not running")
    opts = tuple(seccomp_path(cid) if o == vmspec.GUEST_SECCOMP else o for o in job.spec_opts)
    job = dataclasses.replace(job, spec_opts=opts)
    # `start` returns once the container's script was sent: an exec right after it waits (10 s
    # at most) until the process is in its own namespaces and root (isle-exec -N names it in
    # pod_ctr only then), then joins them
    ctr = pod_ctr(cid)
    wait = (f"n=0; while [ ! -e {ctr} ] && [ $n -lt 10000 ]; do n=$((n + 1));"
            " usleep 1000; done\n")
    return control.exec_(role(s.annotations)[1], root, job, tty_fd,
                         script=lambda i: wait + render_exec(job, i, ctr))


def pids(cid: str, root: str) -> list[int]:
    """`ps --format json`: the container's host-side process (its relay) while it runs."""
    s = st.load(root, cid)
    return [s.pid] if st.pid_alive(s.pid, s.pid_start) else []
