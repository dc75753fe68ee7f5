"""Signal names and numbers as users write them (`kill -s`, `--stop-signal`, a runtime's `kill`):
one parser for isle, isle-runtime and isle-vm-runtime. A table, not the `signal` module: that one
builds enums on import, which the container start path does not pay for."""

from __future__ import annotations

from isle.errors import ConfigError

__all__ = ["NUMBERS", "parse"]

#: Linux x86-64/arm64 numbers by name (no SIG prefix)
NUMBERS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "POLL": 29, "PWR": 30, "SYS": 31,
}


def parse(value: str, field: str = "signal") -> int:
    """'9', 'KILL', 'SIGKILL', 'sigterm', 'RTMIN+3', 'RTMAX-1' -> its number (1-64); anything
    else is a ConfigError naming `field` (the flag or spec field it came from)."""
    u = value.strip().upper()
    if u.isdigit():
        n = int(u)
        if 0 < n < 65:
            return n
        raise ConfigError(field, f"invalid signal {value!r}")
    u = u.removeprefix("SIG")
    if u in NUMBERS:
        return NUMBERS[u]
    if u.startswith(("RTMIN", "RTMAX")):
        base = 34 if u.startswith("RTMIN") else 64
        rest = u[5:]
        try:
            n = base + int(rest) if rest else base
        except ValueError:
            n = 0
        if 34 <= n <= 64:
            return n
    raise ConfigError(field, f"unknown signal {value!r}")
