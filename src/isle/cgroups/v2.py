"""cgroup v2 (unified hierarchy) manager; also the unified half of a hybrid host.

Device rules on v2 are an eBPF program (devbpf.py) attached to the cgroup; where the kernel
will not load it (no CAP_SYS_ADMIN, no CONFIG_CGROUP_BPF) set() raises Unsupported rather
than run the container unconfined. ``device_rules()`` gives the same rules as data.
"""

from __future__ import annotations

import math
import os
import time

from isle.cgroups import fsio
from isle.cgroups.resources import (
    Plan,
    R,
    dev_id,
    device_rules,
    entries,
    num,
    opt_num,
    page_size,
    section,
    text,
)
from isle.errors import ConfigError, IsleError, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at start-up; only type checkers need it
    from typing import Any

__all__ = ["V2Manager", "cpu_weight", "io_weight", "swap_max"]


def cpu_weight(shares: int) -> int:
    """cpu.shares [2..262144] -> cpu.weight [1..10000], runc's current (log-scale) formula;
    1024 -> 100 (defaults agree). 0 means unset."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    return math.ceil(10 ** ((lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0))


def io_weight(blkio: int) -> int:
    """blkio.weight [10..1000] -> io.weight [1..10000] (runc's linear map)."""
    return 1 + (blkio - 10) * 9999 // 990


def swap_max(swap: int, memory: int, field: str) -> int:
    """OCI memory.swap is memory+swap; v2 memory.swap.max is swap alone (runc's conversion).
    Returns -1 for "max", 0 for "leave unset"."""
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0) or memory == -1:
        return swap
    if memory == 0:
        raise ConfigError(field, "a swap limit needs a memory limit")
    if swap < memory:
        raise ConfigError(field, f"{swap} is below memory.limit {memory} (swap is memory+swap)")
    return swap - memory


def _lim(v: int) -> str:
    return "max" if v < 0 else str(v)



class V2Manager:
    """One directory in the unified hierarchy: ``mount`` + ``path``."""

    setup = "v2"

    def __init__(self, path: str, mount: str, *, created: list[str] | None = None,
                 wanted: list[str] | None = None, lazy: bool = False) -> None:
        self.path = path
        #: enable controllers in ancestors only when a limit needs them (enable()), not at
        #: create(): the unified half of a hybrid host is shared, and isle writes to no cgroup
        #: it did not create unless the user asked for a limit that needs it
        self.lazy = lazy
        self.mount = mount.rstrip("/")
        self.dir = self.mount + path
        self.created = list(created or [])
        self.wanted = wanted  # controllers to enable on the way down (None: all available)
        self._fresh = False

    # ---- plan -----------------------------------------------------------------------------
    def plan(self, resources: dict[str, Any]) -> list[tuple[str, str]]:
        """The writes set() would make, in order (pure)."""
        return [(f, v) for f, v, _ in self._plan(resources)]

    def _plan(self, res: dict[str, Any]) -> Plan:
        out: Plan = []
        cpu, mem = section(res, "cpu"), section(res, "memory")
        fc, fm = f"{R}.cpu", f"{R}.memory"
        # cpuset
        for key in ("cpus", "mems"):
            v = text(cpu, key, fc)
            if v:
                out.append((f"cpuset.{key}", v, f"{fc}.{key}"))
        # memory
        limit = opt_num(mem, "limit", fm, lo=-1) or 0
        swap = opt_num(mem, "swap", fm, lo=-1) or 0
        resv = opt_num(mem, "reservation", fm, lo=-1) or 0
        sw = swap_max(swap, limit, f"{fm}.swap")
        if sw != 0 or (swap > 0 and swap == limit):
            out.append(("memory.swap.max", _lim(sw), f"{fm}.swap"))
        if limit:
            out.append(("memory.max", _lim(limit), f"{fm}.limit"))
        if resv:
            out.append(("memory.low", _lim(resv), f"{fm}.reservation"))
        for key in ("kernel", "kernelTCP"):
            if opt_num(mem, key, fm):
                raise Unsupported(f"{fm}.{key}: cgroup v2 has no separate kernel memory limit")
        sw_ = opt_num(mem, "swappiness", fm)
        if sw_ is not None and sw_ != -1:
            raise Unsupported(f"{fm}.swappiness: cgroup v2 has no per-cgroup swappiness")
        if mem.get("disableOOMKiller") is True:
            raise Unsupported(f"{fm}.disableOOMKiller: cgroup v2 cannot disable the OOM killer")
        if mem.get("useHierarchy") is False:
            raise Unsupported(f"{fm}.useHierarchy: cgroup v2 is always hierarchical")
        # cpu
        for key in ("realtimeRuntime", "realtimePeriod"):
            if opt_num(cpu, key, fc):
                raise Unsupported(f"{fc}.{key}: cgroup v2 has no realtime group scheduling")
        idle = opt_num(cpu, "idle", fc, lo=0, hi=1)
        if idle is not None:
            out.append(("cpu.idle", str(idle), f"{fc}.idle"))
        shares = opt_num(cpu, "shares", fc, lo=0) or 0
        if shares:
            out.append(("cpu.weight", str(cpu_weight(shares)), f"{fc}.shares"))
        quota = opt_num(cpu, "quota", fc, lo=-1) or 0
        period = opt_num(cpu, "period", fc, lo=0) or 0
        if quota or period:
            val = str(quota) if quota > 0 else "max"
            out.append(("cpu.max", f"{val} {period}" if period else val, f"{fc}.quota"))
        burst = opt_num(cpu, "burst", fc, lo=0)
        if burst is not None:
            out.append(("cpu.max.burst", str(burst), f"{fc}.burst"))
        # pids
        pids = section(res, "pids")
        plim = opt_num(pids, "limit", f"{R}.pids")
        if plim:
            out.append(("pids.max", _lim(plim), f"{R}.pids.limit"))
        out += self._plan_io(section(res, "blockIO"))
        # hugetlb
        for f, h in entries(res, "hugepageLimits", R):
            size = page_size(h.get("pageSize"), f"{f}.pageSize")
            lim = num(h.get("limit"), f"{f}.limit", lo=0)
            out.append((f"hugetlb.{size}.max", str(lim), f"{f}.limit"))
        out += unified_passthrough(res)
        return out

    def _plan_io(self, bio: dict[str, Any]) -> Plan:
        out: Plan = []
        fb = f"{R}.blockIO"
        w = opt_num(bio, "weight", fb, lo=10, hi=1000)
        if w:
            out.append(("io.weight", f"default {io_weight(w)}", f"{fb}.weight"))
        if opt_num(bio, "leafWeight", fb):
            raise Unsupported(f"{fb}.leafWeight: cgroup v2 has no leaf weight")
        for f, d in entries(bio, "weightDevice", fb):
            if opt_num(d, "leafWeight", f):
                raise Unsupported(f"{f}.leafWeight: cgroup v2 has no leaf weight")
            dw = opt_num(d, "weight", f, lo=10, hi=1000)
            if dw:
                out.append(("io.weight", f"{dev_id(d, f)} {io_weight(dw)}", f"{f}.weight"))
        for key, kind in (("throttleReadBpsDevice", "rbps"),
                          ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"),
                          ("throttleWriteIOPSDevice", "wiops")):
            for f, d in entries(bio, key, fb):
                rate = num(d.get("rate"), f"{f}.rate", lo=0)
                out.append(("io.max", f"{dev_id(d, f)} {kind}={rate or 'max'}", f"{f}.rate"))
        return out

    def device_rules(self, resources: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The device allow-list as data (what an eBPF program would have to enforce)."""
        return device_rules(resources)

    # ---- lifecycle ------------------------------------------------------------------------
    def create(self) -> None:
        made = fsio.mkdirs(self.mount, self.path)
        try:
            if not self.lazy:
                self._enable_controllers()
        except BaseException:
            fsio.rmdirs(made)
            raise
        self.created = self.created + [d for d in made if d not in self.created]
        self._fresh = True

    def enable(self, controllers: set[str]) -> None:
        """Enable just these controllers on the way down (a lazy manager's limits need them)."""
        keep = self.wanted
        self.wanted = [c for c in (keep or _controllers(self.mount)) if c in controllers]
        try:
            self._enable_controllers()
        finally:
            self.wanted = keep

    def _enable_controllers(self) -> None:
        """Enable controllers in each ancestor's subtree_control so the leaf gets their files.

        This writes to ancestors isle may not have created (as runc does on v2): without it a
        v2 cgroup has no limits at all. Only missing controllers are written.
        """
        parts = [p for p in self.path.split("/") if p]
        cur = self.mount
        for part in parts:
            avail = _controllers(cur)
            want = [c for c in avail if self.wanted is None or c in self.wanted]
            try:
                enabled = set(fsio.read(os.path.join(cur, "cgroup.subtree_control")).split())
            except FileNotFoundError:
                enabled = set()
            missing = [c for c in want if c not in enabled]
            if missing:
                sc = os.path.join(cur, "cgroup.subtree_control")
                try:
                    fsio.write(sc, " ".join("+" + c for c in missing))
                except OSError:
                    for c in missing:  # some may be refused (e.g. busy); enable what we can
                        try:
                            fsio.write(sc, "+" + c)
                        except OSError:
                            pass
            cur = os.path.join(cur, part)

    def set(self, resources: dict[str, Any]) -> None:
        try:
            plan = self._plan(resources)
            rules = device_rules(resources)
            if rules is not None and not _allows_all(rules):
                from isle.cgroups import devbpf

                devbpf.attach(self.dir, rules)
            for file, value, field in plan:
                fsio.write_field(self.dir, file, value, field)
        except IsleError as e:
            if self._fresh:
                fsio.undo(self.destroy, e)
            raise

    def apply(self, pid: int) -> None:
        join(self.dir, pid)
        self._fresh = False

    def drop_unused_unified(self, resources: dict[str, Any]) -> None:
        """Nothing to drop on a pure cgroup2 host (see V1Manager)."""

    def self_join_files(self) -> list[str] | None:
        """None: a domain cgroup is joined through cgroup.procs only (see V1Manager)."""
        return None

    def freeze(self, timeout: float = 5.0) -> None:
        f = os.path.join(self.dir, "cgroup.freeze")
        if not os.path.exists(f):
            raise Unsupported(f"freezing needs cgroup.freeze (kernel >= 5.2); not in {self.dir}")
        fsio.write(f, "1")
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while not self.frozen():
            if time.monotonic() > deadline:
                fsio.write(f, "0")
                raise IsleError(f"cgroup {self.dir} did not freeze within {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def thaw(self) -> None:
        fsio.write(os.path.join(self.dir, "cgroup.freeze"), "0")

    def frozen(self) -> bool:
        return fsio.read_kv(os.path.join(self.dir, "cgroup.events")).get("frozen") == 1

    def pids(self) -> list[int]:
        return all_pids(self.dir)

    def oom_kills(self) -> int:
        return fsio.read_kv(os.path.join(self.dir, "memory.events")).get("oom_kill", 0)

    def stats(self) -> dict[str, Any]:
        """Same shape as V1Manager.stats(); values the kernel does not keep are 0/None/[]."""
        d = self.dir
        cs = fsio.read_kv(os.path.join(d, "cpu.stat"))
        ev = fsio.read_kv(os.path.join(d, "memory.events"))
        io = []
        for ln in fsio.read_lines(os.path.join(d, "io.stat")):
            dev, *kvs = ln.split()
            mj, _, mn = dev.partition(":")
            vals = dict(kv.split("=", 1) for kv in kvs if "=" in kv)
            for key, op in (("rbytes", "read"), ("wbytes", "write")):
                if key in vals:
                    io.append({"major": int(mj), "minor": int(mn), "op": op,
                               "value": int(vals[key])})
        return {
            "cpu": {"usage_ns": cs.get("usage_usec", 0) * 1000,
                    "user_ns": cs.get("user_usec", 0) * 1000,
                    "system_ns": cs.get("system_usec", 0) * 1000,
                    "percpu_ns": [],
                    "throttled_periods": cs.get("nr_throttled", 0),
                    "throttled_ns": cs.get("throttled_usec", 0) * 1000},
            "memory": {"usage": fsio.read_int(os.path.join(d, "memory.current")),
                       "limit": fsio.read_int(os.path.join(d, "memory.max")),
                       "max_usage": fsio.read_int(os.path.join(d, "memory.peak")),
                       "failcnt": ev.get("max", 0),
                       "stat": fsio.read_kv(os.path.join(d, "memory.stat"))},
            "pids": {"current": fsio.read_int(os.path.join(d, "pids.current")),
                     "limit": fsio.read_int(os.path.join(d, "pids.max"))},
            "io": {"service_bytes": io},
            "oom_kills": ev.get("oom_kill", 0),
        }

    def destroy(self) -> None:
        fsio.rmdirs(self.created, (self.dir,))
        self.created = []
        self._fresh = False

    def to_state(self) -> dict[str, Any]:
        return {"setup": "v2", "path": self.path, "mount": self.mount, "created": self.created,
                "wanted": self.wanted, "lazy": self.lazy}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> V2Manager:
        return cls(d["path"], d["mount"], created=d.get("created"), wanted=d.get("wanted"),
                   lazy=bool(d.get("lazy")))


def _controllers(directory: str) -> list[str]:
    try:
        return fsio.read(os.path.join(directory, "cgroup.controllers")).split()
    except FileNotFoundError:
        return []


def _allows_all(rules: list[dict[str, Any]]) -> bool:
    last = rules[-1] if rules else None
    return bool(last and last["allow"] and last["type"] == "a" and last["major"] is None
                and last["minor"] is None and last["access"] == "rwm")


def unified_passthrough(res: dict[str, Any]) -> Plan:
    """linux.resources.unified: {"memory.high": "1G"} written as given, after everything else."""
    uni = res.get("unified")
    if uni is None:
        return []
    if not isinstance(uni, dict):
        raise ConfigError(f"{R}.unified", "must be an object of file: value")
    out: Plan = []
    for k, v in uni.items():
        f = f"{R}.unified[{k!r}]"
        if not isinstance(k, str) or "/" in k or k.startswith(".") or "." not in k:
            raise ConfigError(f, "must name a cgroup file like memory.high")
        if not isinstance(v, str) or "\n" in v:
            raise ConfigError(f, f"value must be a one-line string, not {v!r}")
        out.append((k, v, f))
    return out


def join(directory: str, pid: int) -> None:
    """Move pid into the cgroup; retry EINVAL a few times (a task still in TASK_NEW)."""
    path = os.path.join(directory, "cgroup.procs")
    for attempt in range(5):
        try:
            fsio.write(path, str(pid))
            return
        except OSError as e:
            if e.errno == 22 and attempt < 4:  # EINVAL
                time.sleep(0.03)
                continue
            raise IsleError(f"cannot move pid {pid} into {directory}: {e.strerror}") from e


def all_pids(directory: str) -> list[int]:
    """cgroup.procs of the cgroup and every cgroup below it."""
    out: list[int] = []
    for top, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                out += [int(x) for x in fsio.read(os.path.join(top, "cgroup.procs")).split()]
            except FileNotFoundError:
                continue
    return out
