"""cgroupfs file plumbing shared by v1 and v2: one open per write, tracked mkdir, patient rmdir."""

from __future__ import annotations

import errno
import os
import time

from isle.cgroups.paths import DEFAULT_PARENT
from isle.errors import ConfigError, InvalidState, IsleError, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["read", "read_int", "read_kv", "read_lines", "write", "write_field", "mkdirs",
           "rmdirs", "errname", "undo", "is_default_leaf"]



def errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def read(path: str) -> str:
    with open(path, "rb", buffering=0) as f:
        return f.read().decode().strip()


def read_int(path: str) -> int | None:
    """An integer file; "max" (v2) -> None; absent -> None."""
    try:
        s = read(path)
    except FileNotFoundError:
        return None
    if s == "max" or not s:
        return None
    return int(s.split()[0])


def read_kv(path: str) -> dict[str, int]:
    """A flat-keyed file ("key value" per line: memory.events, cpu.stat, oom_control)."""
    out: dict[str, int] = {}
    try:
        text = read(path)
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def read_lines(path: str) -> list[str]:
    try:
        return read(path).splitlines()
    except FileNotFoundError:
        return []


def write(path: str, value: str) -> None:
    """Write value with one write(2); cgroupfs treats each write as one command."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_field(directory: str, file: str, value: str, field: str,
                alternates: tuple[str, ...] = ()) -> None:
    """Write one planned value; map the kernel's refusal to an error that names the OCI field."""
    for name in (file, *alternates):
        try:
            write(os.path.join(directory, name), value)
            return
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(field, f"kernel refused {value} for {name}: {errname(e)}") from e
    if not os.path.isdir(directory):
        raise InvalidState(f"cgroup {directory} does not exist (create() it first)")
    raise Unsupported(f"{field}: not supported here ({file} is absent in {directory})")


#: The mark on a parent cgroup isle made for a cgroupsPath (containerd's /<namespace>/<id>, a
#: pod's parent...): containers that come later find the parent there and do not list it as
#: theirs, so whichever container under it goes last removes it by this mark. It lives on the
#: directory (a trusted xattr, root's only), so it goes with it and never outlives it; where it
#: cannot be set (an unprivileged caller) parents stay, as runc leaves them.
MARK = "trusted.isle.made"


def _mark(d: str) -> None:
    try:
        os.setxattr(d, MARK, b"1")
    except OSError:
        pass


def _marked(d: str) -> bool:
    try:
        os.getxattr(d, MARK)
        return True
    except OSError:
        return False


def mkdirs(mount: str, path: str) -> list[str]:
    """mkdir -p mount+path; return the directories this call created, shallowest first.

    isle's default parent ("/isle", from a missing cgroupsPath) is never returned: it is shared
    by every container under it, and rmdirs() removes it once the last of them is gone. Other
    parents this call makes carry MARK, so the last container under a parent takes it, whoever
    made it. A concurrent remover may take a parent between our mkdirs; retry the walk.
    """
    leaf = mount + "/" + "/".join(p for p in path.split("/") if p)
    try:
        os.mkdir(leaf, 0o755)  # the usual case: every parent is there already
        return [leaf]
    except (FileNotFoundError, FileExistsError):
        pass
    except OSError as e:
        raise IsleError(f"cannot create cgroup {leaf}: {e.strerror}") from e
    keep = mount + DEFAULT_PARENT if is_default_leaf(path) else None
    made: list[str] = []
    for _ in range(3):
        cur = mount
        try:
            for part in [p for p in path.split("/") if p]:
                cur = os.path.join(cur, part)
                try:
                    os.mkdir(cur, 0o755)
                    if cur != keep:
                        made.append(cur)
                        if cur != leaf:
                            _mark(cur)
                except FileExistsError:
                    pass
            return made
        except FileNotFoundError:
            continue
        except OSError as e:
            rmdirs(made)
            raise IsleError(f"cannot create cgroup {cur}: {e.strerror}") from e
    rmdirs(made)
    raise IsleError(f"cannot create cgroup {mount}{path}: parent kept disappearing")


def is_default_leaf(path: str) -> bool:
    """Whether path is "/isle/<name>": a container's cgroup under isle's shared default parent."""
    head, _, name = path.rpartition("/")
    return head == DEFAULT_PARENT and bool(name)


def _rmdir_patiently(d: str, patience: float) -> None:
    delay, waited = 0.002, 0.0
    while True:
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or waited >= patience:  # EBUSY: tasks still leaving
                raise
        time.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.1)


def rmdirs(created: list[str], leaves: tuple[str, ...] = ()) -> None:
    """Remove the directories we created, deepest first.

    Under a leaf, cgroups the container made itself go first. A leaf that stays busy
    (processes still inside) is an error, raised once every other hierarchy is done (so a retry
    has only the busy ones left); a shared parent still holding others' cgroups stays, and a
    parent isle made (the default "/isle" or a marked one, see MARK) goes with its last
    container: nothing of isle's outlives it.
    """
    tried: dict[str, bool] = {}  # each directory is tried once: whether it went
    err: InvalidState | None = None  # the first busy leaf; every other hierarchy is still done
    for leaf in leaves:
        if leaf not in created:
            continue
        try:
            os.rmdir(leaf)  # the usual case: no sub-cgroups, no tasks; else walk below it
            tried[leaf] = True
            continue
        except FileNotFoundError:
            tried[leaf] = True
            continue
        except OSError:
            pass
        for top, dirs, _ in os.walk(leaf, topdown=False):
            for d in dirs:
                try:
                    _rmdir_patiently(os.path.join(top, d), 1.0)
                except OSError as e:
                    err = err or InvalidState(f"cannot remove cgroup {top}/{d}: {e.strerror}")
    for d in sorted(created, key=lambda p: p.count("/"), reverse=True):
        if d in tried:
            continue
        try:
            _rmdir_patiently(d, 2.0 if d in leaves else 0.0)
            tried[d] = True
        except OSError as e:
            tried[d] = False
            if d in leaves:
                err = err or InvalidState(f"cannot remove cgroup {d}: {e.strerror} "
                                          "(processes still inside?)")

    def take(d: str) -> bool:
        """rmdir d unless tried already; -> whether it is gone. EBUSY while other containers
        (isle's or not) are in it: theirs to remove."""
        if d not in tried:
            try:
                os.rmdir(d)
                tried[d] = True
            except FileNotFoundError:
                tried[d] = True
            except OSError:
                tried[d] = False
        return tried[d]

    for d in created:
        parent = os.path.dirname(d)
        if parent.endswith(DEFAULT_PARENT) and os.path.ismount(os.path.dirname(parent)):
            take(parent)
    # parents isle made (marked), whichever container made them: the last one out takes them,
    # up to the first that is not isle's or stays (one this call made and removed is passed)
    for leaf in leaves:
        if os.path.isdir(leaf):
            continue  # still busy: it keeps its parents (a retry of destroy comes back here)
        parent = os.path.dirname(leaf)
        while tried.get(parent) or (parent not in tried and _marked(parent) and take(parent)):
            parent = os.path.dirname(parent)
    if err is not None:
        raise err


def undo(destroy: Callable[[], None], err: BaseException) -> None:
    """Roll back a half-made cgroup after err; a failing rollback is noted on err, not raised."""
    try:
        destroy()
    except (OSError, IsleError) as e:
        err.add_note(f"also failed to remove the cgroup: {e}")

