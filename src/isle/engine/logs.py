"""Read conmon's k8s-file logs: `<RFC3339Nano> <stdout|stderr> <P|F> <bytes>` per line.

P marks a partial line (no newline yet); F ends one. `isle logs` rebuilds the original byte stream
per stream, with --tail, --since, -t (timestamps) and -f (follow until the container stops).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

__all__ = ["LogEntry", "parse_line", "read_entries", "follow", "parse_since"]


@dataclass(slots=True)
class LogEntry:
    ts: str
    time: float
    stream: str  # stdout | stderr
    data: bytes  # ends with b"\n" unless the container never finished the line


def _ts(s: str) -> float:
    # 2024-11-26T16:40:00.123456789+00:00 -> trim nanoseconds to micro for fromisoformat
    try:
        main, _, rest = s.partition(".")
        frac = ""
        tz = ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                frac, tz = rest[:i], rest[i:]
                break
        else:
            frac = rest
        tz = "+00:00" if tz == "Z" else tz
        return datetime.fromisoformat(f"{main}.{(frac + '000000')[:6]}{tz}").timestamp()
    except ValueError:
        return 0.0


def parse_line(line: bytes) -> tuple[str, str, bool, bytes] | None:
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0].decode(), parts[1].decode(), parts[2]
    data = parts[3] if len(parts) == 4 else b""
    return ts, stream, tag == b"F", data


class _Assembler:
    def __init__(self) -> None:
        self.partial: dict[str, bytes] = {}

    def feed(self, line: bytes) -> LogEntry | None:
        p = parse_line(line)
        if p is None:
            return None
        ts, stream, full, data = p
        buf = self.partial.pop(stream, b"") + data
        if not full:
            self.partial[stream] = buf
            return None
        return LogEntry(ts=ts, time=_ts(ts), stream=stream, data=buf + b"\n")


def read_entries(path: str) -> list[LogEntry]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    asm = _Assembler()
    out = []
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # being written
        e = asm.feed(line)
        if e is not None:
            out.append(e)
    return out


def follow(path: str, start_offset: int, running: Callable[[], bool]) -> Iterator[LogEntry]:
    """Yield entries appended after start_offset until running() is false and the file is
    drained."""
    asm = _Assembler()
    pos = start_offset
    ino = None
    pending = b""
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if ino is not None and (st.st_ino != ino or st.st_size < pos):
                pos, pending = 0, b""  # rotated
            ino = st.st_ino
            if st.st_size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                pos += len(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for ln in lines:
                    e = asm.feed(ln + b"\n")
                    if e is not None:
                        yield e
                continue
        if not running():
            return
        time.sleep(0.1)


def parse_since(value: str, now: float | None = None) -> float:
    """--since: a duration ago (10m, 1h30m), a unix time, or an RFC3339 date."""
    from isle.engine.options import parse_duration
    from isle.errors import ConfigError

    now = time.time() if now is None else now
    if not value:
        return 0.0
    try:
        return float(value) if "." in value or value.isdigit() and len(value) > 6 else \
            now - parse_duration("--since", value)
    except ConfigError:
        pass
    try:
        v = value.replace("Z", "+00:00")
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        raise ConfigError("--since",
                          f"invalid time {value!r} (e.g. 10m, 2024-01-02T15:04:05Z)") from None
