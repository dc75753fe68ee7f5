"""The one reader of /proc: mount table, process start time and state, cgroup membership,
status and meminfo, each parsed here and nowhere else.

Lean on purpose (only ``os``): the runtime reads mountinfo and its own cgroups on the start
path. ``pid`` is a number or "self"; ``text`` arguments parse a given file body (tests, or a
caller that already read it).

    >>> start_time("self") is not None
    True
    >>> parse_cgroups("12:cpu,cpuacct:/a\\n0::/b\\n")["cpuacct"]
    '/a'
"""

from __future__ import annotations

import os

__all__ = [
    "Mount", "mountinfo", "parse_mountinfo", "mountpoints", "is_mountpoint", "mountpoint_of",
    "stat_fields", "start_time", "state", "ppid", "cgroups", "parse_cgroups", "cgroup_lines",
    "status", "parse_status", "umask", "meminfo", "parse_meminfo",
]

Pid = int | str


def _path(pid: Pid, name: str) -> str:
    return f"/proc/{pid}/{name}"


def _unescape(s: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as \\ooo octal."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
            continue
        out.append(c)
        i += 1
    return "".join(out)


# --- mountinfo ---------------------------------------------------------------------------

class Mount:
    """One line of /proc/PID/mountinfo (proc(5)); paths unescaped."""

    __slots__ = ("mount_id", "parent_id", "dev", "root", "mountpoint", "options", "fstype",
                 "source", "super_options")

    def __init__(self, mount_id: int, parent_id: int, dev: str, root: str, mountpoint: str,
                 options: str, fstype: str, source: str, super_options: str) -> None:
        self.mount_id, self.parent_id, self.dev = mount_id, parent_id, dev
        self.root, self.mountpoint, self.options = root, mountpoint, options
        self.fstype, self.source, self.super_options = fstype, source, super_options

    def __repr__(self) -> str:
        return f"Mount({self.mountpoint!r}, {self.fstype!r}, root={self.root!r})"


def parse_mountinfo(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        f, p = pre.split(), post.split()
        if len(f) < 6:
            continue
        out.append(Mount(int(f[0]), int(f[1]), f[2], _unescape(f[3]), _unescape(f[4]), f[5],
                         p[0] if p else "", _unescape(p[1]) if len(p) > 1 else "",
                         p[2] if len(p) > 2 else ""))
    return out


def mountinfo(pid: Pid = "self") -> list[Mount]:
    """The mount table of pid's mount namespace (OSError if pid is gone)."""
    with open(_path(pid, "mountinfo")) as f:
        return parse_mountinfo(f.read())


def mountpoints(pid: Pid = "self") -> list[str]:
    """Every mount point of pid's mount namespace, in mount order (one per mount: stacked
    mounts repeat)."""
    with open(_path(pid, "mountinfo")) as f:
        return [_unescape(line.split()[4]) for line in f]


def is_mountpoint(path: str, pid: Pid = "self") -> bool:
    """Whether path (resolved) is a mount point; False when /proc cannot be read."""
    real = os.path.realpath(path)
    try:
        return real in mountpoints(pid)
    except OSError:
        return False


def mountpoint_of(path: str, pid: Pid = "self") -> str:
    """The longest mount point that contains path ("/" when none or unreadable)."""
    best = "/"
    try:
        mps = mountpoints(pid)
    except OSError:
        return best
    for mp in mps:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best = mp
    return best


# --- stat --------------------------------------------------------------------------------

def stat_fields(pid: Pid = "self") -> list[bytes] | None:
    """/proc/PID/stat fields from state (field 3 of proc(5)) on: index i is field i + 3.
    None if the process is gone. The comm field may hold spaces and ")": cut at the last ")"."""
    try:
        with open(_path(pid, "stat"), "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def state(pid: Pid = "self") -> str | None:
    """The one-letter state (R, S, D, Z, X, ...), None if gone."""
    f = stat_fields(pid)
    return f[0].decode() if f else None


def ppid(pid: Pid = "self") -> int | None:
    """The parent's pid (field 4), None if gone."""
    f = stat_fields(pid)
    return int(f[1]) if f and len(f) > 1 else None


def start_time(pid: Pid) -> int | None:
    """Start time in clock ticks since boot (field 22), None if gone, a zombie or dead:
    (pid, start time) names one process across pid reuse."""
    if isinstance(pid, int) and pid <= 0:
        return None
    f = stat_fields(pid)
    if not f or f[0] in (b"Z", b"X") or len(f) < 20:
        return None
    return int(f[19])


# --- cgroup ------------------------------------------------------------------------------

def cgroup_lines(pid: Pid = "self", text: str | None = None) -> list[tuple[str, str, str]]:
    """[(hierarchy id, controllers, path)] of /proc/PID/cgroup; controllers "" is cgroup2.
    [] if the process is gone."""
    if text is None:
        try:
            with open(_path(pid, "cgroup")) as f:
                text = f.read()
        except OSError:
            return []
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out


def parse_cgroups(text: str) -> dict[str, str]:
    """{controller: path}; the cgroup2 entry is keyed "unified", "name=x" hierarchies "x"."""
    out: dict[str, str] = {}
    for _, ctrls, path in cgroup_lines(text=text):
        if not ctrls:
            out["unified"] = path
        for c in ctrls.split(","):
            if c:
                out[c.removeprefix("name=")] = path
    return out


def cgroups(pid: Pid = "self") -> dict[str, str]:
    """pid's cgroups as parse_cgroups gives them (OSError if pid is gone)."""
    with open(_path(pid, "cgroup")) as f:
        return parse_cgroups(f.read())


# --- status, meminfo ---------------------------------------------------------------------

def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k] = v.strip()
    return out


def status(pid: Pid = "self") -> dict[str, str]:
    """/proc/PID/status as {field: value text} (OSError if pid is gone)."""
    with open(_path(pid, "status")) as f:
        return parse_status(f.read())


def umask() -> int | None:
    """This process's umask, read without changing it (os.umask would, for every thread);
    None where the kernel does not show it (before 4.7)."""
    try:
        v = status().get("Umask")
        return int(v, 8) if v else None
    except (OSError, ValueError):
        return None


def parse_meminfo(text: str) -> dict[str, int]:
    """{field: bytes}; fields given in kB are converted."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        p = v.split()
        if not sep or not p:
            continue
        try:
            n = int(p[0])
        except ValueError:
            continue
        out[k] = n * 1024 if len(p) > 1 and p[1] == "kB" else n
    return out


def meminfo() -> dict[str, int]:
    """/proc/meminfo as {field: bytes} (MemTotal, MemAvailable, ...)."""
    with open("/proc/meminfo") as f:
        return parse_meminfo(f.read())
