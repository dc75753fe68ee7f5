"""OCI config.json -> what a microVM runs (a vm.job.Job) and how big it is (vcpus, memory).

The spec is applied inside the guest by isle-exec (vm/guest/isle-exec.c, which says why a static
helper): ``guest_opts`` turns the parts the shell job does not do (capabilities, seccomp compiled
to BPF here with runtime/seccomp, umask, oom_score_adj, /dev and its devices, sysctl, domainname,
masked and read-only paths, read-only root, a user namespace's id maps) into its options,
validated here so that bad input fails on the host with the field named, before any VM boots.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import math
import os
import resource
from typing import Any

from isle.errors import ConfigError
from isle.vm.job import USER_DNS, USER_NET, GuestMount, GuestNet, Job

__all__ = [
    "to_job",
    "exec_job",
    "guest_opts",
    "shares_of",
    "share_name",
    "net_of",
    "vm_size",
    "rootfs_path",
    "MIN_MEMORY_MIB",
    "DEFAULT_MEMORY_MIB",
    "ANNOTATION",
    "host_resources",
    "QEMU_MEMORY_OVERHEAD_MIB",
    "QEMU_THREADS",
    "POD_SHARE",
]

ANNOTATION = "org.isle.isolation"
MIN_MEMORY_MIB = 64
DEFAULT_MEMORY_MIB = 128
#: where the container's process (isle-exec -W) keeps its seccomp program in the guest, outside
#: the container's root, for exec'd processes (-S): a missing copy fails the exec (never unfiltered)
GUEST_SECCOMP = "/seccomp.bpf"
#: the destination of a pod sandbox's share of the pod's directory (runtime.vm.pod.sandbox_config):
#: a virtio-fs share of the VM, never a mount of the sandbox's own process (to_job leaves it out)
POD_SHARE = "/.isle-pod"


def rootfs_path(cfg: dict[str, Any], bundle: str) -> str:
    p = str(cfg.get("root", {}).get("path", "rootfs"))
    p = p if os.path.isabs(p) else os.path.join(bundle, p)
    if not os.path.isdir(p):
        raise ConfigError("root.path", f"{p} is not a directory")
    return p


FILE_LIMIT = 64 * 1024


def _files(cfg: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Bind mounts of small text files (hosts, resolv.conf, hostname): their content, copied in."""
    out = []
    for m in cfg.get("mounts", []):
        opts = m.get("options", [])
        if m.get("type") not in ("bind", None, "") and "bind" not in opts and "rbind" not in opts:
            continue
        src = m.get("source", "")
        try:
            if not os.path.isfile(src) or os.path.getsize(src) > FILE_LIMIT:
                continue
            with open(src, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if "\0" not in text:
            out.append((m["destination"], text))
    return tuple(out)


def net_of(cfg: dict[str, Any]) -> tuple[str, str, str, GuestNet | None]:
    """(kind "" | "tap" | "user", tap name, mac, guest config) from org.isle.vm.net* annotations.

    The engine makes the tap and leases the address (isle.net.NetworkManager.attach_tap), then says:
    org.isle.vm.net=tap:NAME, org.isle.vm.net.address=CIDR, .gateway=IP, .mac=MAC.
    org.isle.vm.net=user gives QEMU user networking (no host setup, outbound only).
    """
    ann = cfg.get("annotations") or {}
    v = ann.get("org.isle.vm.net", "")
    if not v or v == "none":
        return "", "", "", None
    mac = ann.get("org.isle.vm.net.mac", "")
    if v == "user":
        return "user", "", mac, USER_NET
    if not v.startswith("tap:") or not v[4:]:
        raise ConfigError("annotations.org.isle.vm.net", f"{v!r} is not none, user or tap:NAME")
    addr = ann.get("org.isle.vm.net.address", "")
    try:
        ipaddress.ip_interface(addr)
    except ValueError:
        raise ConfigError(
            "annotations.org.isle.vm.net.address", f"{addr!r} is not an address/prefix"
        ) from None
    return (
        "tap",
        v[4:],
        mac,
        GuestNet(address=addr, gateway=ann.get("org.isle.vm.net.gateway", ""), mac=mac),
    )


def _is_bind(m: dict[str, Any]) -> bool:
    opts = m.get("options") or []
    return m.get("type") in ("bind", None, "") or "bind" in opts or "rbind" in opts


def shares_of(cfg: dict[str, Any]) -> tuple[tuple[str, str, str, bool], ...]:
    """Bind mounts of host directories (volumes, -v DIR:...): (tag, source, destination, ro),
    shared over virtio-fs; the guest mounts tag at destination."""
    out: list[tuple[str, str, str, bool]] = []
    for m in cfg.get("mounts", []):
        src, dest = m.get("source", ""), m.get("destination", "")
        if dest and _is_bind(m) and os.path.isdir(src):
            out.append((f"isle{len(out)}", os.path.realpath(src), dest,
                        "ro" in (m.get("options") or [])))
    return tuple(out)


def share_name(source: str, destination: str) -> str:
    """The name a share serves its directory under (virtiofs.FsShare.expose): its base name, so
    that the guest's mountinfo names the directory as a host bind mount would; "" (the directory
    is the share's root) for isle's own plumbing (destinations under /.isle, e.g. a pod's share)."""
    if destination.startswith("/.isle"):
        return ""
    return os.path.basename(source.rstrip("/"))


def to_job(cfg: dict[str, Any], *, stdin: bool = False) -> Job:
    p = cfg.get("process")
    if not p or not p.get("args"):
        raise ConfigError("process.args", "a VM runs one process: process.args must not be empty")
    if (cfg.get("hooks") or {}).get("startContainer"):  # the others run on the host (runner)
        raise ConfigError("hooks.startContainer", "not supported for a VM: these run a binary of "
                          "the container's inside its namespaces, which are the guest's")
    user = p.get("user", {})
    rl = []
    for i, r in enumerate(p.get("rlimits", [])):
        num = getattr(resource, r.get("type", ""), None)
        if num is None:
            raise ConfigError(f"process.rlimits[{i}].type", f"unknown rlimit {r.get('type')!r}")
        rl.append((int(num), int(r.get("soft", 0)), int(r.get("hard", 0))))
    size = p.get("consoleSize") or {}
    try:
        console = (int(size.get("height") or 0), int(size.get("width") or 0))
    except (TypeError, ValueError, AttributeError):
        raise ConfigError("process.consoleSize", "height and width must be numbers") from None
    shares = {dest: (tag + ("/" + share_name(src, dest) if share_name(src, dest) else ""), ro)
              for tag, src, dest, ro in shares_of(cfg)}
    mounts = []
    for m in cfg.get("mounts", []):
        dest = m.get("destination")
        if not dest or dest == POD_SHARE:
            continue
        if dest in shares and _is_bind(m):  # in spec order: a share may sit inside a tmpfs
            tag, ro = shares[dest]
            mounts.append(GuestMount(type="virtiofs", destination=dest, source=tag,
                                     options=("ro",) if ro else ()))
        elif m.get("type") != "bind":
            mounts.append(GuestMount(
                type=m.get("type", ""),
                destination=dest,
                source=m.get("source", "none"),
                options=tuple(m.get("options", [])),
            ))
    return Job(
        args=tuple(p["args"]),
        env=tuple(p.get("env", [])),
        cwd=p.get("cwd", "/") or "/",
        uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        additional_gids=tuple(int(g) for g in user.get("additionalGids", [])),
        hostname=cfg.get("hostname", ""),
        rlimits=tuple(rl),
        no_new_privs=bool(p.get("noNewPrivileges", False)),
        mounts=tuple(mounts),
        stdin=stdin,
        net=net_of(cfg)[3],
        files=_files(cfg) + _user_dns(cfg),
        spec_opts=guest_opts(cfg),
        console_size=console if min(console) > 0 else (0, 0),
    )


def exec_job(cfg: dict[str, Any], process: dict[str, Any], *, stdin: bool = False) -> Job:
    """The Job for one more process in a running VM container (``exec``), by runc's rule: the
    container's seccomp filter always (a process has no seccomp of its own); the container's
    capabilities and rlimits unless the process brings its own; no_new_privs, user, groups, cwd
    and env as the process says. Only the process's parts otherwise: /dev, masked and read-only
    paths, the read-only root and sysctls were applied once, by the container's process, in the
    mount table and kernel the exec'd process shares: it joins that process's namespaces and root
    (isle-exec -J)."""
    base = cfg.get("process") or {}
    proc = dict(process)
    if proc.get("capabilities") is None and base.get("capabilities") is not None:
        proc["capabilities"] = base["capabilities"]
    if not proc.get("rlimits") and base.get("rlimits"):
        proc["rlimits"] = base["rlimits"]
    job = to_job({"process": proc}, stdin=stdin)
    if (cfg.get("linux") or {}).get("seccomp"):  # the program the container's process saved
        job = dataclasses.replace(job, spec_opts=job.spec_opts + ("-S", GUEST_SECCOMP))
    return job


_PROPAGATIONS = {"shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable",
                 "runbindable"}


def _caps(names: Any, field: str) -> int:
    from isle.oci.runtime_spec import CAPABILITIES

    mask = 0
    for i, n in enumerate(names or []):
        if not isinstance(n, str):
            raise ConfigError(f"{field}[{i}]", f"{n!r} is not a capability name")
        bit = CAPABILITIES.get(n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper())
        if bit is not None:  # unknown names are ignored, as isle-runtime does (warned at create)
            mask |= 1 << bit
    return mask


def _path(p: Any, field: str) -> str:
    if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
        raise ConfigError(field, f"{p!r} is not an absolute path")
    return p


def guest_opts(cfg: dict[str, Any]) -> tuple[str, ...]:
    """isle-exec options for the rest of the spec (see isle-exec.c). Process parts always; the
    container's (/dev, paths, root, sysctl, seccomp) only for a container's config (one with a
    root or linux section), not for an exec's process alone."""
    p = cfg.get("process") or {}
    out: list[str] = []
    caps = p.get("capabilities")
    if caps is not None:
        f = "process.capabilities"
        b, e, pm, i, a = (_caps(caps.get(k), f"{f}.{k}") for k in
                          ("bounding", "effective", "permitted", "inheritable", "ambient"))
        out += ["-c", f"{b:x},{e:x},{pm | e:x},{i | a:x},{a:x}"]
    umask = (p.get("user") or {}).get("umask")
    if umask is not None:
        if not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise ConfigError("process.user.umask", f"{umask!r} is not a umask (0 to 0777)")
        out += ["-m", f"{umask:o}"]
    oom = p.get("oomScoreAdj")
    if oom is not None:
        if not isinstance(oom, int) or not -1000 <= oom <= 1000:
            raise ConfigError("process.oomScoreAdj", f"{oom!r} is not between -1000 and 1000")
        out += ["-o", str(oom)]
    if "root" not in cfg and "linux" not in cfg:
        return tuple(out)
    linux = cfg.get("linux") or {}
    out.append("-d")
    for i, d in enumerate(linux.get("devices") or []):
        f = f"linux.devices[{i}]"
        path = _path(d.get("path"), f"{f}.path")
        if not path.startswith("/dev/") or ":" in path:
            raise ConfigError(f"{f}.path", f"{path!r}: a VM makes devices under /dev only")
        t = d.get("type")
        if t not in ("c", "u", "b", "p"):
            raise ConfigError(f"{f}.type", f"{t!r} is not c, u, b or p")
        try:
            nums = [int(d.get(k) or 0) for k in ("major", "minor", "uid", "gid")]
            mode = int(d.get("fileMode", 0o666)) & 0o7777
        except (TypeError, ValueError):
            raise ConfigError(f, "major, minor, fileMode, uid and gid must be numbers") from None
        out += ["-k", f"{path}:{'c' if t == 'u' else t}:{nums[0]}:{nums[1]}:{mode:o}:"
                      f"{nums[2]}:{nums[3]}"]
    sysctl = linux.get("sysctl") or {}
    for k, v in sysctl.items():
        if not k or "/" in k or ".." in k or "=" in k:
            raise ConfigError(f"linux.sysctl.{k}", "not a sysctl name")
        out += ["-y", f"{k}={v}"]
    if cfg.get("domainname"):
        out += ["-D", str(cfg["domainname"])]
    for key, opt in (("maskedPaths", "-M"), ("readonlyPaths", "-R")):
        for i, path in enumerate(linux.get(key) or []):
            out += [opt, _path(path, f"linux.{key}[{i}]")]
    out += _id_maps(linux)
    if (cfg.get("root") or {}).get("readonly"):
        out.append("-O")
    prop = linux.get("rootfsPropagation")
    if prop:
        if prop not in _PROPAGATIONS:
            raise ConfigError("linux.rootfsPropagation",
                              f"{prop!r} is not one of {', '.join(sorted(_PROPAGATIONS))}")
        out += ["-P", prop]
    if linux.get("seccomp"):  # kept in the guest's own root for exec'd processes (exec_job)
        out += ["-s", _seccomp(linux["seccomp"]), "-W", GUEST_SECCOMP]
    return tuple(out)


def _id_maps(linux: dict[str, Any]) -> list[str]:
    """-U/-V: a user namespace inside the guest for the container (a path is meaningless there:
    the guest's kernel has no namespace of the host's), made with these maps, as runc does."""
    if not any(isinstance(n, dict) and n.get("type") == "user"
               for n in linux.get("namespaces") or []):
        return []
    out = []
    for key, opt in (("uidMappings", "-U"), ("gidMappings", "-V")):
        maps = linux.get(key) or []
        if not maps:
            raise ConfigError(f"linux.{key}", "a user namespace needs uid and gid mappings")
        parts = []
        for i, m in enumerate(maps):
            try:
                c, h, n = (int(m[k]) for k in ("containerID", "hostID", "size"))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"linux.{key}[{i}]",
                                  "containerID, hostID and size must be numbers") from None
            if min(c, h) < 0 or n <= 0 or max(c, h) + n > 2**32 - 1:
                raise ConfigError(f"linux.{key}[{i}]", f"{c}:{h}:{n} is not a valid id range")
            parts.append(f"{c}:{h}:{n}")
        out += [opt, ",".join(parts)]
    return out


def _seccomp(sc: dict[str, Any]) -> str:
    """FLAGS:BASE64 of the BPF program isle-runtime would load (same compiler, same cache)."""
    from isle.runtime import seccomp

    flags = seccomp.filter_flags(sc)
    if flags & seccomp.FLAG_NEW_LISTENER or sc.get("listenerPath"):
        raise ConfigError("linux.seccomp", "SCMP_ACT_NOTIFY (a listener on the host) is not "
                          "supported for a VM: its syscalls happen in the guest kernel")
    prog = seccomp.compile_filter(sc)
    return f"{flags:x}:{base64.b64encode(prog).decode()}"


def _user_dns(cfg: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """User networking's resolver, unless the bundle brings its own resolv.conf."""
    if net_of(cfg)[0] != "user" or any(d == "/etc/resolv.conf" for d, _ in _files(cfg)):
        return ()
    return (("/etc/resolv.conf", f"nameserver {USER_DNS}\n"),)


def _count_cpus(spec: str, field: str) -> int:
    n = 0
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                if int(b) < int(a):
                    raise ValueError
                n += int(b) - int(a) + 1
            else:
                int(part)
                n += 1
        except ValueError:
            raise ConfigError(field, f"{spec!r} is not a cpu list like 0-2,4") from None
    return n


def vm_size(cfg: dict[str, Any], host_cpus: int | None = None) -> tuple[int, int]:
    """(vcpus, memory MiB) from linux.resources: memory.limit -> RAM, cpu quota or cpus -> vCPUs.

    Annotations org.isle.vm.memory (MiB) and org.isle.vm.vcpus override both.
    """
    host_cpus = host_cpus or os.cpu_count() or 1
    res = cfg.get("linux", {}).get("resources", {}) or {}
    ann = cfg.get("annotations", {}) or {}
    mem = DEFAULT_MEMORY_MIB
    limit = (res.get("memory") or {}).get("limit")
    if limit is not None and int(limit) > 0:
        mem = math.ceil(int(limit) / 2**20)
        if mem < MIN_MEMORY_MIB:
            raise ConfigError(
                "linux.resources.memory.limit",
                f"{mem} MiB is below the {MIN_MEMORY_MIB} MiB a microVM needs",
            )
    cpu = res.get("cpu") or {}
    vcpus = 1
    if cpu.get("quota") and int(cpu["quota"]) > 0:
        vcpus = math.ceil(int(cpu["quota"]) / int(cpu.get("period") or 100000))
    elif cpu.get("cpus"):
        vcpus = _count_cpus(str(cpu["cpus"]), "linux.resources.cpu.cpus")
    if "org.isle.vm.memory" in ann:
        try:
            mem = int(ann["org.isle.vm.memory"])
        except ValueError:
            raise ConfigError("annotations.org.isle.vm.memory", "not a number of MiB") from None
        if mem < MIN_MEMORY_MIB:
            raise ConfigError("annotations.org.isle.vm.memory", f"below {MIN_MEMORY_MIB} MiB")
    if "org.isle.vm.vcpus" in ann:
        try:
            vcpus = int(ann["org.isle.vm.vcpus"])
        except ValueError:
            raise ConfigError("annotations.org.isle.vm.vcpus", "not a number") from None
    return max(1, min(vcpus, host_cpus)), mem


#: what QEMU needs beside guest RAM (TCG's translation cache, device emulation, its libraries,
#: virtiofsd; measured: a guest that fills its 128 MiB brought QEMU to 208 MiB charged, page
#: cache included): the container cgroup's memory limit is the guest RAM plus this
QEMU_MEMORY_OVERHEAD_MIB = 128
#: QEMU's own threads (main loop, RCU, vCPUs, up to 64 block I/O workers, ...), added to a
#: pids limit: inside a VM the container's processes are the guest's, QEMU's are the host's
QEMU_THREADS = 72
VIRTIOFSD_THREADS = 16


def host_resources(cfg: dict[str, Any], vcpus: int, memory_mib: int, *, shares: int = 0,
                   kvm: bool = False) -> dict[str, Any]:
    """linux.resources for the host cgroup QEMU (and virtiofsd) run in: the spec's, with memory
    and pids limits raised by what QEMU itself needs, so that they bound the VM without killing
    it for its own overhead, and /dev/kvm allowed when KVM is used."""
    res = dict((cfg.get("linux") or {}).get("resources") or {})
    mem = dict(res.get("memory") or {})
    extra = (QEMU_MEMORY_OVERHEAD_MIB + 8 * shares) << 20
    if mem.get("limit") is not None and int(mem["limit"]) > 0:
        mem["limit"] = max(int(mem["limit"]), memory_mib << 20) + extra
        if mem.get("swap") is not None and int(mem["swap"]) > 0:
            mem["swap"] = max(int(mem["swap"]), mem["limit"] - extra) + extra
        res["memory"] = mem
    pids = res.get("pids") or {}
    if pids.get("limit") is not None and int(pids["limit"]) > 0:
        res["pids"] = {**pids, "limit": int(pids["limit"]) + QEMU_THREADS + vcpus
                       + VIRTIOFSD_THREADS * shares}
    if kvm and res.get("devices") is not None:
        res["devices"] = list(res["devices"]) + [
            {"allow": True, "type": "c", "major": 10, "minor": 232, "access": "rwm"}]
    return res
