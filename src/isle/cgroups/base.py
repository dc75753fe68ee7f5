"""The cgroup manager protocol the runtime (and engine stats) use; v1, v2 and hybrid implement it.

The contract (implemented in ``v1.py``, ``v2.py``; chosen by ``manager_for``)::

    setup = detect_setup()                      # "v1" | "v2" | "hybrid"
    m = manager_for(cgroups_path, container_id)  # path per OCI ``linux.cgroupsPath`` rules
    writes = m.plan(resources)    # pure: [(relative file, value)]; ConfigError names the field
    m.create()                    # mkdir only what isle creates; remembers it
    m.set(resources)              # apply plan(); kernel refusal -> ConfigError naming the field
    m.apply(pid)                                 # move pid into every hierarchy
    m.drop_unused_unified(resources)   # hybrid, before create(): skip cgroup2 if unneeded
    m.self_join_files()           # v1 "tasks" files a process joins itself by (or None)
    m.freeze(); m.thaw(); m.frozen()             # pause / resume
    m.pids(); m.stats(); m.oom_kills()
    m.destroy()                                  # rmdir what create() made (never others' cgroups)
    state = m.to_state(); manager_from_state(state)  # persisted in the runtime's state.json
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at start-up; only type checkers need it
    from typing import Any, Protocol
else:
    Protocol = object

__all__ = ["CgroupManager", "Write"]

#: one planned write: (file relative to the controller's cgroup dir, value),
#: e.g. ("memory.limit_in_bytes", "67108864")
Write = tuple[str, str]


class CgroupManager(Protocol):
    def plan(self, resources: dict[str, Any]) -> list[Write]: ...
    def create(self) -> None: ...
    def set(self, resources: dict[str, Any]) -> None: ...
    def apply(self, pid: int) -> None: ...
    def drop_unused_unified(self, resources: dict[str, Any]) -> None: ...
    def self_join_files(self) -> list[str] | None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def frozen(self) -> bool: ...
    def pids(self) -> list[int]: ...
    def stats(self) -> dict[str, Any]: ...
    def oom_kills(self) -> int: ...
    def destroy(self) -> None: ...
    def to_state(self) -> dict[str, Any]: ...
