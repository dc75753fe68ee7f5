"""A private containerd node under one directory: ``isle kube up --dir DIR`` / ``down``.

Layout of DIR (0700): config.toml, containerd.sock, containerd.pid, containerd.log, root/,
state/, runtimes/<handler>/ (each OCI runtime's --root), cni/net.d/ (the conflist), cni/ipam/
(host-local's leases), pause + pause.tar (the sandbox image, imported into namespace k8s.io).

``down`` leaves nothing on the host: the pods are removed through the CRI when crictl is at hand
(which runs CNI DEL and stops the shims), then whatever is left is taken apart by hand: every
container the handlers' runtimes still list is deleted with --force, CNI DEL is run from
libcni's cache for each attachment of this node's network, containerd and its shims are
stopped by pid, every mount under DIR is detached, the leases and the bridge are removed, and
the cgroups of the node's containers (named by their ids, under the node's cgroup parent) in every
hierarchy, then that parent itself when it is empty (runc makes /k8s.io and never removes it).
``leftovers(DIR)`` lists what of the node is still on the host (empty after ``down``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time

from isle.errors import ConfigError, InvalidState
from isle.kube.config import CNI_BIN_DIR, PAUSE_IMAGE, Node, cni_conflist, containerd_config
from isle.sys import proc

__all__ = ["up", "down", "status", "leftovers", "crictl_path", "cgroup_hierarchies", "CNI_CACHE"]

CNI_CACHE = "/var/lib/cni/results"  # libcni's cache (containerd does not move it)
NAMESPACE = "k8s.io"


def crictl_path() -> str | None:
    """crictl from PATH, else the one scripts/critest builds."""
    return proc.which("crictl") or next(
        (p for p in ("/var/tmp/isle-critest/bin/crictl",) if os.access(p, os.X_OK)), None)


def _pid(d: str) -> int | None:
    try:
        with open(os.path.join(d, "containerd.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"containerd" not in f.read().split(b"\0")[0]:
                return None
    except OSError:
        return None
    return pid


def status(d: str) -> dict[str, object]:
    """Whether the node in d is up; when it is not, also what of it is left on the host
    (leftovers: empty after a clean ``down``)."""
    d = os.path.abspath(d)
    pid = _pid(d)
    out: dict[str, object] = {"dir": d, "pid": pid, "running": pid is not None,
                              "socket": os.path.join(d, "containerd.sock")}
    if pid is None:
        out["leftovers"] = leftovers(d)
    return out


def _ctr(n: Node, *args: str, timeout: float = 60) -> bytes:
    return proc.run(["ctr", "-a", n.socket, "-n", NAMESPACE, *args], timeout=timeout).stdout


def up(d: str, registries: tuple[str, ...] = (), wait: float = 30,
       mirrors: tuple[tuple[str, str], ...] = ()) -> Node:
    """Start a private containerd with isle's handlers under d; returns once its CRI answers and
    the pause image is imported. Undone (down) if any step fails."""
    d = os.path.abspath(d)
    if proc.which("containerd") is None or proc.which("ctr") is None:
        raise ConfigError("", "isle kube needs containerd (Debian: containerd)")
    if not os.path.isfile(os.path.join(CNI_BIN_DIR, "bridge")):
        raise ConfigError("", f"isle kube needs the CNI plugins in {CNI_BIN_DIR} "
                              "(Debian: containernetworking-plugins)")
    if _pid(d) is not None:
        raise InvalidState(f"a containerd is already up in {d} (isle kube down --dir {d})")
    if len(os.path.join(d, "containerd.sock.ttrpc")) > 100:
        raise ConfigError("--dir", f"{d}: too long for a unix socket path (at most ~90 characters)")
    n = Node.under(d, registries, mirrors)
    for sub in ("", "cni/net.d", "cni/ipam", "runtimes", "opt"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    with open(os.path.join(d, "config.toml"), "w") as f:
        f.write(containerd_config(n))
    with open(os.path.join(n.cni_conf_dir, "10-isle.conflist"), "w") as f:
        json.dump(cni_conflist(n), f, indent=2)
    from isle.kube.pause import build_pause, pause_archive

    archive = os.path.join(d, "pause.tar")
    pause_archive(build_pause(os.path.join(d, "pause")), archive)
    log = open(os.path.join(d, "containerd.log"), "ab")
    try:
        p = proc.spawn(["containerd", "--config", os.path.join(d, "config.toml")],
                       stdin=open(os.devnull, "rb"), stdout=log, stderr=log,
                       start_new_session=True, cwd=d)
    finally:
        log.close()
    with open(os.path.join(d, "containerd.pid"), "w") as f:
        f.write(f"{p.pid}\n")
    try:
        end = time.monotonic() + wait
        while True:
            if p.poll() is not None:
                raise ConfigError("", f"containerd exited ({p.returncode}) at start: "
                                  + _tail(os.path.join(d, "containerd.log")))
            if os.path.exists(n.socket):
                try:
                    _ctr(n, "version", timeout=5)
                    break
                except Exception:
                    pass
            if time.monotonic() > end:
                raise ConfigError("", f"containerd did not answer on {n.socket} within {wait:.0f}s")
            time.sleep(0.05)
        _ctr(n, "images", "import", "--no-unpack=false", archive, timeout=120)
        _ctr(n, "images", "label", PAUSE_IMAGE, "io.cri-containerd.pinned=pinned", timeout=30)
    except BaseException:
        down(d)
        raise
    return n


def _tail(path: str, n: int = 800) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _procs_with(needle: bytes) -> list[int]:
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                if needle in f.read():
                    out.append(int(e))
        except OSError:
            pass
    return out


def _stop(pid: int, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            # reap it if it is our child (isle kube up in this process), else poll /proc
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    from isle.sys.procfs import state

    return state(pid) in (None, "Z", "X")


def _cni_del(n: Node) -> None:
    """CNI DEL for every cached attachment of this node's network (libcni's cache): releases the
    lease, the masquerade and hostport rules, the veth."""
    try:
        names = os.listdir(CNI_CACHE)
    except OSError:
        return
    for name in names:
        if not name.startswith(n.network_name + "-"):
            continue
        path = os.path.join(CNI_CACHE, name)
        try:
            with open(path) as f:
                cache = json.load(f)
            conf = json.loads(base64.b64decode(cache["config"]))
        except (OSError, ValueError, KeyError):
            continue
        if conf.get("name") != n.network_name:
            continue
        args = ";".join(f"{k}={v}" for k, v in cache.get("cniArgs") or [])
        caps = cache.get("capabilityArgs") or {}
        for plugin in reversed(conf.get("plugins") or []):
            stdin = dict(plugin, name=conf["name"], cniVersion=conf.get("cniVersion"))
            want = {k: v for k, v in caps.items() if (plugin.get("capabilities") or {}).get(k)}
            if want:
                stdin["runtimeConfig"] = want
            if cache.get("result"):
                stdin["prevResult"] = cache["result"]
            env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": cache.get("containerId", ""),
                   "CNI_NETNS": "", "CNI_IFNAME": cache.get("ifName", "eth0"),
                   "CNI_PATH": CNI_BIN_DIR, "CNI_ARGS": args, "PATH": os.environ.get("PATH", "")}
            proc.run([os.path.join(CNI_BIN_DIR, plugin["type"])], check=False, timeout=30,
                     input=json.dumps(stdin).encode(), env=env)
        try:
            os.unlink(path)
        except OSError:
            pass


def _iptables_cleanup(network: str) -> None:
    """Remove the nat rules CNI's bridge (ipMasq) and portmap plugins left for the network so
    named, and the CNI-* chains they jump to. Their DEL removes them only when
    it is given the pod's netns (it reads the addresses there), which a half-stopped pod lacks."""
    import shlex

    if proc.which("iptables") is None:
        return
    for tool in ("iptables", "ip6tables"):
        out = proc.run([tool, "-w", "-t", "nat", "-S"], check=False, timeout=30)
        if out.returncode != 0:
            continue
        chains: set[str] = set()
        for line in out.stdout.decode(errors="replace").splitlines():
            # iptables -S prints the comment as "name: \"NET\" id: \"ID\""
            if not line.startswith("-A ") or ('name: \\"' + network + '\\"') not in line:
                continue
            try:
                args = shlex.split(line)
            except ValueError:
                continue
            if "-j" in args:
                target = args[args.index("-j") + 1]
                if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
                    chains.add(target)
            proc.run([tool, "-w", "-t", "nat", "-D", *args[1:]], check=False, timeout=30)
        for c in chains:
            proc.run([tool, "-w", "-t", "nat", "-F", c], check=False, timeout=30)
            proc.run([tool, "-w", "-t", "nat", "-X", c], check=False, timeout=30)
        _hostport_base_cleanup(tool)


def _hostport_base_cleanup(tool: str) -> None:
    """portmap's shared CNI-HOSTPORT-* chains (made on first use, never removed by it): gone
    once no pod's DNAT chain hangs off them (nobody on this host uses CNI hostPorts then)."""
    import shlex

    out = proc.run([tool, "-w", "-t", "nat", "-S"], check=False, timeout=30)
    if out.returncode != 0:
        return
    lines = out.stdout.decode(errors="replace").splitlines()
    if any(ln.startswith("-A CNI-HOSTPORT-DNAT ") for ln in lines):
        return
    base = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")
    for ln in lines:
        if ln.startswith("-A ") and any(f"-j {b}" in ln for b in base) \
                and not ln.startswith("-A CNI-HOSTPORT-"):
            proc.run([tool, "-w", "-t", "nat", "-D", *shlex.split(ln)[1:]], check=False,
                     timeout=30)
    for b in base:
        if f"-N {b}" in lines:
            proc.run([tool, "-w", "-t", "nat", "-F", b], check=False, timeout=30)
            proc.run([tool, "-w", "-t", "nat", "-X", b], check=False, timeout=30)


def _is_id(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _node_ids(n: Node) -> set[str]:
    """The ids of the sandboxes and containers this node knows: containerd's CRI dirs, the runc
    shim's task dirs and each handler's runtime root (what is left of them after a crash too)."""
    cri = os.path.join(n.root, "io.containerd.grpc.v1.cri")
    bases = [os.path.join(cri, "sandboxes"), os.path.join(cri, "containers"),
             os.path.join(n.state, "io.containerd.runtime.v2.task", NAMESPACE)]
    bases += [os.path.join(n.runtime_root, h, NAMESPACE) for h in n.binaries]
    ids: set[str] = set()
    for b in bases:
        try:
            ids.update(e for e in os.listdir(b) if _is_id(e))
        except OSError:
            pass
    return ids


def cgroup_hierarchies(root: str = "/sys/fs/cgroup") -> list[str]:
    """The cgroup hierarchies mounted under root, by the host's setup (isle.cgroups'
    detect_setup): root itself on cgroup v2; every v1 hierarchy once (not again through an alias
    such as cpu -> cpu,cpuacct) and, on a hybrid host, root/unified as well."""
    from isle.cgroups import detect_setup
    from isle.cgroups.paths import v1_mounts

    setup = detect_setup(root)
    if setup == "v2":
        return [root]
    out = sorted(set(v1_mounts(root).values()))
    return out + [os.path.join(root, "unified")] if setup == "hybrid" else out


def _cgroup_dirs(rel: str, hierarchies: list[str]) -> list[str]:
    """The directories of cgroup rel (e.g. "/k8s.io") in those of hierarchies that have it."""
    out = [os.path.join(h, rel.strip("/")) for h in hierarchies]
    return [p for p in out if os.path.isdir(p)]


def _remove_cgroups(n: Node, ids: set[str], root: str = "/sys/fs/cgroup") -> None:
    """The cgroups of this node's containers (<parent>/<id>: a runtime's delete normally took
    them; a killed shim's container keeps its own), then the parent in each hierarchy where it is
    empty: a cgroup with tasks or children cannot be removed, so other nodes' pods keep it."""
    from isle.cgroups import remove_everywhere

    parent = n.cgroup_parent.strip("/")
    if not parent:
        return  # the node puts pods at the root: nothing of its own to remove
    hier = cgroup_hierarchies(root)
    for cid in sorted(ids):
        if _cgroup_dirs(f"{parent}/{cid}", hier):
            remove_everywhere(f"{parent}/{cid}", root=root, tries=50)
    for d in _cgroup_dirs(parent, hier):
        try:
            os.rmdir(d)  # EBUSY while anything (another node's pod) is under it
        except OSError:
            pass


def leftovers(d: str, ids: set[str] | None = None) -> dict[str, list[str]]:
    """What of the node in d is still on the host (by kind; empty after ``down``): containerd and
    shim processes, mounts under d, IPAM leases, libcni cache entries and nat rules of its
    network, its bridge, cgroups of its containers (ids: those known before down, with the ones
    still under d) and its cgroup parent when empty."""
    from isle.sys.procfs import mountpoints

    d = os.path.abspath(d)
    n = Node.under(d)
    ids = set(ids or ()) | _node_ids(n)
    out: dict[str, list[str]] = {}
    out["processes"] = [str(p) for p in _procs_with(n.socket.encode()) if not _zombie(p)]
    out["mounts"] = [m for m in mountpoints() if m == d or m.startswith(d + "/")]
    try:
        out["leases"] = [f for f in os.listdir(os.path.join(n.cni_ipam_dir, n.network_name))
                         if not f.startswith(("last_reserved_ip", "lock"))]
    except OSError:
        pass
    try:
        out["cni_cache"] = [f for f in os.listdir(CNI_CACHE)
                            if f.startswith(n.network_name + "-")]
    except OSError:
        pass
    if os.path.exists(f"/sys/class/net/{n.bridge}"):
        out["links"] = [n.bridge]
    if proc.which("iptables") is not None:
        nat = proc.run(["iptables", "-w", "-t", "nat", "-S"], check=False, timeout=30)
        tag = 'name: \\"' + n.network_name + '\\"'
        out["nat"] = [ln for ln in nat.stdout.decode(errors="replace").splitlines() if tag in ln]
    parent = n.cgroup_parent.strip("/")
    if parent:
        hier = cgroup_hierarchies()
        cg = [p for cid in sorted(ids) for p in _cgroup_dirs(f"{parent}/{cid}", hier)]
        cg += [p for p in _cgroup_dirs(parent, hier) if not any(
            os.path.isdir(os.path.join(p, e)) for e in os.listdir(p))]
        out["cgroups"] = cg
    return {k: v for k, v in out.items() if v}


def _unmount_under(d: str) -> None:
    from isle.sys.libc import MNT_DETACH, LinuxSyscalls
    from isle.sys.procfs import mountpoints

    sc = LinuxSyscalls()
    for mp in sorted((m for m in mountpoints() if m == d or m.startswith(d + "/")),
                     key=len, reverse=True):
        try:
            sc.umount2(mp, MNT_DETACH)
        except OSError:
            pass


def down(d: str, purge: bool = False) -> dict[str, list[str]]:
    """Stop the private containerd in d and remove everything it made on the host (see module
    doc). Safe to call again, and on a half-started node. purge: remove d as well.
    -> what could not be removed (leftovers; empty when all went)."""
    d = os.path.abspath(d)
    n = Node.under(d)
    ids = _node_ids(n)  # before anything goes: the cgroups are named by them
    pid = _pid(d)
    crictl = crictl_path()
    if pid is not None and crictl and os.path.exists(n.socket):
        ep = "unix://" + n.socket
        proc.run([crictl, "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s",
                  "rmp", "-fa"], check=False, timeout=120)
    # containers the shims still hold: delete them through their own runtime
    for handler, binary in n.binaries.items():
        root = os.path.join(n.runtime_root, handler)
        for sub in ([NAMESPACE] if os.path.isdir(os.path.join(root, NAMESPACE)) else []) + [""]:
            r = os.path.join(root, sub) if sub else root
            if not os.path.isdir(r):
                continue
            ls = proc.run([binary, "--root", r, "list", "-q"], check=False, timeout=30)
            for cid in ls.stdout.decode().split():
                if not sub and cid == NAMESPACE:
                    continue  # the namespace's own root, not a container (isle-runtime lists it)
                proc.run([binary, "--root", r, "delete", "--force", cid], check=False,
                         timeout=60)
    _cni_del(n)
    _iptables_cleanup(n.network_name)
    if pid is not None:
        _stop(pid, 10)
    needle = n.socket.encode()
    for shim in _procs_with(needle):  # containerd-shim-runc-v2 ... -address DIR/containerd.sock
        _stop(shim, 5)
    _unmount_under(d)
    _remove_cgroups(n, ids)
    proc.run(["ip", "link", "del", n.bridge], check=False, timeout=10)
    import shutil

    shutil.rmtree(n.cni_ipam_dir, ignore_errors=True)
    for f in ("containerd.pid", "containerd.sock", "containerd.sock.ttrpc"):
        try:
            os.unlink(os.path.join(d, f))
        except OSError:
            pass
    shutil.rmtree(n.state, ignore_errors=True)
    left = leftovers(d, ids)
    if purge:
        shutil.rmtree(d, ignore_errors=True)
    return left
