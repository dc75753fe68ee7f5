"""Verbs that move bytes in and out of containers, mixed into Engine: cp, export, diff, commit,
stats, port, events, system df/prune."""

from __future__ import annotations

import os
import stat
import time
TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractContextManager
    from typing import IO, Any

from isle.engine.db import ContainerRecord
from isle.engine.options import RunOptions
from isle.engine.quiet import suppress
from isle.errors import ConfigError, InvalidState, NotFound

__all__ = ["Transfer"]


_MOUNTPOINTS = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/sbin/docker-init"}


def _du(path: str) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(top, f)).st_blocks * 512
    return total


class Transfer:
    def _rootfs(self, rec: ContainerRecord) -> AbstractContextManager[str]:
        """The container's merged rootfs on the host; mounted for the block if it is not running."""
        from contextlib import contextmanager  # not at import: ~2 ms of every CLI start

        return contextmanager(self._rootfs_gen)(rec)

    def _rootfs_gen(self, rec: ContainerRecord) -> Iterator[str]:
        p = self.paths(rec.id)  # type: ignore[attr-defined]
        if rec.state in ("running", "paused") and os.path.ismount(p.rootfs):
            yield p.rootfs
            return
        with self._locked(rec.id):  # type: ignore[attr-defined]
            img = self.store.resolve(rec.image_id)  # type: ignore[attr-defined]
            root = self.store.mount_rootfs(img, p.bundle)  # type: ignore[attr-defined]
            try:
                yield root
            finally:
                cur = self.get(rec.id)  # type: ignore[attr-defined]
                if cur.state not in ("running", "paused"):
                    self.store.unmount_rootfs(p.bundle)  # type: ignore[attr-defined]

    def _host_path(self, rec: ContainerRecord, root: str, cpath: str) -> str:
        """A container path -> the host path holding it (volumes and binds first, then the rootfs)."""
        from isle.engine.volumes import safe_join

        if not cpath.startswith("/"):
            cpath = "/" + cpath
        best = None
        for m in RunOptions.from_dict(rec.opts).mounts:
            t = m.target.rstrip("/") or "/"
            if m.type != "tmpfs" and (cpath == t or cpath.startswith(t + "/")):
                if best is None or len(t) > len(best[0]):
                    src = m.source if m.type == "bind" else self.db.get_volume(m.source).mountpoint  # type: ignore[attr-defined]
                    best = (t, src)
        if best:
            return safe_join(best[1], cpath[len(best[0]):])
        keep_slash = cpath.endswith("/.") or cpath.endswith("/")
        out = safe_join(root, cpath)
        return out + ("/." if keep_slash and os.path.isdir(out) else "")

    def cp(self, src: str, dst: str) -> None:
        """`cp CONTAINER:PATH HOSTPATH` or `cp HOSTPATH CONTAINER:PATH` (cp -a semantics)."""
        from isle.sys import proc

        def split(x: str) -> tuple[str | None, str]:
            if ":" in x and not x.startswith("/") and not x.startswith("."):
                c, _, path = x.partition(":")
                return c, path
            return None, x

        (sc, sp), (dc, dp) = split(src), split(dst)
        if (sc is None) == (dc is None):
            raise ConfigError("cp", "copying between containers or between host paths is not "
                              "supported; one side must be CONTAINER:PATH")
        rec = self.get(sc or dc)  # type: ignore[attr-defined, arg-type]
        with self._rootfs(rec) as root:
            if sc is not None:
                hp = self._host_path(rec, root, sp)
                if not os.path.lexists(hp.removesuffix("/.")):
                    raise NotFound(f"could not find the file {sp} in container {rec.name}")
                proc.run(["cp", "-a", "--", hp, dp], timeout=600)
            else:
                if not os.path.lexists(sp.removesuffix("/.")):
                    raise NotFound(f"could not find the file {sp} on the host")
                hp = self._host_path(rec, root, dp)
                parent = os.path.dirname(hp.rstrip("/")) or "/"
                if not os.path.isdir(parent):
                    raise NotFound(f"could not find the directory {os.path.dirname(dp)} in "
                                   f"container {rec.name}")
                proc.run(["cp", "-a", "--no-preserve=ownership", "--", sp, hp], timeout=600)

    def export(self, ref: str, out: IO[bytes]) -> None:
        rec = self.get(ref)  # type: ignore[attr-defined]
        with self._rootfs(rec) as root:
            self.store.tar_directory(root, out)  # type: ignore[attr-defined]

    def diff(self, ref: str) -> list[tuple[str, str]]:
        """[(A|C|D, path)] from the overlay upper dir, Docker's order (sorted paths)."""
        rec = self.get(ref)  # type: ignore[attr-defined]
        upper = self.paths(rec.id).upper  # type: ignore[attr-defined]
        img = self.store.resolve(rec.image_id)  # type: ignore[attr-defined]
        lowers = list(img.layer_dirs)
        out: list[tuple[str, str]] = []
        for top, dirs, files in os.walk(upper):
            for name in sorted(dirs + files):
                full = os.path.join(top, name)
                rel = "/" + os.path.relpath(full, upper)
                st = os.lstat(full)
                if rel in _MOUNTPOINTS and st.st_size == 0:
                    continue  # created by the runtime as bind-mount targets, not by the container
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    out.append(("D", rel))
                elif any(os.path.lexists(os.path.join(d, rel.lstrip("/"))) for d in lowers):
                    out.append(("C", rel))
                else:
                    out.append(("A", rel))
        return sorted(out, key=lambda x: x[1])

    def commit(self, ref: str, repo: str = "", *, changes: list[str] | None = None,
               message: str = "", author: str = "", pause: bool = True) -> str:
        rec = self.get(ref)  # type: ignore[attr-defined]
        img = self.store.resolve(rec.image_id)  # type: ignore[attr-defined]
        cfg_changes = _parse_changes(changes or [], img.config.get("config") or {})
        paused = False
        if pause and rec.state == "running":
            with suppress(Exception):
                self._oci(rec).pause(rec.id)  # type: ignore[attr-defined]
                paused = True
        try:
            new = self.store.commit(self.paths(rec.id).upper, img, cfg_changes,  # type: ignore[attr-defined]
                                    names=[repo] if repo else [], comment=message, author=author,
                                    created_by=f"isle commit {rec.id[:12]}")
        finally:
            if paused:
                with suppress(Exception):
                    self._oci(rec).resume(rec.id)  # type: ignore[attr-defined]
        self.db.add_event("container", "commit", rec.id, {"image": new.id})  # type: ignore[attr-defined]
        return str(new.id)

    def stats(self, refs: list[str] | None = None, *, interval: float = 0.5) -> list[dict[str, Any]]:
        """One sample per running container: CPU % over `interval`, memory usage/limit, pids."""
        from isle.cgroups import manager_for

        recs = [self.get(r) for r in refs] if refs else self.list()  # type: ignore[attr-defined]
        for r in recs:
            if r.state not in ("running", "paused"):
                raise InvalidState(f"container {r.name} is not running")
        mgrs = {}
        first = {}
        for r in recs:
            with suppress(Exception):
                mgrs[r.id] = manager_for(f"/isle-{r.id}", r.id)
                first[r.id] = mgrs[r.id].stats()
        t0 = time.monotonic()
        if recs:
            time.sleep(interval)
        dt = time.monotonic() - t0
        out = []
        for r in recs:
            s = mgrs[r.id].stats() if r.id in mgrs else {}
            cpu = 0.0
            if r.id in first and s:
                cpu = (s["cpu"]["usage_ns"] - first[r.id]["cpu"]["usage_ns"]) / (dt * 1e9) * 100
            mem = (s.get("memory") or {}).get("usage") or 0
            lim = (s.get("memory") or {}).get("limit") or _mem_total()
            out.append({"ID": r.id[:12], "Name": r.name, "CPUPerc": f"{cpu:.2f}%",
                        "MemUsage": mem, "MemLimit": lim,
                        "MemPerc": f"{(mem / lim * 100) if lim else 0:.2f}%",
                        "PIDs": (s.get("pids") or {}).get("current") or 0,
                        "cpu_percent": cpu})
        return out

    def port(self, ref: str, private: str = "") -> list[str]:
        rec = self.get(ref)  # type: ignore[attr-defined]
        ports: dict[str, list[dict[str, str]]] = rec.extra.get("ports") or {}
        if private:
            key = private if "/" in private else private + "/tcp"
            if key not in ports or not ports[key]:
                raise NotFound(f"no public port '{key}' published for {rec.name}")
            return [f"{b['HostIp']}:{b['HostPort']}" for b in ports[key]]
        return [f"{k} -> {b['HostIp']}:{b['HostPort']}" for k, v in ports.items() for b in v or []]

    def events(self, *, since: float = 0.0, until: float = 0.0,
               filters: list[str] | None = None, follow: bool = False) -> Iterator[dict[str, Any]]:
        seq = 0
        want: dict[str, set[str]] = {}
        for f in filters or []:
            k, _, v = f.partition("=")
            want.setdefault(k, set()).add(v)
        while True:
            for e in self.db.events(after_seq=seq, since=since):  # type: ignore[attr-defined]
                seq = e["seq"]
                if until and e["time"] > until:
                    return
                if "type" in want and e["type"] not in want["type"]:
                    continue
                if "event" in want and e["action"] not in want["event"]:
                    continue
                if "container" in want and not any(e["actor"].startswith(c) for c in want["container"]):
                    continue
                yield e
            if not follow or (until and time.time() > until):
                return
            time.sleep(0.2)

    def system_df(self) -> list[dict[str, Any]]:
        recs = self.list(all=True)  # type: ignore[attr-defined]
        imgs = self.store.list()  # type: ignore[attr-defined]
        used = {r.image_id for r in recs}
        isize = sum(i.size for i in imgs)
        csizes = {r.id: _du(self.paths(r.id).upper) for r in recs}  # type: ignore[attr-defined]
        vols = self.db.list_volumes()  # type: ignore[attr-defined]
        vsizes = {v.name: _du(v.mountpoint) for v in vols}
        vused = {v.name for v in vols if self._volume_users(v.name)}  # type: ignore[attr-defined]
        running = [r for r in recs if r.state in ("running", "paused")]
        return [
            {"Type": "Images", "Total": len(imgs), "Active": len(used & {i.id for i in imgs}),
             "Size": isize, "Reclaimable": sum(i.size for i in imgs if i.id not in used)},
            {"Type": "Containers", "Total": len(recs), "Active": len(running),
             "Size": sum(csizes.values()),
             "Reclaimable": sum(v for k, v in csizes.items() if k not in {r.id for r in running})},
            {"Type": "Local Volumes", "Total": len(vols), "Active": len(vused),
             "Size": sum(vsizes.values()),
             "Reclaimable": sum(v for k, v in vsizes.items() if k not in vused)},
        ]

    def system_prune(self, *, all_images: bool = False, volumes: bool = False) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        out["Containers"] = self.container_prune().deleted  # type: ignore[attr-defined]
        if volumes:
            out["Volumes"] = self.volume_prune().deleted  # type: ignore[attr-defined]
        from isle.engine import netplug

        live = [r.id for r in self.db.list_containers()]  # type: ignore[attr-defined]
        try:   # networking left by crashed containers or an `isle` killed mid-setup
            gone = netplug.gc(self.s, live)  # type: ignore[attr-defined]
            out["Network attachments"] = [x[:12] for x in gone["removed"]] + gone["errors"]
        except Exception as exc:
            out["Network attachments"] = [f"(network gc failed: {exc})"]
        from isle.engine.vms import VMs

        vms = VMs(self.s)  # type: ignore[attr-defined]
        # templates live in the cache every --root shares (like build cache): only with -a
        out["VM templates"] = vms.prune_templates() if all_images else []
        out["VM image disks"] = vms.prune_disks()
        try:
            out["Images"] = list(self.store.prune(all_images=all_images))  # type: ignore[attr-defined]
        except Exception as exc:  # the image store refuses in-use images; report, don't fail
            out["Images"] = [f"(image prune failed: {exc})"]
        return out


def _mem_total() -> int:
    with suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) * 1024
    return 0


def _parse_changes(changes: list[str], base: dict[str, Any]) -> dict[str, Any]:
    """Dockerfile-like `-c` lines: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL."""
    import json
    import shlex

    out: dict[str, Any] = {}
    for ch in changes:
        word, _, rest = ch.strip().partition(" ")
        word, rest = word.upper(), rest.strip()

        def argv(s: str) -> list[str]:
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
