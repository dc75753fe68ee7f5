"""Whole-OS VMs beside containers: what `isle ps/inspect/stats/logs/start/stop/rm` show and do
for them (isolation vm-os). Light on purpose: `isle ps` imports this; nothing VM-specific is
imported until this root has a VM.

    rows = ps_rows(settings, all=True)        # ContainerSummary rows, Isolation "vm-os"
    inspect_dict(settings, "deb"); stats_rows(settings, ["deb"]); console_log(settings, "deb")
    verb(settings, "stop", "deb", timeout=10)  # False when "deb" is no VM
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing is not on `isle ps`'s budget (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ISOLATION", "vm_names", "moved_away", "net_owners", "is_vm", "ps_rows",
           "inspect_dict", "stats_rows", "console_log", "verb"]


ISOLATION = "vm-os"


def _vm_root(settings: Any) -> str:
    return os.path.join(settings.root, "vms")


def vm_names(settings: Any) -> list[str]:
    """Whole-OS VMs of this root (cheap: a directory listing; nothing imported)."""
    d = _vm_root(settings)
    try:
        return sorted(n for n in os.listdir(d)
                      if os.path.exists(os.path.join(d, n, "machine.json")))
    except OSError:
        return []


def moved_away(settings: Any) -> dict[str, str]:
    """{name: isle root} of VMs live-migrated from this root (or through it) that still use what
    it holds for them: their network attachment, their base disk (engine/vms.py leaves
    <root>/vms/.moved/<name> naming the root the VM went to)."""
    d = os.path.join(_vm_root(settings), ".moved")
    try:
        names = os.listdir(d)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            with open(os.path.join(d, n)) as f:
                where = f.read().strip()
        except OSError:
            continue
        if where and os.path.exists(os.path.join(where, "vms", n, "machine.json")):
            out[n] = where
    return out


def net_owners(settings: Any) -> list[str]:
    """The network attachment owners (vmos-<name>) this root's networks hold for whole-OS VMs:
    its own VMs and those migrated to another root (moved_away). What `system prune` keeps."""
    return [f"vmos-{n}" for n in [*vm_names(settings), *moved_away(settings)]]


def is_vm(settings: Any, ref: str) -> bool:
    return bool(ref) and "/" not in ref and ref in vm_names(settings)


def _ago(iso: str) -> str:
    try:
        t = time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return ""
    s = max(0, int(time.time() - t))
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{s} seconds ago"


def _image_of(spec: Any) -> str:
    return getattr(spec, "image", "") or (os.path.basename(spec.base) if spec.base else "")


def ps_rows(settings: Any, *, all: bool = False) -> list[Any]:
    """`isle ps` rows for whole-OS VMs (isolation vm-os): running ones, or all with all."""
    names = vm_names(settings)
    if not names:
        return []
    from isle.engine.reports import ContainerSummary
    from isle.engine.vms import VMs
    from isle.errors import IsleError

    vms = VMs(settings)
    rows = []
    for n in names:
        try:
            i = vms.inspect(n)
        except IsleError:
            continue
        if i.status != "running" and not all:
            continue
        ports = ", ".join(f"{k.split('@')[1] if '@' in k else '0.0.0.0'}:{v}->{k.split('@')[0]}"
                          for k, v in i.forwards.items())
        status = "Up" if i.status == "running" else "Exited"
        rows.append(ContainerSummary(
            ID=n[:12], Names=n, Image=_image_of(i.spec), ImageID="", Command=f'"{ISOLATION}"',
            CreatedAt=i.spec.created, RunningFor=_ago(i.spec.created), Status=status,
            State=i.status if i.status == "running" else "exited", Ports=ports, Labels="",
            Mounts="", Networks=i.spec.network, full_id=n, Isolation=ISOLATION))
    return rows


def _pss(pid: int) -> int:
    """Proportional set size of QEMU (bytes): pages shared with other VMs counted in part."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def inspect_dict(settings: Any, name: str) -> dict[str, Any]:
    """A Docker-shaped inspect object for a whole-OS VM."""
    from isle.engine.vms import VMs

    vms = VMs(settings)
    i = vms.inspect(name)
    running = i.status == "running"
    return {
        "Id": name, "Name": name, "Created": i.spec.created, "Isolation": ISOLATION,
        "Image": i.spec.base,
        "State": {"Status": "running" if running else "exited", "Running": running,
                  "Pid": i.pid},
        "Config": {"Hostname": i.spec.hostname or name, "User": i.spec.user,
                   "Image": _image_of(i.spec)},
        "HostConfig": {"Memory": i.spec.memory_mib << 20, "NanoCpus": i.spec.vcpus * 10**9,
                       "NetworkMode": i.spec.network},
        "NetworkSettings": vms.network_info(name) if running else {},
        "GraphDriver": {"Name": "qcow2", "Data": {"Disk": i.disk, "Base": i.spec.base}},
        "Memory": {"Pss": _pss(i.pid) if running else 0},
        "VM": i.to_dict(),
    }


def stats_rows(settings: Any, names: list[str]) -> list[dict[str, Any]]:
    """`isle stats` rows (Docker's keys) for running whole-OS VMs, from their cgroups."""
    from isle.engine.vms import VMs

    vms = VMs(settings)
    out = []
    for n in names:
        i = vms.inspect(n)
        if i.status != "running":
            continue

        def read(ctrl: str, f: str, n: str = n) -> int:
            try:
                with open(f"/sys/fs/cgroup/{ctrl}/isle/{vms.cgroup_name(n)}/{f}") as fh:
                    return int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                return 0

        c0, t0 = read("cpuacct", "cpuacct.usage"), time.monotonic()
        time.sleep(0.2)
        c1, t1 = read("cpuacct", "cpuacct.usage"), time.monotonic()
        cpu = (c1 - c0) / ((t1 - t0) * 1e9) * 100 if c1 else 0.0
        mem = read("memory", "memory.usage_in_bytes") or _pss(i.pid)
        lim = read("memory", "memory.limit_in_bytes") or (i.spec.memory_mib << 20)
        out.append({"ID": n[:12], "Name": n, "CPUPerc": f"{cpu:.2f}%", "MemUsage": mem,
                    "MemLimit": lim, "MemPerc": f"{(mem / lim * 100) if lim else 0:.2f}%",
                    "PIDs": read("pids", "pids.current"), "cpu_percent": cpu,
                    "Isolation": ISOLATION, "Pss": _pss(i.pid)})
    return out


def console_log(settings: Any, name: str) -> bytes:
    """The VM's console history (what `isle logs NAME` prints): the running VM's console log,
    or the last one kept at stop."""
    from isle.engine.vms import VMs

    vms = VMs(settings)
    i = vms.inspect(name)
    for p in (os.path.join(os.path.dirname(i.console), "console.log"),
              os.path.join(vms.store._dir(name), "console.log")):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            continue
    return b""


def verb(settings: Any, what: str, name: str, **kw: Any) -> bool:
    """Do start/stop/rm/kill/restart for a whole-OS VM named name; False if it is none."""
    if not is_vm(settings, name):
        return False
    from isle.engine.vms import VMs

    vms = VMs(settings)
    if what == "start":
        if vms.inspect(name).status != "running":
            vms.start(name)
    elif what == "stop":
        t = kw.get("timeout")
        vms.stop(name, timeout=30.0 if t is None else float(t))
    elif what == "kill":
        vms.stop(name, timeout=0)
    elif what == "restart":
        t = kw.get("timeout")
        vms.stop(name, timeout=30.0 if t is None else float(t))
        vms.start(name)
    elif what == "rm":
        vms.rm(name, force=bool(kw.get("force")))
    else:
        from isle.errors import Unsupported

        raise Unsupported(f"{what} is not something a whole-OS VM does")
    return True
