"""The runtime's door to isle.cgroups: a manager for a container, with runc's default devices."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms of start-up (it imports re)
    from typing import Any


__all__ = ["manager", "from_state", "resources_with_defaults"]


def manager(cgroups_path: str | None, cid: str) -> Any:
    from isle.cgroups import manager_for

    return manager_for(cgroups_path, cid)


def from_state(st: dict[str, Any]) -> Any:
    from isle.cgroups import manager_from_state

    return manager_from_state(st)


def resources_with_defaults(resources: dict[str, Any] | None,
                            devices: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Like runc's specconv: after the spec's device rules, allow linux.devices and the defaults."""
    res = dict(resources or {})
    if res.get("devices") is None:
        return res
    from isle.cgroups import DEFAULT_ALLOWED_DEVICES

    extra = [{"allow": True, "type": "c" if d["type"] == "u" else d["type"],
              "major": d.get("major"), "minor": d.get("minor"), "access": "rwm"}
             for d in devices or [] if d["type"] in ("c", "b", "u")]
    res["devices"] = list(res["devices"]) + extra + list(DEFAULT_ALLOWED_DEVICES)
    return res
