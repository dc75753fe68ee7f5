"""Reading OCI ``linux.resources`` values with errors that name the field; device rules as data."""

from __future__ import annotations

from isle.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at start-up; only type checkers need it
    from typing import Any

__all__ = ["R", "Plan", "section", "entries", "dev_id", "num", "opt_num", "text", "device_rules",
           "device_line", "page_size", "DEFAULT_ALLOWED_DEVICES"]

R = "linux.resources"
#: internal plan entry: (file, value, OCI field it came from)
Plan = list[tuple[str, str, str]]


def section(res: dict[str, Any], key: str, field: str | None = None) -> dict[str, Any]:
    v = res.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(field or f"{R}.{key}", "must be an object")
    return v


def entries(d: dict[str, Any], key: str, field: str) -> list[tuple[str, dict[str, Any]]]:
    """A list of objects at d[key], each with its field name: [("<field>.<key>[0]", {...})]."""
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ConfigError(f"{field}.{key}", "must be a list")
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise ConfigError(f"{field}.{key}[{i}]", "must be an object")
        out.append((f"{field}.{key}[{i}]", item))
    return out


def dev_id(d: dict[str, Any], field: str) -> str:
    """"major:minor" of a blockIO device entry."""
    major = num(d.get("major"), f"{field}.major", lo=0)
    return f"{major}:{num(d.get('minor'), f'{field}.minor', lo=0)}"


def num(value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be an integer, not {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(field, f"{value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(field, f"{value} is above the maximum {hi}")
    return int(value)


def opt_num(d: dict[str, Any], key: str, field: str, lo: int | None = None,
            hi: int | None = None) -> int | None:
    v = d.get(key)
    return None if v is None else num(v, f"{field}.{key}", lo, hi)


def text(d: dict[str, Any], key: str, field: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{field}.{key}", f"must be a string, not {v!r}")
    if "\n" in v:
        raise ConfigError(f"{field}.{key}", "may not contain a newline")
    return v


def page_size(value: Any, field: str) -> str:
    if not (isinstance(value, str) and value[-2:] in ("KB", "MB", "GB") and value[:-2].isdigit()
            and value[:-2].isascii()):
        raise ConfigError(field, f"{value!r} is not a page size like 2MB or 1GB")
    return value


def device_rules(res: dict[str, Any]) -> list[dict[str, Any]] | None:
    """linux.resources.devices normalised: [{allow, type, major, minor, access}] (None: not given).

    major/minor None means any ("*"). Rules apply in order over a deny-all start (Docker's way).
    """
    devs = res.get("devices")
    if devs is None:
        return None
    if not isinstance(devs, list):
        raise ConfigError(f"{R}.devices", "must be a list")
    out = []
    for i, d in enumerate(devs):
        f = f"{R}.devices[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(f, "must be an object")
        allow = d.get("allow")
        if not isinstance(allow, bool):
            raise ConfigError(f"{f}.allow", f"must be true or false, not {allow!r}")
        typ = d.get("type") or "a"
        if typ not in ("a", "b", "c"):
            raise ConfigError(f"{f}.type", f"{typ!r} is not one of a, b, c")
        major = opt_num(d, "major", f, lo=-1)
        minor = opt_num(d, "minor", f, lo=-1)
        access = d.get("access") or "rwm"
        if not isinstance(access, str) or not access or set(access) - set("rwm") \
                or len(set(access)) != len(access):
            raise ConfigError(f"{f}.access", f"{access!r} is not a combination of r, w, m")
        out.append({"allow": allow, "type": typ,
                    "major": None if major is None or major < 0 else major,
                    "minor": None if minor is None or minor < 0 else minor, "access": access})
    return out


def device_line(rule: dict[str, Any]) -> str:
    """A rule in devices.allow/deny syntax: "c 1:3 rwm", "a *:* rwm"."""
    mj = "*" if rule["major"] is None else str(rule["major"])
    mn = "*" if rule["minor"] is None else str(rule["minor"])
    return f"{rule['type']} {mj}:{mn} {rule['access']}"


def _dev(typ: str, major: int | None, minor: int | None, access: str = "rwm") -> dict[str, Any]:
    return {"allow": True, "type": typ, "major": major, "minor": minor, "access": access}


#: what runc always allows after a spec's own rules (null, zero, full, tty, random, urandom,
#: console, ptmx, pts, and mknod of any device); the runtime appends these, as runc's specconv does.
DEFAULT_ALLOWED_DEVICES: list[dict[str, Any]] = [
    _dev("c", None, None, "m"), _dev("b", None, None, "m"),
    _dev("c", 1, 3), _dev("c", 1, 8), _dev("c", 1, 7), _dev("c", 5, 0), _dev("c", 1, 5),
    _dev("c", 1, 9), _dev("c", 5, 1), _dev("c", 5, 2), _dev("c", 136, None),
]
