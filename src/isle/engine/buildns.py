"""Rootless ``isle build`` inside a user namespace (buildah's ``unshare`` model).

An unprivileged user cannot give files owners other than its own, nor mount the overlay that
captures a RUN step's changes. So the build runs in a forked child that unshares a user and a
mount namespace; the parent writes its maps through the setuid newuidmap/newgidmap (which check
/etc/subuid and /etc/subgid): the user is root inside, its subordinate range is 1..N, exactly
the maps ``isle run`` gives a rootless container. Inside, COPY --chown and RUN's chown work,
overlayfs mounts (unprivileged in a user namespace since Linux 5.11), and the layers are written
to the user's own store. The child's mount namespace dies with it, so a killed build leaves no
mount on the host. RUN steps nest one more user namespace mapping the build's ids 1:1 (so the
runtime binds devices instead of mknod'ing them) with no cgroup and no network by default.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms of start-up (a rootless run's copy may come here)
    from collections.abc import Callable
    from typing import Any

__all__ = ["run_in_userns", "inside", "step_maps", "mark_owners", "needs_owners", "rmtree"]

#: beside a layer's diff dir (layers/<hex>/owners): it holds files of ids other than the user's
#: own, written by a rootless build; copying it keeps their owners only in the user namespace
OWNERS_MARK = "owners"

#: set in the child: the build's own id maps, as the parent wrote them
_INSIDE: dict[str, list[dict[str, int]]] = {}


def inside() -> bool:
    """Whether this process is a rootless build's user-namespaced child."""
    return bool(_INSIDE)


def step_maps() -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """A RUN step's maps inside the build's namespace: its ids 1:1, one extent per extent of
    the build's own maps (the kernel wants each range within one extent of the parent's)."""
    return tuple([{"containerID": m["containerID"], "hostID": m["containerID"], "size": m["size"]}
                  for m in _INSIDE[k]] for k in ("uid", "gid"))  # type: ignore[return-value]


def mark_owners(layer_dirs: list[str]) -> None:
    """In the build's namespace: mark each layer that holds an entry not owned by root here
    (the user outside), so run's copy and rm go through the user namespace for it."""
    for d in layer_dirs:
        mark = os.path.join(os.path.dirname(d), OWNERS_MARK)
        if os.path.exists(mark) or not _foreign(d):
            continue
        try:
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except OSError:
            pass  # unmarked: run copies it without owners, rm leaves what it cannot delete


def needs_owners(layer_dirs: list[str]) -> bool:
    return any(os.path.exists(os.path.join(os.path.dirname(d), OWNERS_MARK)) for d in layer_dirs)


def _foreign(top: str) -> bool:
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files + ["."]:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if st.st_uid != 0 or st.st_gid != 0:
                return True
    return False


def rmtree(path: str) -> None:
    """Remove path as the user; what its user-namespaced ids keep (a directory of the user's
    subordinate uid holding files) goes in the user namespace, where the user is root over them."""
    from isle.engine.layout import rmtree as plain

    plain(path)
    if not os.path.lexists(path) or os.geteuid() == 0:
        return

    def inner() -> str:
        plain(path)
        return ""

    try:
        run_in_userns(inner)
    except Exception:  # noqa: BLE001 - best effort, as the plain rmtree
        pass


def run_in_userns(fn: Callable[[], str]) -> str:
    """fn() in a child that is root in a new user+mount namespace mapped like a rootless
    container's; -> its str result. An IsleError it raises is raised here with its message and
    exit code; SIGINT/SIGTERM/SIGHUP here are passed on to it (its build cleans up)."""
    from isle.engine.rootless import id_maps
    from isle.errors import IsleError

    uid_map, gid_map = id_maps()  # a clear error now if the user has no ranges
    for tool in ("newuidmap", "newgidmap"):
        from isle.sys import proc

        if proc.which(tool) is None:
            raise IsleError(f"rootless isle needs {tool} here (Debian's uidmap package): "
                            "files of the user's subordinate ids are handled as root of a user "
                            "namespace")
    r_go, w_go = os.pipe()      # child -> parent: unshared; parent -> child: mapped
    r_ok, w_ok = os.pipe()
    r_res, w_res = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r_go)
            os.close(w_ok)
            os.close(r_res)
            code = _child(fn, w_go, r_ok, w_res, uid_map, gid_map)
        except BaseException:  # noqa: BLE001 - the child must exit, whatever happened
            pass
        finally:
            import sys

            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(code)
    os.close(w_go)
    os.close(r_ok)
    os.close(w_res)
    old: dict[int, Any] = {}
    try:
        if os.read(r_go, 1) != b"u":
            raise IsleError("rootless isle: could not make a user namespace (unprivileged "
                            "user namespaces disabled? see sysctl user.max_user_namespaces)")
        try:
            _write_maps(pid, uid_map, gid_map)
        except BaseException:
            os.write(w_ok, b"x")
            raise
        os.write(w_ok, b"m")

        def forward(sig: int, _frame: Any) -> None:
            try:
                if sig == signal.SIGINT and os.getpgid(0) == os.getpgid(pid):
                    return  # a terminal's ^C reached the child too: one is enough
                os.kill(pid, signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM)
            except ProcessLookupError:
                pass

        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old[sig] = signal.signal(sig, forward)
        data = _read_all(r_res)
    finally:
        _reap(pid)
        for signum, h in old.items():
            signal.signal(signum, h)
        for fd in (r_go, w_ok, r_res):
            try:
                os.close(fd)
            except OSError:
                pass
    return _result(data)


def _child(fn: Callable[[], str], w_go: int, r_ok: int, w_res: int,
           uid_map: list[dict[str, int]], gid_map: list[dict[str, int]]) -> int:
    from isle.sys import libc as L

    sc = L.LinuxSyscalls()
    sc.prctl(L.PR_SET_PDEATHSIG, signal.SIGTERM)  # a killed isle stops its build (cleaned up)
    if os.getppid() == 1:
        return 1
    try:
        sc.unshare(L.CLONE_NEWUSER | L.CLONE_NEWNS)
    except OSError:
        os.close(w_go)          # the parent reads EOF: no namespace
        return 1
    os.write(w_go, b"u")
    os.close(w_go)
    if os.read(r_ok, 1) != b"m":
        return 1
    os.close(r_ok)
    try:
        os.setresgid(0, 0, 0)
        os.setgroups([])
        os.setresuid(0, 0, 0)
        # mounts made here (step overlays) never propagate to the host; they die with us
        sc.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
        _INSIDE.update(uid=uid_map, gid=gid_map)
        res: tuple[Any, ...] = ("ok", fn())
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        from isle.errors import IsleError

        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            res = ("err", "builtins", "KeyboardInterrupt", "build interrupted", 130)
        elif isinstance(exc, IsleError):
            res = ("err", type(exc).__module__, type(exc).__qualname__, str(exc),
                   getattr(exc, "exit_code", 125))
        else:
            res = ("err", "isle.errors", "IsleError", f"{type(exc).__name__}: {exc}", 125)
    from isle.oci.fastjson import dumps

    text = dumps(list(res))
    data = text.encode() if isinstance(text, str) else text
    while data:
        data = data[os.write(w_res, data):]
    os.close(w_res)
    return 0


def _write_maps(pid: int, uid_map: list[dict[str, int]], gid_map: list[dict[str, int]]) -> None:
    from isle.sys import proc

    for tool, m in (("newuidmap", uid_map), ("newgidmap", gid_map)):
        args = [str(x) for e in m for x in (e["containerID"], e["hostID"], e["size"])]
        proc.run([tool, str(pid), *args], timeout=30)


def _read_all(fd: int) -> bytes:
    out: list[bytes] = []
    while True:
        try:
            b = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not b:
            return b"".join(out)
        out.append(b)


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        except KeyboardInterrupt:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _result(data: bytes) -> str:
    import importlib

    from isle.errors import IsleError
    from isle.oci.fastjson import loads

    try:
        res = loads(data) if data else None
    except ValueError:
        res = None
    if not res:
        raise IsleError("rootless isle: the user-namespaced process died without a result")
    if res[0] == "ok":
        return str(res[1])
    _, mod, name, msg, code = res
    if name == "KeyboardInterrupt":
        raise KeyboardInterrupt(msg)
    try:
        cls = getattr(importlib.import_module(mod), name)
        if not (isinstance(cls, type) and issubclass(cls, IsleError)):
            cls = IsleError
    except (ImportError, AttributeError):
        cls = IsleError
    exc = cls.__new__(cls)
    exc.args = (msg,)
    exc.exit_code = code
    raise exc
