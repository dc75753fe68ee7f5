"""Verbs that move bytes in and out of containers: cp, export, diff, commit,
stats, port, events, system df/prune."""

from __future__ import annotations

import os
import stat
import time

from isle.engine.db import ContainerRecord
from isle.engine.layout import read_int
from isle.engine.options import RunOptions
from isle.engine.quiet import suppress
from isle.errors import ConfigError, InvalidState, IsleError, NotFound

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from typing import IO, Any

    from isle.engine.containers import Containers
    from isle.engine.context import Context
    from isle.engine.queries import Queries
    from isle.engine.supervisor import Supervisor

__all__ = ["Transfer"]


_MOUNTPOINTS = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/sbin/docker-init"}


def _du(path: str) -> int:
    """Bytes used by the files under path (a container's upper dir, a volume: trees a running
    container changes), walked by directory fd so a swapped-in symlink is never followed."""
    from isle.sys import fdtree

    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    total = 0
    try:
        for _, _, ents in fdtree.walk(top):
            total += sum(st.st_blocks * 512 for _, st in ents if not stat.S_ISDIR(st.st_mode))
    except OSError:
        pass
    finally:
        os.close(top)
    return total


def _allocated(path: str) -> int:
    """Bytes a (sparse) file really uses on disk; 0 if it is missing."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


class Transfer:
    """cp, export, diff, commit, stats, port, events, system df/prune over a Context and a
    Supervisor; system prune asks the container and volume verbs (passed in) to prune."""

    def __init__(self, ctx: Context, sup: Supervisor, containers: Containers,
                 queries: Queries) -> None:
        self.ctx, self.sup = ctx, sup
        self.containers, self.queries = containers, queries

    def _rootfs(self, rec: ContainerRecord) -> AbstractContextManager[str]:
        """The container's merged rootfs on the host; mounted for the block if it is not running."""
        from contextlib import contextmanager  # not at import: ~2 ms of every CLI start

        return contextmanager(self._rootfs_gen)(rec)

    def _rootfs_gen(self, rec: ContainerRecord) -> Iterator[str]:
        p = self.ctx.paths(rec.id)
        if rec.state in ("running", "paused") and os.path.ismount(p.rootfs):
            yield p.rootfs
            return
        with self.ctx.locked(rec.id):
            img = self.ctx.store.resolve(rec.image_id)
            root = self.ctx.store.mount_rootfs(img, p.bundle)
            try:
                yield root
            finally:
                cur = self.sup.get(rec.id)
                if cur.state not in ("running", "paused"):
                    self.ctx.store.unmount_rootfs(p.bundle)

    def _guest(self, rec: ContainerRecord, verb: str) -> bool:
        """Its files are a guest's (caps.host_rootfs false, started at least once): cp, export,
        diff and commit go through its runtime (engine/guestfs.py); a runtime that cannot reach
        its guest refuses them (Unsupported, exit 125). Before its first start the bundle's
        rootfs is what the runtime hands the guest: the host way."""
        from isle.engine import guestfs

        return guestfs.is_guest(self, rec, verb)

    def _croot(self, rec: ContainerRecord, rootfs: str, cpath: str) -> tuple[str, str]:
        """A container path -> (the host directory that is '/' for it, the path inside that).

        Volumes and bind mounts are matched on the path as written (the longest target wins)
        and the rest resolves inside the volume; everything else resolves inside the rootfs.
        The caller resolves through ``Root`` (openat2 RESOLVE_IN_ROOT): never a joined string."""
        import posixpath

        # '..' is lexical here, as in docker cp (filepath.Join("/", path)): a volume's path can
        # never walk up into the rootfs or, for a bind-mounted file, into the host directory
        cpath = posixpath.normpath("/" + cpath)
        if cpath.startswith("//"):
            cpath = "/" + cpath.lstrip("/")
        best = None
        for m in RunOptions.from_dict(rec.opts).mounts:
            t = m.target.rstrip("/") or "/"
            if m.type != "tmpfs" and (cpath == t or cpath.startswith(t + "/")):
                if best is None or len(t) > len(best[0]):
                    src = (m.source if m.type == "bind"
                           else self.ctx.db.get_volume(m.source).mountpoint)
                    best = (t, src)
        if best:
            rest = cpath[len(best[0]):] or "/"
            if not os.path.isdir(best[1]):  # a bind-mounted file: only the file itself
                if rest != "/":
                    raise NotFound(f"{cpath}: {best[0]} is a file")
                return os.path.dirname(best[1]) or "/", "/" + os.path.basename(best[1])
            return best[1], rest
        return rootfs, cpath

    def cp(self, src: str, dst: str, *, follow_link: bool = False) -> None:
        """`cp CONTAINER:PATH HOSTPATH` or `cp HOSTPATH CONTAINER:PATH` (docker cp semantics).

        Every container-side path resolves inside the container (symlinks, '..' and a directory
        swapped for a symlink mid-copy included) and the copy works on directory fds only
        (sys/fdtree): symlinks in a copied tree are copied as symlinks, never followed. A symlink
        as the container path itself is followed inside the container; a host source symlink is
        copied as a link unless ``follow_link`` (-L). Out of a container, device nodes are not
        recreated on the host and set-id bits are dropped (the container made them)."""

        def split(x: str) -> tuple[str | None, str]:
            if ":" in x and not x.startswith("/") and not x.startswith("."):
                c, _, path = x.partition(":")
                return c, path
            return None, x

        (sc, sp), (dc, dp) = split(src), split(dst)
        if (sc is None) == (dc is None):
            raise ConfigError("cp", "copying between containers or between host paths is not "
                              "supported; one side must be CONTAINER:PATH")
        if not (sp if sc is not None else dp):
            raise ConfigError("cp", "the container path is empty")
        rec = self.sup.get(sc if sc is not None else dc or "")
        if self._guest(rec, "cp"):
            from isle.engine import guestfs

            if sc is not None:
                return guestfs.cp_out(self, rec, sp, dp)
            return guestfs.cp_in(self, rec, sp, dp, follow_link)
        with self._rootfs(rec) as rootfs:
            if sc is not None:
                self._cp_out(rec, rootfs, sp, dp)
            else:
                self._cp_in(rec, rootfs, sp, dp, follow_link)

    def _cp_out(self, rec: ContainerRecord, rootfs: str, sp: str, dp: str) -> None:
        from isle.sys import fdtree
        from isle.sys.inroot import Root

        base, rel = self._croot(rec, rootfs, sp)
        contents = sp.endswith("/.")
        with Root(base) as r:
            try:
                sfd = r.open(rel, os.O_PATH | (os.O_DIRECTORY if sp.endswith(("/", "/.")) else 0))
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"could not find the file {sp} in container {rec.name}") from None
            except OSError as e:
                raise ConfigError("cp", f"{rec.name}:{sp}: {e.strerror}") from None
            try:
                st = os.fstat(sfd)
                is_dir = stat.S_ISDIR(st.st_mode)
                if not (is_dir or stat.S_ISREG(st.st_mode)):
                    # a device, FIFO or socket: copy the entry itself through its parent
                    pfd, name = r.parent(r.name_of(sfd))
                    os.close(sfd)
                    sfd = -1
                    try:
                        self._cp_to_host(sp, dp, False, lambda d, n: fdtree.copy(
                            pfd, name, d, n, keep_owner=True, untrusted=True), None)
                    finally:
                        os.close(pfd)
                    return
                self._cp_to_host(sp, dp, is_dir and contents, lambda d, n: fdtree.copy_fd(
                    sfd, d, n, keep_owner=True, untrusted=True), sfd if is_dir else None)
            finally:
                if sfd >= 0:
                    os.close(sfd)

    @staticmethod
    def _cp_to_host(sp: str, dp: str, contents: bool, put: Any, dir_fd: int | None) -> None:
        """Docker's rules for the host side of `cp CONTAINER:SRC DST` (the user's own path)."""
        from isle.sys import fdtree

        name = os.path.basename(sp.rstrip("/").removesuffix("/.").rstrip("/")) or "rootfs"
        try:
            dst_is_dir = stat.S_ISDIR(os.stat(dp).st_mode)
            exists = True
        except FileNotFoundError:
            exists = dst_is_dir = False
        except NotADirectoryError:
            raise ConfigError("cp", f"{dp}: a parent is not a directory") from None
        if exists and not dst_is_dir:
            if dir_fd is not None:
                raise ConfigError("cp", f"cannot copy a directory to a file: {dp}")
            if dp.endswith("/"):
                raise ConfigError("cp", f"{dp}: not a directory")
        if not exists and dp.endswith("/") and dir_fd is None:
            raise NotFound(f"the destination directory {dp} does not exist")
        if dst_is_dir:
            dfd = os.open(dp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if contents and dir_fd is not None:
                    fdtree.copy_into(dir_fd, dfd, keep_owner=True, untrusted=True)
                else:
                    put(dfd, name)
            finally:
                os.close(dfd)
            return
        parent = os.path.dirname(dp.rstrip("/")) or ("/" if dp.startswith("/") else ".")
        try:
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"the destination directory {parent} does not exist") from None
        try:
            put(pfd, os.path.basename(dp.rstrip("/")))
        finally:
            os.close(pfd)

    def _cp_in(self, rec: ContainerRecord, rootfs: str, sp: str, dp: str, follow: bool) -> None:
        from isle.engine.guestfs import host_source
        from isle.sys import fdtree
        from isle.sys.inroot import Root

        # the host source: its own symlink is copied as a link unless -L (or 'dir/', 'dir/.')
        contents, hpath, hname, follow, hst = host_source(sp, follow)
        src_dir = stat.S_ISDIR(hst.st_mode)
        hparent = os.path.dirname(hpath)
        base, rel = self._croot(rec, rootfs, dp)
        with Root(base) as r:
            try:
                real = fdtree.resolve(r, rel)
            except OSError as e:
                raise ConfigError("cp", f"{rec.name}:{dp}: {e.strerror}") from None
            try:
                dst = os.fstat(fd := r.open(real, os.O_PATH))
                os.close(fd)
            except FileNotFoundError:
                dst = None
            except OSError as e:
                raise ConfigError("cp", f"{rec.name}:{dp}: {e.strerror}") from None
            if dst is not None and not stat.S_ISDIR(dst.st_mode):
                if src_dir:
                    raise ConfigError("cp", f"cannot copy a directory to a file: {rec.name}:{dp}")
                if dp.endswith("/"):
                    raise ConfigError("cp", f"{rec.name}:{dp}: not a directory")
            if dst is None and dp.endswith("/") and not src_dir:
                raise NotFound(f"the destination directory {dp} does not exist in container "
                               f"{rec.name}")
            if dst is not None and stat.S_ISDIR(dst.st_mode):
                ddir, dname = r.opendir(real), hname
                if contents or not dname:
                    dname = ""
            else:
                try:
                    ddir, dname = r.parent(real)
                except (FileNotFoundError, NotADirectoryError):
                    raise NotFound(f"could not find the directory {os.path.dirname(dp.rstrip('/'))}"
                                   f" in container {rec.name}") from None
            try:
                if not dname:  # the source's contents into the directory
                    if not src_dir:
                        raise ConfigError("cp", f"{sp}: not a directory")
                    sfd = os.open(hpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        fdtree.copy_into(sfd, ddir, keep_owner=False)
                    finally:
                        os.close(sfd)
                elif follow and (src_dir or stat.S_ISREG(hst.st_mode)):
                    sfd = os.open(hpath, os.O_PATH | os.O_CLOEXEC)
                    try:
                        fdtree.copy_fd(sfd, ddir, dname, keep_owner=False)
                    finally:
                        os.close(sfd)
                else:
                    hfd = os.open(hparent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        fdtree.copy(hfd, hname, ddir, dname, keep_owner=False, follow=follow)
                    finally:
                        os.close(hfd)
            except IsADirectoryError as e:
                raise ConfigError("cp", f"{rec.name}:{dp}: {e.strerror}") from None
            finally:
                os.close(ddir)

    def export(self, ref: str, out: IO[bytes]) -> None:
        rec = self.sup.get(ref)
        if self._guest(rec, "export"):
            from isle.engine import guestfs

            return guestfs.export(self, rec, out)
        with self._rootfs(rec) as root:
            self.ctx.store.tar_directory(root, out)

    def diff(self, ref: str) -> list[tuple[str, str]]:
        """[(A|C|D, path)] from the overlay upper dir, Docker's order (sorted paths).

        The upper dir is the container's to change while this runs: it is walked by directory
        fd (sys/fdtree), and a path is looked up in the image's layers without following any
        symlink (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)."""
        rec = self.sup.get(ref)
        if self._guest(rec, "diff"):
            from isle.engine import guestfs

            with guestfs.upper(self, rec) as up:
                return self._diff(rec, up)
        return self._diff(rec, self.ctx.paths(rec.id).upper)

    def _diff(self, rec: ContainerRecord, upper: str) -> list[tuple[str, str]]:
        from isle.sys import fdtree
        from isle.sys.inroot import RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, openat2

        img = self.ctx.store.resolve(rec.image_id)
        lowers = []
        out: list[tuple[str, str]] = []
        try:
            for d in img.layer_dirs:
                with suppress(OSError):
                    lowers.append(os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))

            def in_lower(rel: str) -> bool:
                for lfd in lowers:
                    try:
                        os.close(openat2(lfd, rel, os.O_PATH | os.O_NOFOLLOW, 0,
                                         RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS))
                        return True
                    except OSError:
                        continue
                return False

            try:
                top = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                return []
            try:
                for drel, _dfd, ents in fdtree.walk(top):
                    for name, st in ents:
                        rel = f"/{drel}/{name}" if drel else f"/{name}"
                        if rel in _MOUNTPOINTS and st.st_size == 0:
                            continue  # created by the runtime as bind-mount targets
                        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                            out.append(("D", rel))
                        elif in_lower(rel.lstrip("/")):
                            out.append(("C", rel))
                        else:
                            out.append(("A", rel))
            finally:
                os.close(top)
        finally:
            for lfd in lowers:
                os.close(lfd)
        return sorted(out, key=lambda x: x[1])

    def commit(self, ref: str, repo: str = "", *, changes: list[str] | None = None,
               message: str = "", author: str = "", pause: bool = True) -> str:
        rec = self.sup.get(ref)
        guest = self._guest(rec, "commit")  # its guest answers while it runs: not paused
        img = self.ctx.store.resolve(rec.image_id)
        cfg_changes = _parse_changes(changes or [], img.config.get("config") or {})
        paused = False
        if pause and rec.state == "running" and not guest:
            with suppress(Exception):
                self.ctx.oci(rec).pause(rec.id)
                paused = True
        try:
            from contextlib import nullcontext

            from isle.engine import guestfs

            with (guestfs.upper(self, rec) if guest
                  else nullcontext(self.ctx.paths(rec.id).upper)) as up:
                new = self.ctx.store.commit(up, img, cfg_changes, names=[repo] if repo else [],
                                            comment=message, author=author,
                                            created_by=f"isle commit {rec.id[:12]}")
        finally:
            if paused:
                with suppress(Exception):
                    self.ctx.oci(rec).resume(rec.id)
        self.ctx.db.add_event("container", "commit", rec.id, {"image": new.id})
        return str(new.id)

    def stats(self, refs: list[str] | None = None, *,
              interval: float = 0.5) -> list[dict[str, Any]]:
        """One sample per running container: CPU % over `interval`, memory usage/limit, pids."""
        from isle.cgroups import manager_for

        recs = [self.sup.get(r) for r in refs] if refs else self.sup.records()
        for r in recs:
            if r.state not in ("running", "paused"):
                raise InvalidState(f"container {r.name} is not running")
        # a guest's numbers come from its kernel through the runtime (caps.host_procs false)
        guests = {r.id: self.ctx.oci(r) for r in recs
                  if not self.ctx.oci(r).caps.host_procs}
        gfirst: dict[str, tuple[float, dict[str, int]]] = {}
        for r in recs:
            if r.id in guests:
                try:
                    gfirst[r.id] = (time.monotonic(), guests[r.id].guest_stats(r.id))
                except IsleError:
                    if refs:
                        raise
        if not refs:  # all running containers: a guest that cannot answer is left out
            recs = [r for r in recs if r.id not in guests or r.id in gfirst]
        # two samples `interval` apart per container, each timed on its own; only the files the
        # numbers need (300 containers: 2.55 s -> under 1 s, bench/stats_bench.py)
        mcache = os.path.join(self.ctx.s.runroot, ".cgroup-mounts")
        mgrs = {}
        first: dict[str, tuple[float, int]] = {}
        t0 = time.monotonic()
        for r in recs:
            if r.id in guests:
                continue
            with suppress(Exception):
                mgrs[r.id] = manager_for(f"/isle-{r.id}", r.id, mounts_cache=mcache)
                first[r.id] = (time.monotonic(), _cpu_ns(mgrs[r.id]))
        if recs:
            time.sleep(max(0.05, interval - (time.monotonic() - t0)))
        from isle.engine.queries import mem_total

        host_mem = mem_total()
        out = []
        for r in recs:
            if r.id in guests:
                out.append(_guest_row(r, guests[r.id], *gfirst[r.id]))
                continue
            s = _sample(mgrs[r.id]) if r.id in mgrs else {}
            cpu = 0.0
            if r.id in first and s:
                t1, u1 = first[r.id]
                dt = max(time.monotonic() - t1, 1e-6)
                cpu = (s["cpu"]["usage_ns"] - u1) / (dt * 1e9) * 100
            mem = (s.get("memory") or {}).get("usage") or 0
            lim = (s.get("memory") or {}).get("limit") or host_mem
            out.append({"ID": r.id[:12], "Name": r.name, "CPUPerc": f"{cpu:.2f}%",
                        "MemUsage": mem, "MemLimit": lim,
                        "MemPerc": f"{(mem / lim * 100) if lim else 0:.2f}%",
                        "PIDs": (s.get("pids") or {}).get("current") or 0,
                        "cpu_percent": cpu})
        return out

    def port(self, ref: str, private: str = "") -> list[str]:
        rec = self.sup.get(ref)
        ports: dict[str, list[dict[str, str]]] = rec.extra.get("ports") or {}
        if private:
            key = private if "/" in private else private + "/tcp"
            if key not in ports or not ports[key]:
                raise NotFound(f"no public port '{key}' published for {rec.name}")
            return [f"{b['HostIp']}:{b['HostPort']}" for b in ports[key]]
        return [f"{k} -> {b['HostIp']}:{b['HostPort']}" for k, v in ports.items() for b in v or []]

    def events(self, *, since: float = 0.0, until: float = 0.0,
               filters: list[str] | None = None, follow: bool = False,
               wanted: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """Events since/until, filtered; follow: and new ones while wanted() (default: always)."""
        seq = 0
        want: dict[str, set[str]] = {}
        for f in filters or []:
            k, _, v = f.partition("=")
            want.setdefault(k, set()).add(v)
        while True:
            for e in self.ctx.db.events(after_seq=seq, since=since):
                seq = e["seq"]
                if until and e["time"] > until:
                    return
                if "type" in want and e["type"] not in want["type"]:
                    continue
                if "event" in want and e["action"] not in want["event"]:
                    continue
                if "container" in want and not any(e["actor"].startswith(c)
                                                   for c in want["container"]):
                    continue
                yield e
            if not follow or (until and time.time() > until) or \
                    (wanted is not None and not wanted()):
                return
            time.sleep(0.2)

    def system_df(self) -> list[dict[str, Any]]:
        recs = self.sup.records(all=True)
        imgs = self.ctx.store.list()
        used = {r.image_id for r in recs}
        isize = sum(i.size for i in imgs)
        csizes = {r.id: _du(self.ctx.paths(r.id).upper) + sum(
            _allocated(f) for f in self.ctx.oci(r).layer_files(self.ctx.paths(r.id).bundle))
            for r in recs}
        vols = self.ctx.db.list_volumes()
        vsizes = {v.name: _du(v.mountpoint) for v in vols}
        vused = {v.name for v in vols if self.ctx.volume_users(v.name)}
        running = [r for r in recs if r.state in ("running", "paused")]
        from isle.image.blobs import tmp_usage

        # the build cache's layers no image uses, and tmp/: partial pulls and build steps
        cache = self.ctx.store.build_cache_usage()
        ntmp, tmp_size = tmp_usage(self.ctx.store.blobs.tmp_dir)
        return [
            {"Type": "Images", "Total": len(imgs), "Active": len(used & {i.id for i in imgs}),
             "Size": isize, "Reclaimable": sum(i.size for i in imgs if i.id not in used)},
            {"Type": "Containers", "Total": len(recs), "Active": len(running),
             "Size": sum(csizes.values()),
             "Reclaimable": sum(v for k, v in csizes.items() if k not in {r.id for r in running})},
            {"Type": "Local Volumes", "Total": len(vols), "Active": len(vused),
             "Size": sum(vsizes.values()),
             "Reclaimable": sum(v for k, v in vsizes.items() if k not in vused)},
            {"Type": "Build Cache", "Total": cache[0] + ntmp, "Active": 0,
             "Size": cache[1] + tmp_size, "Reclaimable": cache[1] + tmp_size},
        ]

    def system_prune(self, *, all_images: bool = False,
                     volumes: bool = False) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        out["Containers"] = self.containers.container_prune().deleted
        if volumes:
            out["Volumes"] = self.queries.volume_prune().deleted
        from isle.engine import netplug

        live = [r.id for r in self.ctx.db.list_containers()]
        from isle.engine import vmos

        # whole-OS VMs own attachments too (engine/vms.py names them vmos-<name>)
        live += vmos.net_owners(self.ctx.s)  # (and those live-migrated to another root)
        try:   # networking left by crashed containers or an `isle` killed mid-setup
            gone = netplug.gc(self.ctx.s, live)
            out["Network attachments"] = [x[:12] for x in gone["removed"]] + gone["errors"]
        except Exception as exc:
            out["Network attachments"] = [f"(network gc failed: {exc})"]
        from isle.engine.buildrun import sweep_dead_builds

        try:  # killed builds' RUN overlays first: the image prune below never deletes under one
            out["Build steps"] = sweep_dead_builds(
                self.ctx.s, self.ctx.store.unmount_rootfs)
        except Exception as exc:
            out["Build steps"] = [f"(build step sweep failed: {exc})"]
        from isle.engine.vms import VMs

        vms = VMs(self.ctx.s)
        # templates live in the cache every --root shares (like build cache): only with -a
        out["VM templates"] = vms.prune_templates() if all_images else []
        out["VM image disks"] = vms.prune_disks()
        try:
            out["Images"] = list(self.ctx.store.prune(all_images=all_images))
        except Exception as exc:  # the image store refuses in-use images; report, don't fail
            out["Images"] = [f"(image prune failed: {exc})"]
        return out


def _v1_dirs(mgr: Any) -> dict[str, str] | None:
    """{controller: directory} of a v1 manager with the controllers stats reads, else None."""
    mounts = getattr(mgr, "mounts", None)
    if not isinstance(mounts, dict) or not {"cpuacct", "memory", "pids"} <= mounts.keys():
        return None
    return {c: mgr.dir(c) for c in ("cpuacct", "memory", "pids")}


def _cpu_ns(mgr: Any) -> int:
    d = _v1_dirs(mgr)
    if d is not None:
        v = read_int(os.path.join(d["cpuacct"], "cpuacct.usage"))
        if v is not None:
            return v
    return int(mgr.stats()["cpu"]["usage_ns"])


def _guest_row(r: ContainerRecord, rt: Any, t0: float, first: dict[str, int]) -> dict[str, Any]:
    """A stats row from a guest kernel's numbers (two samples for CPU %), with the host's PSS of
    the instance (what it really costs the host: shared template pages split among clones)."""
    try:
        now = rt.guest_stats(r.id)
    except IsleError:
        now = first
    dt = max(time.monotonic() - t0, 1e-6)
    cpu = max(0, now.get("cpu_ns", 0) - first.get("cpu_ns", 0)) / (dt * 1e9) * 100
    mem, lim = now.get("memory_usage", 0), now.get("memory_limit", 0)
    return {"ID": r.id[:12], "Name": r.name, "CPUPerc": f"{cpu:.2f}%", "MemUsage": mem,
            "MemLimit": lim, "MemPerc": f"{(mem / lim * 100) if lim else 0:.2f}%",
            "PIDs": now.get("pids", 0), "cpu_percent": cpu, "HostPSS": now.get("host_pss", 0)}


def _sample(mgr: Any) -> dict[str, Any]:
    """CPU, memory and pids: 4 files on v1 (the manager's full stats read 13)."""
    d = _v1_dirs(mgr)
    if d is None:
        return mgr.stats()  # type: ignore[no-any-return]
    lim = read_int(os.path.join(d["memory"], "memory.limit_in_bytes"))
    return {"cpu": {"usage_ns": read_int(os.path.join(d["cpuacct"], "cpuacct.usage")) or 0},
            "memory": {"usage": read_int(os.path.join(d["memory"], "memory.usage_in_bytes")),
                       "limit": None if lim is None or lim >= 1 << 62 else lim},
            "pids": {"current": read_int(os.path.join(d["pids"], "pids.current"))}}


def _parse_changes(changes: list[str], base: dict[str, Any]) -> dict[str, Any]:
    """Dockerfile-like `-c` lines: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE,
    STOPSIGNAL."""
    import json
    import shlex

    out: dict[str, Any] = {}
    for ch in changes:
        word, _, rest = ch.strip().partition(" ")
        word, rest = word.upper(), rest.strip()

        def argv(s: str, ch: str = ch) -> list[str]:
            if s.startswith("["):
                try:
                    v = json.loads(s)
                except ValueError:
                    raise ConfigError("--change", f"invalid JSON in {ch!r}") from None
                return [str(x) for x in v]
            return ["/bin/sh", "-c", s]

        if word == "CMD":
            out["Cmd"] = argv(rest)
        elif word == "ENTRYPOINT":
            out["Entrypoint"] = argv(rest)
        elif word == "ENV":
            env = list(out.get("Env", base.get("Env") or []))
            k, sep, v = rest.partition("=")
            if not sep:
                k, _, v = rest.partition(" ")
            env = [e for e in env if not e.startswith(k + "=")] + [f"{k}={v.strip()}"]
            out["Env"] = env
        elif word == "WORKDIR":
            out["WorkingDir"] = rest
        elif word == "USER":
            out["User"] = rest
        elif word == "LABEL":
            labels = dict(out.get("Labels", base.get("Labels") or {}))
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                labels[k] = v
            out["Labels"] = labels
        elif word == "EXPOSE":
            ports = dict(out.get("ExposedPorts", base.get("ExposedPorts") or {}))
            for p in rest.split():
                ports[p if "/" in p else p + "/tcp"] = {}
            out["ExposedPorts"] = ports
        elif word == "STOPSIGNAL":
            out["StopSignal"] = rest
        else:
            raise ConfigError("--change", f"unsupported instruction {word!r}")
    return out
