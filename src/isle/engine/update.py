"""`isle update` / Docker's POST /containers/{id}/update: change a container's resource limits
and restart policy, live (through its OCI runtime's `update`) and in its record (kept for the
next start).

Docker's convention: a limit left out (or 0) is unchanged; PidsLimit 0 or -1 and MemorySwap -1
lift their limit. The new limits are validated as a whole, as create validates them, before
anything changes.
"""

from __future__ import annotations

from typing import Any

from isle.errors import CommandError, ConfigError, IsleError

__all__ = ["UPDATABLE", "apply", "live_resources"]

#: RunOptions fields `update` may change -> the flag that names them in errors
UPDATABLE = {
    "memory": "--memory", "memory_swap": "--memory-swap",
    "memory_reservation": "--memory-reservation", "cpus": "--cpus",
    "cpu_shares": "--cpu-shares", "cpuset_cpus": "--cpuset-cpus",
    "pids_limit": "--pids-limit", "blkio_weight": "--blkio-weight",
}


def _check(changes: dict[str, Any]) -> None:
    for k, v in changes.items():
        flag = UPDATABLE.get(k)
        if flag is None:
            raise ConfigError(k, "cannot be updated (only "
                              + ", ".join(sorted(UPDATABLE.values())) + ")")
        if k == "cpuset_cpus":
            if not isinstance(v, str):
                raise ConfigError(flag, f"want a CPU list such as 0-1, got {v!r}")
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(flag, f"want a number, got {v!r}")
        if k == "cpus":
            if v < 0:
                raise ConfigError(flag, f"must be positive, got {v!r}")
        elif k in ("memory_swap", "pids_limit"):
            if v < -1:
                raise ConfigError(flag, f"must be -1 (unlimited) or more, got {v!r}")
        elif v < 0:
            raise ConfigError(flag, f"must not be negative, got {v!r}")
    bw = changes.get("blkio_weight")
    if bw and not 10 <= bw <= 1000:
        raise ConfigError("--blkio-weight", f"must be between 10 and 1000, got {bw}")
    cs = changes.get("cpu_shares")
    if cs and cs < 2:
        raise ConfigError("--cpu-shares", f"must be at least 2, got {cs}")


def _blkio_weight_supported() -> bool:
    import os

    return any(os.path.exists(p) for p in (
        "/sys/fs/cgroup/blkio/blkio.weight", "/sys/fs/cgroup/blkio/blkio.bfq.weight",
        "/sys/fs/cgroup/io.weight", "/sys/fs/cgroup/io.bfq.weight"))


def live_resources(opts: Any, changed: set[str]) -> dict[str, Any]:
    """The LinuxResources delta that brings a live container to opts (only the sections whose
    fields changed; a lifted limit is -1, as runc update takes it)."""
    res: dict[str, Any] = {}
    if changed & {"memory", "memory_swap", "memory_reservation"}:
        mem: dict[str, Any] = {}
        if changed & {"memory", "memory_swap"}:
            mem["limit"] = opts.memory or -1
            if opts.memory_swap == -1 or not opts.memory:
                mem["swap"] = -1
            else:
                mem["swap"] = opts.memory_swap or opts.memory * 2
        if "memory_reservation" in changed:
            mem["reservation"] = opts.memory_reservation or -1
        res["memory"] = mem
    if changed & {"cpus", "cpu_shares", "cpuset_cpus"}:
        cpu: dict[str, Any] = {}
        if "cpus" in changed:
            cpu["period"] = 100000
            cpu["quota"] = int(opts.cpus * 100000) if opts.cpus else -1
        if "cpu_shares" in changed and opts.cpu_shares:
            cpu["shares"] = opts.cpu_shares
        if "cpuset_cpus" in changed and opts.cpuset_cpus:
            cpu["cpus"] = opts.cpuset_cpus
        if cpu:
            res["cpu"] = cpu
    if "pids_limit" in changed:
        res["pids"] = {"limit": opts.pids_limit if opts.pids_limit > 0 else -1}
    if "blkio_weight" in changed and opts.blkio_weight:
        res["blockIO"] = {"weight": opts.blkio_weight}
    return res


def apply(eng: Any, ref: str, changes: dict[str, Any],
          restart: Any = None) -> tuple[Any, list[str]]:
    """Update container ref: changes maps UPDATABLE fields to their new values (0/None: left
    as is, Docker's convention, except pids_limit -1/0 and memory_swap -1); restart is a
    RestartPolicy or None. Returns (record, warnings)."""
    from isle.engine.options import RunOptions
    from isle.engine.runtimes import for_record
    from isle.engine.spec import _resources

    _check(changes)
    changes = {k: v for k, v in changes.items()
               if v is not None and (v != 0 or k == "pids_limit") and v != ""}
    if "pids_limit" in changes and changes["pids_limit"] <= 0:
        changes["pids_limit"] = 0  # unlimited, as a record keeps it
    rec = eng.get(ref)
    opts = RunOptions.from_dict(rec.opts)
    if restart is not None:
        from isle.engine.options import parse_restart

        parse_restart(restart.name + (f":{restart.max_retries}" if restart.max_retries else ""))
        if opts.remove and restart.name != "no":
            raise ConfigError("--restart", "conflicting options: --restart and --rm "
                              "(the container is removed when it exits)")
    if "memory" in changes and "memory_swap" not in changes and opts.memory_swap > 0 \
            and changes["memory"] > opts.memory_swap:
        raise ConfigError("--memory", "Memory limit should be smaller than already set "
                          "memoryswap limit, update the memoryswap at the same time")
    for k, v in changes.items():
        if hasattr(opts, k):
            setattr(opts, k, v)
    if "cpus" in changes:
        from isle.engine.options import check_cpus

        check_cpus(float(changes["cpus"]))
    warnings: list[str] = []
    if changes.get("blkio_weight") and not _blkio_weight_supported():
        warnings.append("Your kernel does not support Block I/O weight or the cgroup is not "
                        "mounted. Weight discarded.")  # Docker's words, as its update says
        del changes["blkio_weight"]
        opts.blkio_weight = 0
    _resources(opts)  # the whole new set, as create checks it (minimums, swap >= memory)
    changed = set(changes)
    if changed and rec.state in ("running", "paused"):
        rt = for_record(eng.s, rec.opts)
        res = live_resources(opts, changed)
        if res:
            try:
                rt.update(rec.id, res)
            except CommandError as e:
                msg = str(e).strip().splitlines()[-1] if str(e).strip() else str(e)
                raise IsleError(f"cannot update container {rec.name}: {msg}") from None
    new = opts.to_dict()
    if restart is not None:
        new["restart"] = {"name": restart.name, "max_retries": restart.max_retries}
    eng.db.update_container(rec.id, opts=new, event="update")
    return eng.get(rec.id), warnings
