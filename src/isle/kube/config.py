"""containerd's configuration for a node with isle's runtime handlers, and its CNI network.

    >>> n = Node.system()
    >>> 'runtimes."isle-vm"' in containerd_config(n)
    True

Pure: paths in, text out. A ``Node`` is either the system's containerd (``Node.system()``: the
paths a Debian/Kubernetes node uses) or a private one under one directory (``Node.under(DIR)``:
root, state, socket, CNI config, IPAM leases and netns mounts all inside DIR, so that stopping it
and removing DIR leaves nothing behind).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

__all__ = ["Node", "HANDLERS", "PAUSE_IMAGE", "containerd_config", "cni_conflist",
           "runtime_binary"]

#: the sandbox (pause) image isle makes offline and imports (kube/pause.py)
PAUSE_IMAGE = "localhost/isle/pause:1.0"
#: CRI runtime handler name -> OCI runtime binary name (all through containerd's runc shim)
HANDLERS = {"runc": "runc", "isle": "isle-runtime", "isle-vm": "isle-vm-runtime"}
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins


def runtime_binary(name: str) -> str:
    """The absolute path of an OCI runtime binary: next to this interpreter (isle's venv) first,
    then PATH. containerd's shim execs BinaryName with its own PATH, so it must be absolute."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(here, os.X_OK):
        return here
    return shutil.which(name) or name


def _has_sys_resource() -> bool:
    try:
        with open("/proc/self/status") as f:
            eff = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return True
    return bool(eff >> 24 & 1)  # CAP_SYS_RESOURCE


@dataclass(frozen=True)
class Node:
    root: str
    state: str
    socket: str
    cni_conf_dir: str
    cni_ipam_dir: str
    runtime_root: str          # the shim's runtime --root, one subdirectory per handler
    bridge: str = "isle-cni0"
    subnet: str = "10.233.0.0/24"
    private: bool = False
    registries: tuple[str, ...] = ()   # host:port served over plain HTTP (test registries)
    #: (registry name, host:port): pulls of NAME/... go to http://HOST:PORT/... (offline tests)
    mirrors: tuple[tuple[str, str], ...] = ()
    #: containerd keeps oom_score_adj at or above its own: needed where containerd lacks
    #: CAP_SYS_RESOURCE (runc cannot lower a pod's score then, and sandboxes ask for -998)
    restrict_oom_score_adj: bool = False
    binaries: dict[str, str] = field(default_factory=dict)
    #: where the pods' cgroups go (cgroupfs driver): containerd's CRI gives a pod that names no
    #: cgroup_parent (crictl, critest) /<its namespace>/<id>, and runc makes that parent and
    #: never removes it; a kubelet names its own (kubepods). ``down`` removes it once empty
    cgroup_parent: str = "/k8s.io"

    @classmethod
    def system(cls, registries: tuple[str, ...] = (),
               mirrors: tuple[tuple[str, str], ...] = ()) -> Node:
        return cls(root="/var/lib/containerd", state="/run/containerd",
                   socket="/run/containerd/containerd.sock", cni_conf_dir="/etc/cni/net.d",
                   cni_ipam_dir="/var/lib/cni/networks", runtime_root="/run/containerd/runc",
                   registries=registries, mirrors=mirrors,
                   restrict_oom_score_adj=not _has_sys_resource(),
                   binaries={h: runtime_binary(b) for h, b in HANDLERS.items()})

    @classmethod
    def under(cls, d: str, registries: tuple[str, ...] = (),
              mirrors: tuple[tuple[str, str], ...] = ()) -> Node:
        """Everything under d; the bridge name and /24 derive from d, so two private nodes on
        one host neither share a bridge nor overlap."""
        d = os.path.abspath(d)
        h = hashlib.sha256(d.encode()).digest()
        return cls(root=f"{d}/root", state=f"{d}/state", socket=f"{d}/containerd.sock",
                   cni_conf_dir=f"{d}/cni/net.d", cni_ipam_dir=f"{d}/cni/ipam",
                   runtime_root=f"{d}/runtimes", bridge="isk" + h[:4].hex(),
                   subnet=f"10.233.{h[4] % 250 + 1}.0/24", private=True, registries=registries,
                   mirrors=mirrors,
                   restrict_oom_score_adj=not _has_sys_resource(),
                   binaries={hd: runtime_binary(b) for hd, b in HANDLERS.items()})

    @property
    def network_name(self) -> str:
        return "isle-kube-" + self.bridge if self.private else "isle-kube"


def _s(v: str) -> str:
    return json.dumps(v)  # a TOML basic string is a JSON string


def containerd_config(n: Node) -> str:
    """containerd 1.6/1.7 config.toml (version 2): the CRI plugin with handlers runc, isle and
    isle-vm, each through the runc shim (io.containerd.runc.v2) with its own BinaryName."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    out = [
        "# containerd for a node running isle's runtimes (made by `isle kube config`)",
        "version = 2",
        f"root = {_s(n.root)}",
        f"state = {_s(n.state)}",
        'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", '
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
        '"io.containerd.snapshotter.v1.aufs"]',
        "",
        "[grpc]",
        f"  address = {_s(n.socket)}",
        "[ttrpc]",
        f"  address = {_s(n.socket + '.ttrpc')}",
        "[debug]",
        '  level = "info"',
    ]
    if n.private:
        d = os.path.dirname(n.socket)
        out += ["[metrics]", '  address = ""',
                '[plugins."io.containerd.internal.v1.opt"]', f"  path = {_s(d + '/opt')}"]
    out += [
        "",
        f"[{cri}]",
        f"  sandbox_image = {_s(PAUSE_IMAGE)}",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  enable_selinux = false",
        f"  restrict_oom_score_adj = {'true' if n.restrict_oom_score_adj else 'false'}",
        "  max_container_log_line_size = 16384",
        # a private node keeps its pods' netns mounts inside its state dir
        f"  netns_mounts_under_state_dir = {'true' if n.private else 'false'}",
        f"  [{cri}.containerd]",
        '    default_runtime_name = "runc"',
        '    snapshotter = "overlayfs"',
    ]
    for handler in HANDLERS:
        rt = f'{cri}.containerd.runtimes."{handler}"' if "-" in handler else \
            f"{cri}.containerd.runtimes.{handler}"
        out += [
            f"    [{rt}]",
            '      runtime_type = "io.containerd.runc.v2"',
            # isle-vm-runtime reads the CRI's container-type/sandbox-id annotations (always
            # passed); pod annotations under io.isle.* reach the runtime too
            '      pod_annotations = ["io.isle.*"]',
            '      container_annotations = ["io.isle.*"]',
            f"      [{rt}.options]",
            f"        BinaryName = {_s(n.binaries.get(handler, HANDLERS[handler]))}",
            f"        Root = {_s(os.path.join(n.runtime_root, handler))}",
            "        SystemdCgroup = false",
        ]
    out += [
        f"  [{cri}.cni]",
        f"    bin_dir = {_s(CNI_BIN_DIR)}",
        f"    conf_dir = {_s(n.cni_conf_dir)}",
        "    max_conf_num = 1",
    ]
    for reg in n.registries:
        out += [f'  [{cri}.registry.mirrors."{reg}"]',
                f"    endpoint = [{_s('http://' + reg)}]",
                f'  [{cri}.registry.configs."{reg}".tls]',
                "    insecure_skip_verify = true"]
    for name, reg in n.mirrors:
        out += [f'  [{cri}.registry.mirrors."{name}"]',
                f"    endpoint = [{_s('http://' + reg)}]"]
    return "\n".join(out) + "\n"


def cni_conflist(n: Node) -> dict[str, object]:
    """A bridge network with host-local IPAM (leases under n.cni_ipam_dir) and portmap for
    hostPorts: Debian's containernetworking-plugins only. The loopback plugin is not in the
    chain (its result would replace the pod's address): containerd runs it itself, from the
    same bin_dir, for every pod."""
    import ipaddress

    net = ipaddress.ip_network(n.subnet)
    return {
        "cniVersion": "1.0.0",
        "name": n.network_name,
        "plugins": [
            {"type": "bridge", "bridge": n.bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": n.cni_ipam_dir,
                      "ranges": [[{"subnet": str(net),
                                   "gateway": str(net.network_address + 1)}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
