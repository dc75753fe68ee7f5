"""Teardown: what `delete`, a failed `create` and the end of `run` do to take a container apart.

    destroy(ctr, hooks=True)   # kill what is left, remove the cgroup, poststop hooks, state dir

The init and every task left in the container's cgroup are killed (a frozen cgroup thawed so
they can die), the cgroup removed once empty, mounts that landed in the caller's mount
namespace (a spec without one) detached, the poststop hooks run (warnings only), the state dir
removed last, so a failure half-way leaves a state that `delete --force` finds again.
"""

from __future__ import annotations

import os
import time

from isle.runtime.state import STOPPED, Container, alive

__all__ = ["destroy", "wait_gone", "warn"]


def warn(msg: str) -> None:
    os.write(2, f"isle-runtime: warning: {msg}\n".encode())


def wait_gone(pid: int, starttime: int | None, timeout: float = 10.0) -> None:
    if alive(pid, starttime) and _wait_pidfd(pid, starttime, timeout):
        return
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while alive(pid, starttime) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # only succeeds if we are its (sub)reaper
        except ChildProcessError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_pidfd(pid: int, starttime: int | None, timeout: float) -> bool:
    """Sleep until pid exits, woken by the kernel (a pidfd polls readable at exit), instead of
    polling /proc; False where pidfds are missing (the caller polls then)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        if alive(pid, starttime):  # the pidfd names the process we mean, not a reused pid
            import select

            p = select.poll()
            p.register(fd, select.POLLIN)
            p.poll(int(timeout * 1000))
        try:
            os.waitpid(pid, os.WNOHANG)  # only succeeds if we are its (sub)reaper
        except ChildProcessError:
            pass
        return not alive(pid, starttime)
    finally:
        os.close(fd)


def destroy(ctr: Container, hooks: bool) -> None:
    """Kill what is left, remove the cgroup, run poststop hooks, remove the state dir."""
    d = ctr.data
    cg = None
    try:
        cg = ctr.cgroup()
    except Exception:  # noqa: BLE001 -- a half-written cgroup state still must not block delete
        cg = None
    pid, st = d.get("pid"), d.get("starttime")
    s1 = d.get("stage1")
    if s1 and alive(s1, None) and not pid:
        try:
            os.kill(s1, 9)
        except OSError:
            pass
    if pid and alive(pid, st):
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    left: list[int] | None = None  # None: unknown
    if cg is not None:
        try:
            left = pids = cg.pids()
            for p in pids:
                try:
                    os.kill(p, 9)
                except OSError:
                    pass
            if left and cg.frozen():
                cg.thaw()
        except OSError:
            left = None
    if pid:
        wait_gone(pid, st)
    if cg is not None:
        # empty with its init gone (`run` reaped it): nothing can join it any more
        deadline = time.monotonic() + (0 if left == [] and not alive(pid, st) else 5)
        delay = 0.0002  # an exited task leaves cgroup.procs within a ms or so
        while time.monotonic() < deadline:
            try:
                if not cg.pids():
                    break
            except OSError:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
        try:
            cg.destroy()
        except OSError as exc:
            warn(f"removing cgroup: {exc}")
    cfg = d.get("config") or {}
    if cfg and not any(n["type"] == "mount" for n in (cfg.get("linux") or {}).get(
            "namespaces") or []) and d.get("rootfs"):
        _umount_under(d["rootfs"])  # no mount ns: the spec's mounts landed in ours (as runc's)
    if hooks:
        from isle.runtime import hooks as hk

        for w in hk.run_hooks((d.get("config") or {}).get("hooks"), "poststop",
                              ctr.hook_state(STOPPED), warn_only=True):
            warn(w)
    _rmtree(ctr.dir)


def _umount_under(rootfs: str) -> None:
    """Detach the mounts under rootfs, each by an fd checked to be that very mount point: the
    container (in our mount namespace) may have swapped a directory on the way for a symlink
    to a host path between the read of mountinfo and the umount."""
    from isle.sys import libc as L
    from isle.sys.inroot import Root
    from isle.sys.procfs import mountpoints

    mps = mountpoints()
    sysc = L.LinuxSyscalls()
    base = rootfs.rstrip("/")
    try:
        r = Root(rootfs)
    except OSError:
        return
    with r:
        for mp in sorted({m for m in mps if m.startswith(base + "/")}, key=len, reverse=True):
            try:
                fd = r.open(mp[len(base):], os.O_PATH, follow=False)
            except OSError:
                continue
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == mp:
                    sysc.umount2(f"/proc/self/fd/{fd}", L.MNT_DETACH)
            except OSError:
                pass
            finally:
                os.close(fd)


def _rmtree(d: str) -> None:
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for n in names:
        p = os.path.join(d, n)
        if os.path.isdir(p) and not os.path.islink(p):
            _rmtree(p)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
