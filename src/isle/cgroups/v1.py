"""cgroup v1 manager (a directory per controller hierarchy), with a unified half on hybrid hosts."""

from __future__ import annotations

import os
import time

from isle.cgroups import fsio
from isle.cgroups.resources import (
    Plan,
    R,
    dev_id,
    device_line,
    device_rules,
    entries,
    num,
    opt_num,
    page_size,
    section,
    text,
)
from isle.cgroups.v2 import V2Manager, all_pids, join, unified_passthrough
from isle.errors import ConfigError, IsleError, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at start-up; only type checkers need it
    from typing import Any

__all__ = ["V1Manager"]

#: if the first file is absent (no CFQ: BFQ or none), try these
ALTERNATES = {"blkio.weight": ("blkio.bfq.weight",),
              "blkio.weight_device": ("blkio.bfq.weight_device",)}
#: controllers whose limits are skipped, not refused, when not mounted (as runc does)
OPTIONAL = ("net_cls", "net_prio")
_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded LLONG_MAX


def _ctrl(file: str) -> str:
    return file.split(".", 1)[0]


class V1Manager:
    """mounts: {controller: mountpoint}; paths: {mountpoint: cgroup path} where it differs from
    ``path`` (a relative cgroupsPath joins the runtime's own cgroup in each hierarchy)."""

    def __init__(self, path: str, mounts: dict[str, str], *, paths: dict[str, str] | None = None,
                 unified: V2Manager | None = None, created: list[str] | None = None,
                 setup: str | None = None) -> None:
        self.path = path
        self.mounts = dict(mounts)
        self.paths = dict(paths or {})
        self.unified = unified
        self.unified_controllers = frozenset(unified.wanted or ()) if unified else frozenset()
        self.created = list(created or [])
        self.setup = setup or ("hybrid" if unified else "v1")
        self._fresh = False

    def dir(self, controller: str) -> str:
        mnt = self.mounts[controller]
        return mnt + self.paths.get(mnt, self.path)

    def dirs(self) -> list[str]:
        """Each hierarchy's directory once (co-mounted controllers share one)."""
        seen: dict[str, None] = {}
        for c in self.mounts:
            seen.setdefault(self.dir(c), None)
        return list(seen)

    def _dir_for(self, file: str) -> str:
        c = _ctrl(file)
        if c in self.mounts:
            return self.dir(c)
        assert self.unified is not None
        return self.unified.dir

    # ---- plan -----------------------------------------------------------------------------
    def plan(self, resources: dict[str, Any]) -> list[tuple[str, str]]:
        """The writes set() would make on a fresh cgroup, in order (pure)."""
        return [(f, v) for f, v, _ in self._plan(resources)]

    def _plan(self, res: dict[str, Any]) -> Plan:
        cpu, mem = section(res, "cpu"), section(res, "memory")
        fc = f"{R}.cpu"
        out: Plan = []
        for key in ("cpus", "mems"):
            v = text(cpu, key, fc)
            if v:
                out.append((f"cpuset.{key}", v, f"{fc}.{key}"))
        rules = device_rules(res)
        if rules is not None:
            out.append(("devices.deny", "a", f"{R}.devices"))
            for i, r in enumerate(rules):
                out.append(("devices.allow" if r["allow"] else "devices.deny", device_line(r),
                            f"{R}.devices[{i}]"))
        out += self._plan_memory(mem)
        out += self._plan_cpu(cpu)
        plim = opt_num(section(res, "pids"), "limit", f"{R}.pids")
        if plim:
            out.append(("pids.max", "max" if plim < 0 else str(plim), f"{R}.pids.limit"))
        out += self._plan_blkio(section(res, "blockIO"))
        v2_huge = "hugetlb" not in self.mounts and "hugetlb" in self.unified_controllers
        for f, h in entries(res, "hugepageLimits", R):
            size = page_size(h.get("pageSize"), f"{f}.pageSize")
            lim = num(h.get("limit"), f"{f}.limit", lo=0)
            name = f"hugetlb.{size}.max" if v2_huge else f"hugetlb.{size}.limit_in_bytes"
            out.append((name, str(lim), f"{f}.limit"))
        net = section(res, "network")
        cid = opt_num(net, "classID", f"{R}.network", lo=0)
        if cid is not None:
            out.append(("net_cls.classid", str(cid), f"{R}.network.classID"))
        for f, p in entries(net, "priorities", f"{R}.network"):
            ifname = text(p, "name", f)
            if not ifname or " " in ifname:
                raise ConfigError(f"{f}.name", f"{ifname!r} is not an interface name")
            prio = num(p.get("priority"), f"{f}.priority")
            out.append(("net_prio.ifpriomap", f"{ifname} {prio}", f))
        if res.get("unified"):
            if not self.unified:
                raise ConfigError(f"{R}.unified", "needs cgroup v2; this host runs cgroup v1")
            for file, v, f in unified_passthrough(res):
                if _ctrl(file) not in self.unified_controllers:
                    raise ConfigError(f, "on this hybrid host only the unified hierarchy's "
                                      f"controllers ({', '.join(sorted(self.unified_controllers))})"
                                      " can be set")
                out.append((file, v, f))
        return self._available(out)

    def _available(self, plan: Plan) -> Plan:
        out: Plan = []
        for file, v, f in plan:
            c = _ctrl(file)
            if c in self.mounts or c in self.unified_controllers:
                out.append((file, v, f))
            elif c not in OPTIONAL:
                raise Unsupported(f"{f}: the {c} cgroup controller is not available on this host")
        return out

    def _plan_memory(self, mem: dict[str, Any]) -> Plan:
        fm = f"{R}.memory"
        out: Plan = []
        limit = opt_num(mem, "limit", fm, lo=-1) or 0
        swap = opt_num(mem, "swap", fm, lo=-1) or 0
        if limit == -1 and swap == 0:
            swap = -1
        if limit > 0 and swap > 0 and swap < limit:
            raise ConfigError(f"{fm}.swap", f"{swap} is below memory.limit {limit} "
                              "(swap is memory+swap)")
        lim_w = ("memory.limit_in_bytes", str(limit), f"{fm}.limit")
        swap_w = ("memory.memsw.limit_in_bytes", str(swap), f"{fm}.swap")
        if limit and swap:
            # the kernel keeps limit <= memsw at every step; a fresh cgroup has both unlimited
            out += [swap_w, lim_w] if swap == -1 else [lim_w, swap_w]
        elif limit:
            out.append(lim_w)
        elif swap:
            out.append(swap_w)
        resv = opt_num(mem, "reservation", fm, lo=-1)
        if resv:
            out.append(("memory.soft_limit_in_bytes", str(resv), f"{fm}.reservation"))
        kern = opt_num(mem, "kernel", fm, lo=-1)
        if kern:
            out.append(("memory.kmem.limit_in_bytes", str(kern), f"{fm}.kernel"))
        ktcp = opt_num(mem, "kernelTCP", fm, lo=-1)
        if ktcp:
            out.append(("memory.kmem.tcp.limit_in_bytes", str(ktcp), f"{fm}.kernelTCP"))
        if mem.get("disableOOMKiller") is True:
            out.append(("memory.oom_control", "1", f"{fm}.disableOOMKiller"))
        swp = opt_num(mem, "swappiness", fm, lo=-1, hi=100)
        if swp is not None and swp != -1:
            out.append(("memory.swappiness", str(swp), f"{fm}.swappiness"))
        uh = mem.get("useHierarchy")
        if uh is not None:
            if not isinstance(uh, bool):
                raise ConfigError(f"{fm}.useHierarchy", f"must be true or false, not {uh!r}")
            out.append(("memory.use_hierarchy", "1" if uh else "0", f"{fm}.useHierarchy"))
        return out

    def _plan_cpu(self, cpu: dict[str, Any]) -> Plan:
        fc = f"{R}.cpu"
        out: Plan = []
        # (spec key, file, lowest, highest, 0 is written); realtime first: an RT task cannot
        # join a group without RT bandwidth
        for key, file, lo, hi, zero in (
                ("realtimePeriod", "cpu.rt_period_us", 0, None, False),
                ("realtimeRuntime", "cpu.rt_runtime_us", -1, None, False),
                ("shares", "cpu.shares", 0, None, False),
                ("period", "cpu.cfs_period_us", 0, None, False),
                ("quota", "cpu.cfs_quota_us", -1, None, False),
                ("burst", "cpu.cfs_burst_us", 0, None, True),
                ("idle", "cpu.idle", 0, 1, True)):
            v = opt_num(cpu, key, fc, lo=lo, hi=hi)
            if v is not None and (v or zero):
                out.append((file, str(v), f"{fc}.{key}"))
        return out

    def _plan_blkio(self, bio: dict[str, Any]) -> Plan:
        fb = f"{R}.blockIO"
        out: Plan = []
        w = opt_num(bio, "weight", fb, lo=10, hi=1000)
        if w:
            out.append(("blkio.weight", str(w), f"{fb}.weight"))
        lw = opt_num(bio, "leafWeight", fb, lo=10, hi=1000)
        if lw:
            out.append(("blkio.leaf_weight", str(lw), f"{fb}.leafWeight"))
        for f, d in entries(bio, "weightDevice", fb):
            dev = dev_id(d, f)
            dw = opt_num(d, "weight", f, lo=10, hi=1000)
            if dw:
                out.append(("blkio.weight_device", f"{dev} {dw}", f"{f}.weight"))
            dlw = opt_num(d, "leafWeight", f, lo=10, hi=1000)
            if dlw:
                out.append(("blkio.leaf_weight_device", f"{dev} {dlw}", f"{f}.leafWeight"))
        for key, file in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for f, d in entries(bio, key, fb):
                rate = num(d.get("rate"), f"{f}.rate", lo=0)
                out.append((f"blkio.throttle.{file}", f"{dev_id(d, f)} {rate}", f"{f}.rate"))
        return out

    # ---- lifecycle ------------------------------------------------------------------------
    def create(self) -> None:
        """mkdir the cgroup in every hierarchy; remember exactly which directories were new."""
        made: list[str] = []
        try:
            for mnt in dict.fromkeys(self.mounts.values()):
                path = self.paths.get(mnt, self.path)
                new = fsio.mkdirs(mnt, path)
                made += new
                if mnt == self.mounts.get("cpuset"):
                    _cpuset_fill(mnt, path, fresh=mnt + path in new)
            if self.unified:
                self.unified.create()
        except BaseException:
            fsio.rmdirs(made)
            raise
        self.created = self.created + [d for d in made if d not in self.created]
        self._fresh = True

    def set(self, resources: dict[str, Any]) -> None:
        """Apply plan() in order. On a refusal right after create(), remove what create() made."""
        try:
            plan = self._plan(resources)
            if not self._fresh:
                plan = self._memory_order(plan)
            if self.unified is not None and self.unified.lazy:
                need = {_ctrl(f) for f, _, _ in plan if _ctrl(f) in self.unified_controllers
                        and _ctrl(f) not in self.mounts}
                if need:
                    self.unified.enable(need)
            for file, value, field in plan:
                fsio.write_field(self._dir_for(file), file, value, field,
                                 ALTERNATES.get(file, ()))
        except IsleError as e:
            if self._fresh:
                fsio.undo(self.destroy, e)
            raise

    def _memory_order(self, plan: Plan) -> Plan:
        """On an update, write memsw first when raising the limit past the current memsw."""
        files = [p[0] for p in plan]
        if "memory.limit_in_bytes" not in files or "memory.memsw.limit_in_bytes" not in files:
            return plan
        i, j = files.index("memory.limit_in_bytes"), files.index("memory.memsw.limit_in_bytes")
        cur = fsio.read_int(os.path.join(self.dir("memory"), "memory.limit_in_bytes")) or 0
        swap = int(plan[j][1])
        want_swap_first = swap == -1 or cur < swap
        if want_swap_first == (j < i):
            return plan
        plan = list(plan)
        plan[i], plan[j] = plan[j], plan[i]
        return plan

    def drop_unused_unified(self, resources: dict[str, Any]) -> None:
        """Before create(), on a hybrid host: leave the unified hierarchy alone when none of
        resources' writes go there (it only carries controllers the spec does not limit), so
        that joining needs no cgroup.procs write there (see self_join_files)."""
        if self.unified is None or self.created:
            return
        if all(_ctrl(f) in self.mounts for f, _, _ in self._plan(resources)):
            self.unified = None
            self.unified_controllers = frozenset()

    def self_join_files(self) -> list[str] | None:
        """The v1 ``tasks`` files a single-threaded process writes "0" to, to join its cgroups
        itself: moving just the calling thread skips the kernel's threadgroup lock, whose first
        writer after a quiet spell waits out an RCU grace period (~6-16 ms, holding the global
        cgroup_mutex); cgroup.procs always takes it. None when a unified half must be joined
        too (cgroup2 has no such file for a domain cgroup): use apply(pid) then."""
        if self.unified is not None:
            return None
        return [d + "/tasks" for d in self.dirs()]

    def apply(self, pid: int) -> None:
        """Move pid into the cgroup in every hierarchy (and the unified one on hybrid hosts)."""
        for d in self.dirs():
            join(d, pid)
        if self.unified:
            self.unified.apply(pid)
        self._fresh = False

    def _freezer(self) -> str:
        if "freezer" not in self.mounts:
            raise Unsupported("pause needs the freezer cgroup controller, which is not mounted")
        return os.path.join(self.dir("freezer"), "freezer.state")

    def freeze(self, timeout: float = 5.0) -> None:
        """FROZEN, then wait until the kernel reports every task frozen (not FREEZING)."""
        f = self._freezer()
        fsio.write(f, "FROZEN")
        deadline = time.monotonic() + timeout
        delay, kick = 0.0005, time.monotonic() + 0.1
        while fsio.read(f) != "FROZEN":
            now = time.monotonic()
            if now > deadline:
                fsio.write(f, "THAWED")
                raise IsleError(f"cgroup {os.path.dirname(f)} stuck FREEZING for {timeout}s")
            if now > kick:  # re-ask: tasks that were forking may have been missed
                fsio.write(f, "FROZEN")
                kick = now + 0.1
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def thaw(self) -> None:
        fsio.write(self._freezer(), "THAWED")

    def frozen(self) -> bool:
        return fsio.read(self._freezer()) == "FROZEN"

    def _main_dir(self) -> str:
        for c in ("pids", "freezer", "memory", "devices", "cpu", "systemd"):
            if c in self.mounts:
                return self.dir(c)
        return self.dirs()[0]

    def pids(self) -> list[int]:
        return all_pids(self._main_dir())

    def oom_kills(self) -> int:
        if "memory" not in self.mounts:
            return 0
        return fsio.read_kv(os.path.join(self.dir("memory"), "memory.oom_control")).get(
            "oom_kill", 0)

    def stats(self) -> dict[str, Any]:
        def get(ctrl: str, file: str) -> int | None:
            if ctrl not in self.mounts:
                return None
            return fsio.read_int(os.path.join(self.dir(ctrl), file))

        cs = (fsio.read_kv(os.path.join(self.dir("cpu"), "cpu.stat"))
              if "cpu" in self.mounts else {})
        def lines(ctrl: str, file: str) -> list[str]:
            return fsio.read_lines(os.path.join(self.dir(ctrl), file)) if ctrl in self.mounts \
                else []

        limit = get("memory", "memory.limit_in_bytes")
        percpu = " ".join(lines("cpuacct", "cpuacct.usage_percpu")).split()
        io = []
        for ln in lines("blkio", "blkio.throttle.io_service_bytes_recursive"):
            dev, _, rest = ln.partition(" ")
            op, _, val = rest.partition(" ")
            if ":" in dev and op in ("Read", "Write"):
                mj, mn = dev.split(":")
                io.append({"major": int(mj), "minor": int(mn), "op": op.lower(),
                           "value": int(val)})
        return {
            "cpu": {"usage_ns": get("cpuacct", "cpuacct.usage") or 0,
                    "user_ns": get("cpuacct", "cpuacct.usage_user") or 0,
                    "system_ns": get("cpuacct", "cpuacct.usage_sys") or 0,
                    "percpu_ns": [int(x) for x in percpu],
                    "throttled_periods": cs.get("nr_throttled", 0),
                    "throttled_ns": cs.get("throttled_time", 0)},
            "memory": {"usage": get("memory", "memory.usage_in_bytes"),
                       "limit": None if limit is None or limit >= _UNLIMITED else limit,
                       "max_usage": get("memory", "memory.max_usage_in_bytes"),
                       "failcnt": get("memory", "memory.failcnt") or 0,
                       "stat": (fsio.read_kv(os.path.join(self.dir("memory"), "memory.stat"))
                                if "memory" in self.mounts else {})},
            "pids": {"current": get("pids", "pids.current"), "limit": get("pids", "pids.max")},
            "io": {"service_bytes": io},
            "oom_kills": self.oom_kills(),
        }

    def destroy(self) -> None:
        """rmdir what create() made, deepest first (and cgroups the container made inside)."""
        fsio.rmdirs(self.created, tuple(self.dirs()))
        self.created = []
        if self.unified:
            self.unified.destroy()
        self._fresh = False

    def to_state(self) -> dict[str, Any]:
        return {"setup": self.setup, "path": self.path, "mounts": self.mounts,
                "paths": self.paths, "created": self.created,
                "unified": self.unified.to_state() if self.unified else None}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> V1Manager:
        uni = V2Manager.from_state(d["unified"]) if d.get("unified") else None
        return cls(d["path"], d["mounts"], paths=d.get("paths"), unified=uni,
                   created=d.get("created"), setup=d.get("setup"))



def _cpuset_fill(mount: str, path: str, fresh: bool = False) -> None:
    """A new v1 cpuset cgroup starts with empty cpus/mems, and no task can join it until they
    are copied down from its parent. Empty ancestors (made by another tool that did not fill
    them) are filled on the way down too, as runc does: an empty cpuset is unusable to anyone.

    fresh: the leaf was just made by us (so empty): with a filled parent (the kernel keeps a
    child's cpus within its parent's, so every ancestor is filled then) copy the parent's
    values straight down: 2 reads + 2 writes instead of a walk from the root."""
    if fresh:
        leaf = mount + path
        parent = os.path.dirname(leaf)
        vals = {f: fsio.read(os.path.join(parent, f)) for f in ("cpuset.cpus", "cpuset.mems")}
        if all(vals.values()):
            for f, v in vals.items():
                fsio.write(os.path.join(leaf, f), v)
            return
    cur = mount
    have = {f: fsio.read(os.path.join(cur, f)) for f in ("cpuset.cpus", "cpuset.mems")}
    for part in [p for p in path.split("/") if p]:
        cur = os.path.join(cur, part)
        for f, parent_val in have.items():
            v = fsio.read(os.path.join(cur, f))
            if not v:
                if not parent_val:
                    raise IsleError(f"cpuset cgroup {os.path.dirname(cur)} has an empty {f}")
                fsio.write(os.path.join(cur, f), parent_val)
                v = parent_val
            have[f] = v
