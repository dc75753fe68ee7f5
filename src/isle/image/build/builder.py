"""``isle build``: run a parsed Containerfile stage by stage, with a layer cache.

RUN executes through an OCI runtime (``isle-runtime`` by default, or ``runc``) on an overlay of
the current layers; the overlay's upper dir becomes the step's layer. COPY/ADD stage files in a
directory that becomes the layer. Config-only steps change the config and history only.
The cache key of a layer step is sha256(parent diff_ids, config, expanded instruction, build
args, content hash of the sources); hits reuse the stored layer.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from isle.errors import ConfigError, NotFound
from isle.image.build.parser import Instruction, apply_config, expand, parse, parse_kv
from isle.image.build.runspec import (
    StepSandbox,
    drop_mount_points,
    mount_points_absent,
    resolve_user,
    run_in_bundle,
)
from isle.image.layers import Unpacker, decompressor
from isle.image.store import Image, ImageStore, now_iso
from isle.oci.image_spec import Descriptor, canonical_json, host_arch
from isle.sys.fs import atomic_write, flock
from isle.sys.inroot import Root

__all__ = ["build"]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class State:
    config: dict[str, Any]  # whole image config
    layers: list[Descriptor] = field(default_factory=list)

    @property
    def cfg(self) -> dict[str, Any]:
        c: dict[str, Any] = self.config.setdefault("config", {})
        return c

    @property
    def diff_ids(self) -> list[str]:
        d: list[str] = self.config.setdefault("rootfs", {"type": "layers"}).setdefault(
            "diff_ids", []
        )
        return d

    def env(self) -> dict[str, str]:
        return dict(x.split("=", 1) for x in self.cfg.get("Env") or [] if "=" in x)


@dataclass
class Stage:
    name: str
    index: int
    base: str
    instructions: list[Instruction]
    from_ins: Instruction


class Builder:
    def __init__(
        self,
        store: ImageStore,
        context: str,
        *,
        runtime: str,
        state_dir: str,
        build_args: dict[str, str],
        no_cache: bool,
        out: Callable[[str], None],
        sandbox: StepSandbox | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.store, self.context = store, os.path.abspath(context)
        self.runtime, self.state_dir = runtime, os.path.join(state_dir, "build")
        self.build_args, self.no_cache, self.out = build_args, no_cache, out
        self.cache_path = os.path.join(store.root, "buildcache.json")
        self.stages: dict[str, State] = {}
        self.ignore = _load_ignore(self.context)
        self.step = 0
        self.total = 0

    # -- cache -----------------------------------------------------------------------------
    def _cache_get(self, key: str) -> tuple[Descriptor, str] | None:
        if self.no_cache:
            return None
        try:
            with open(self.cache_path) as f:
                e = json.load(f).get(key)
        except (FileNotFoundError, ValueError):
            return None
        if not e:
            return None
        d = Descriptor.from_dict(e["layer"], "cache")
        if self.store.blobs.has(d.digest) and self.store.has_layer(e["diff_id"]):
            return d, e["diff_id"]
        return None

    def _cache_put(self, key: str, d: Descriptor, diff_id: str) -> None:
        with flock(self.cache_path + ".lock"):
            try:
                with open(self.cache_path) as f:
                    c = json.load(f)
            except (FileNotFoundError, ValueError):
                c = {}
            c[key] = {"layer": d.to_dict(), "diff_id": diff_id}
            atomic_write(self.cache_path, json.dumps(c).encode())

    def _key(self, st: State, text: str, args: dict[str, str], content: str = "") -> str:
        return hashlib.sha256(
            canonical_json(
                {
                    "parent": st.diff_ids,
                    "config": st.cfg,
                    "ins": text,
                    "args": args,
                    "content": content,
                }
            )
        ).hexdigest()

    # -- stages ----------------------------------------------------------------------------
    def split(self, ins: list[Instruction]) -> tuple[list[Stage], dict[str, str]]:
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        for i in ins:
            if i.cmd == "FROM":
                words = expand(i.rest, {**global_args}).split()
                if len(words) == 3 and words[1].upper() == "AS":
                    name = words[2].lower()
                elif len(words) == 1:
                    name = str(len(stages))
                else:
                    raise i.error("expected FROM IMAGE [AS NAME]")
                stages.append(Stage(name, len(stages), words[0], [], i))
            elif not stages:
                if i.cmd != "ARG":
                    raise i.error("only ARG may come before the first FROM")
                for k, v in parse_kv(i, i.rest):
                    global_args[k] = self.build_args.get(k, "" if v == "\0" else v)
            else:
                stages[-1].instructions.append(i)
        return stages, global_args

    def run(self, text: str, where: str, target: str | None) -> State:
        stages, gargs = self.split(parse(text, where))
        if target:
            names = [s.name for s in stages]
            if target.lower() not in names:
                raise ConfigError(
                    "--target", f"no stage named {target!r} (have {', '.join(names)})"
                )
            stages = stages[: names.index(target.lower()) + 1]
        self.total = sum(1 + len(s.instructions) for s in stages)
        st: State | None = None
        for s in stages:
            st = self.build_stage(s, gargs)
            self.stages[s.name] = st
            self.stages[str(s.index)] = st
        assert st is not None
        return st

    def _say_step(self, ins: Instruction) -> None:
        self.step += 1
        self.out(f"STEP {self.step}/{self.total}: {ins.original}")

    def build_stage(self, s: Stage, gargs: dict[str, str]) -> State:
        self._say_step(s.from_ins)
        st = self._base(s)
        args: dict[str, str] = {}
        env_args = {**gargs}
        for ins in s.instructions:
            self._say_step(ins)
            scope = {**env_args, **args, **st.env()}
            if ins.cmd == "ARG":
                for k, v in parse_kv(ins, ins.rest):
                    if k in self.build_args:
                        args[k] = self.build_args[k]
                    elif v != "\0":
                        args[k] = expand(v, scope)
                    elif k in gargs:
                        args[k] = gargs[k]
                    else:
                        args[k] = ""
                self._history(st, f"/bin/sh -c #(nop) {ins.original}", empty=True)
            elif ins.cmd == "RUN":
                self._run(st, ins, args)
            elif ins.cmd in ("COPY", "ADD"):
                self._copy(st, ins, scope)
            else:
                env = {**args, **st.env()}
                created_by = apply_config(st.cfg, ins, env)
                self._history(st, created_by, empty=True)
        return st

    def _base(self, s: Stage) -> State:
        if s.base == "scratch":
            return State(
                {
                    "architecture": host_arch(),
                    "os": "linux",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }
            )
        if s.base.lower() in self.stages:
            prev = self.stages[s.base.lower()]
            return State(json.loads(json.dumps(prev.config)), list(prev.layers))
        try:
            img = self.store.resolve(s.base)
        except NotFound:
            raise s.from_ins.error(
                f"image {s.base!r} is not in the store (pull it first)"
            ) from None
        self.out(f"--> {img.short_id}")
        return State(json.loads(json.dumps(img.config)), list(img.manifest.layers))

    def _history(self, st: State, created_by: str, empty: bool) -> None:
        h: dict[str, Any] = {"created": now_iso(), "created_by": created_by}
        if empty:
            h["empty_layer"] = True
        st.config.setdefault("history", []).append(h)

    def _add_layer(self, st: State, d: Descriptor, diff_id: str, created_by: str) -> None:
        st.layers.append(d)
        st.diff_ids.append(diff_id)
        self._history(st, created_by, empty=False)

    # -- RUN -------------------------------------------------------------------------------
    def _run(self, st: State, ins: Instruction, args: dict[str, str]) -> None:
        shell = st.cfg.get("Shell") or ["/bin/sh", "-c"]
        argv = ins.json_args if ins.json_args is not None else [*shell, ins.rest]
        if not argv:
            raise ins.error("nothing to run")
        for flag in ins.flags:  # BuildKit's --mount/--security are not honoured: say so
            if flag != "network":
                raise ins.error(f"unsupported flag --{flag} "
                                "(RUN takes --network=default|none|host)")
        step_net = ins.flags.get("network")
        created_by = " ".join(argv) if ins.json_args is None else json.dumps(argv)
        if args:
            created_by = (
                f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args.items()) + " " + created_by
            )
        key = self._key(st, "RUN " + (f"--network={step_net} " if step_net else "")
                        + json.dumps(argv), args)
        hit = self._cache_get(key)
        if hit:
            self.out(f"--> Using cache {hit[1][7:19]}")
            self._add_layer(st, hit[0], hit[1], created_by)
            return
        env = dict(st.env())
        for k, v in args.items():
            env.setdefault(k, v)
        env.setdefault("PATH", DEFAULT_PATH.split("=", 1)[1])
        work = tempfile.mkdtemp(prefix="build-run-", dir=self.store.blobs.tmp_dir)
        cid = "isle-build-" + os.urandom(6).hex()
        try:
            layer_dirs = [self.store.layer_dir(d) for d in st.diff_ids]
            rootfs = self.store.mount_rootfs(_FakeImage(layer_dirs), work)  # type: ignore[arg-type]
            created: list[str] = []
            try:
                cwd = st.cfg.get("WorkingDir") or "/"
                try:
                    with Root(rootfs) as r:  # inside the rootfs, even through the image's symlinks
                        os.close(r.mkdirs(cwd))
                except OSError as e:
                    raise ins.error(f"working directory {cwd}: {e}") from None
                if self.sandbox is None:
                    raise ins.error("RUN needs the engine's sandbox (run it with `isle build`)")
                envl = [f"{k}={v}" for k, v in env.items()]
                user = st.cfg.get("User", "")
                try:
                    spec = self.sandbox.prepare(
                        cid, rootfs, work, list(argv), envl, cwd, user, network=step_net
                    )
                except ConfigError as e:
                    raise ins.error(str(e)) from None
                try:
                    created = mount_points_absent(rootfs, spec)
                    run_in_bundle(self.runtime, self.state_dir, work, cid, spec, self.out)
                except Exception as e:
                    raise ins.error(f"command failed: {e}") from e
                finally:
                    self.sandbox.release(cid, done=False)  # its network goes now
            finally:
                self.store.unmount_rootfs(work)
            drop_mount_points(os.path.join(work, "upper"), created)
            if os.path.exists(os.path.join(work, ".copy")):
                raise ins.error("RUN needs overlayfs (the copy fallback cannot capture changes)")
            desc, diff_id = self.store.write_layer_from_dir(
                os.path.join(work, "upper"), overlay_whiteouts=True
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if self.sandbox is not None:
                self.sandbox.release(cid)  # nothing of the step is left: forget it
        self._cache_put(key, desc, diff_id)
        self.out(f"--> {diff_id[7:19]}")
        self._add_layer(st, desc, diff_id, created_by)

    # -- COPY / ADD ------------------------------------------------------------------------
    def _copy(self, st: State, ins: Instruction, scope: dict[str, str]) -> None:
        words = ins.json_args if ins.json_args is not None else ins.rest.split()
        words = [expand(w, scope) for w in words]
        if len(words) < 2:
            raise ins.error("needs at least one source and a destination")
        *srcs, dest = words
        for f in ins.flags:
            if f not in ("from", "chown", "chmod", "link"):
                raise ins.error(f"unknown flag --{f}")
        src_root, cleanup = self._source_root(ins)
        try:
            files = self._expand_sources(ins, src_root, srcs, from_context=cleanup is None)
            content = _content_hash(files)
            key = self._key(
                st,
                f"{ins.cmd} {json.dumps(ins.flags, sort_keys=True)} {json.dumps(words)}",
                {},
                content,
            )
            created_by = f"/bin/sh -c #(nop) {ins.cmd} {' '.join(words)}"
            hit = self._cache_get(key)
            if hit:
                self.out(f"--> Using cache {hit[1][7:19]}")
                self._add_layer(st, hit[0], hit[1], created_by)
                return
            stage = tempfile.mkdtemp(prefix="build-copy-", dir=self.store.blobs.tmp_dir)
            try:
                with self._view(st) as view:
                    self._stage_files(st, ins, files, srcs, dest, stage, view)
                desc, diff_id = self.store.write_layer_from_dir(stage, overlay_whiteouts=False)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        finally:
            if cleanup:
                cleanup()
        self._cache_put(key, desc, diff_id)
        self.out(f"--> {diff_id[7:19]}")
        self._add_layer(st, desc, diff_id, created_by)

    def _source_root(self, ins: Instruction) -> tuple[str, Callable[[], None] | None]:
        frm = ins.flags.get("from")
        if not frm:
            return self.context, None
        if frm.lower() in self.stages:
            layer_dirs = [self.store.layer_dir(d) for d in self.stages[frm.lower()].diff_ids]
        else:
            try:
                layer_dirs = self.store.resolve(frm).layer_dirs
            except NotFound:
                raise ins.error(f"--from={frm}: no such stage or image") from None
        work = tempfile.mkdtemp(prefix="build-from-", dir=self.store.blobs.tmp_dir)
        rootfs = self.store.mount_rootfs(_FakeImage(layer_dirs), work)  # type: ignore[arg-type]

        def cleanup() -> None:
            self.store.unmount_rootfs(work)
            shutil.rmtree(work, ignore_errors=True)

        return rootfs, cleanup

    def _expand_sources(
        self, ins: Instruction, root: str, srcs: list[str], from_context: bool
    ) -> list[tuple[str, str]]:
        """(absolute path, path relative to root) of every source, globs expanded."""
        out = []
        for s in srcs:
            if re.match(r"^[a-z]+://", s):
                raise ins.error(f"remote sources are not supported ({s})")
            rel = posixpath.normpath(s.lstrip("/")) if s.strip("/") else "."
            if rel == ".." or rel.startswith("../"):
                raise ins.error(f"source {s!r} is outside the build context")
            if not from_context and not glob.has_magic(rel):
                # --from: a path in another image, whose symlinks lead inside that image (as
                # Docker follows them), never to the host's files
                from isle.sys import fdtree

                with Root(root) as r:
                    try:
                        rel = fdtree.resolve(r, rel).lstrip("/") or "."
                    except OSError as e:
                        raise ins.error(f"source {s!r}: {e.strerror}") from None
            hits = (
                sorted(glob.glob(os.path.join(root, rel)))
                if glob.has_magic(rel)
                else ([os.path.join(root, rel)] if os.path.lexists(os.path.join(root, rel)) else [])
            )
            hits = [
                h
                for h in hits
                if not (from_context and _ignored(self.ignore, os.path.relpath(h, root)))
            ]
            if not hits:
                raise ins.error(
                    f"source {s!r} not found" + (" in the build context" if from_context else "")
                )
            for h in hits:
                real = os.path.realpath(h)
                if not (
                    real == os.path.realpath(root)
                    or real.startswith(os.path.realpath(root) + os.sep)
                ):
                    raise ins.error(f"source {s!r} resolves outside the build context")
                out.append((h, os.path.relpath(h, root)))
        return out

    def _view(self, st: State) -> AbstractContextManager[Root | None]:
        """The image so far, mounted read-only-in-practice: a ``Root`` every destination path of
        COPY/ADD and the --chown lookup resolve in (the image's own symlinks are followed inside
        it, never on the host); None for an image without layers (scratch)."""
        from contextlib import contextmanager

        @contextmanager
        def view() -> Iterator[Root | None]:
            if not st.diff_ids:
                yield None
                return
            work = tempfile.mkdtemp(prefix="build-view-", dir=self.store.blobs.tmp_dir)
            try:
                layer_dirs = [self.store.layer_dir(d) for d in st.diff_ids]
                rootfs = self.store.mount_rootfs(_FakeImage(layer_dirs), work)  # type: ignore[arg-type]
                try:
                    with Root(rootfs) as r:
                        yield r
                finally:
                    self.store.unmount_rootfs(work)
            finally:
                shutil.rmtree(work, ignore_errors=True)

        return view()

    def _stage_files(
        self,
        st: State,
        ins: Instruction,
        files: list[tuple[str, str]],
        srcs: list[str],
        dest: str,
        stage: str,
        view: Root | None,
    ) -> None:
        """Lay the sources out in the (new, private) stage dir at the path the destination has
        *inside the image*: its symlinks resolved in ``view``, so that COPY through an image's
        `/app -> /srv` lands in /srv (as Docker does) and nothing is ever looked up on the host.
        The stage is written only with *at calls (sys/fdtree): a symlink an earlier source put
        in the stage is replaced, never followed."""
        from isle.sys import fdtree

        workdir = st.cfg.get("WorkingDir") or "/"
        dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
        if len(srcs) > 1 and not dest.endswith("/"):
            raise ins.error("with several sources the destination must end with /")
        real, dest_is_dir = dest_abs, False
        if view is not None:
            try:
                real = fdtree.resolve(view, dest_abs)
                dest_is_dir = _is_dir(view, real)
            except OSError as e:
                raise ins.error(f"destination {dest!r}: {e.strerror}") from None
        dir_dest = dest.endswith("/") or len(files) > 1 or dest in (".", "/") or dest_is_dir
        owner = (0, 0)
        if "chown" in ins.flags:
            owner = self._owner(ins, ins.flags["chown"], view)
        mode = int(ins.flags["chmod"], 8) if "chmod" in ins.flags else None
        stage_fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for path, _rel in files:
                st_ = os.lstat(path)
                skip = None
                if self.ignore and path.startswith(self.context):
                    base, rules = os.path.relpath(path, self.context), self.ignore

                    def skip(r: str, base: str = base, rules: list = rules) -> bool:  # type: ignore[type-arg]
                        return _ignored(rules, os.path.normpath(os.path.join(base, r)))

                copier = fdtree.Copier(False, owner=owner, mode=mode, skip=skip, hardlinks=False)
                if stat.S_ISDIR(st_.st_mode):
                    dfd = self._mkparents(view, stage_fd, real)
                    try:
                        sfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                        try:
                            copier.contents(sfd, dfd)
                            copier._meta_fd(dfd, os.fstat(sfd))
                        finally:
                            os.close(sfd)
                    finally:
                        os.close(dfd)
                elif ins.cmd == "ADD" and _is_archive(path):
                    os.close(self._mkparents(view, stage_fd, real))
                    tdir = os.path.join(stage, real.lstrip("/"))  # made just now by fd, no links
                    with open(path, "rb") as f:
                        comp = _compression(path)
                        with tarfile.open(
                            fileobj=decompressor(f, comp) if comp in ("zstd",) else f, mode="r|*"
                        ) as tf:
                            u = Unpacker(tdir)
                            try:
                                u.extract(tf)
                            finally:
                                u.close()
                else:
                    target = posixpath.join(real, os.path.basename(path)) if dir_dest else real
                    parent, name = posixpath.split(target)
                    if not name:
                        raise ins.error(f"destination {dest!r}: cannot copy a file to /")
                    dfd = self._mkparents(view, stage_fd, parent)
                    try:
                        sdir = os.open(os.path.dirname(path) or ".",
                                       os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                        try:
                            copier.entry(sdir, os.path.basename(path), st_, dfd, name)
                        finally:
                            os.close(sdir)
                    except IsADirectoryError:
                        raise ins.error(f"destination {target!r} is a directory") from None
                    finally:
                        os.close(dfd)
        finally:
            os.close(stage_fd)

    @staticmethod
    def _mkparents(view: Root | None, stage_fd: int, target: str) -> int:
        """Make target's directories in the stage (by fd, replacing anything that is not a
        directory); a new one takes mode, owner and times from the image's directory at the
        same (already resolved) path, else 0755 root. Returns an fd of target."""
        from isle.sys import fdtree

        cur = os.dup(stage_fd)
        done = ""
        try:
            for p in [x for x in target.split("/") if x]:
                done = f"{done}/{p}"
                try:
                    was_dir = stat.S_ISDIR(os.stat(p, dir_fd=cur, follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    was_dir = False
                nxt = fdtree.mkdir_at(cur, p, 0o755)
                os.close(cur)
                cur = nxt
                if was_dir:
                    continue
                low = _view_dir_stat(view, done)
                if low is not None:
                    os.fchown(cur, low.st_uid, low.st_gid)
                    os.fchmod(cur, stat.S_IMODE(low.st_mode))
                    os.utime(cur, ns=(low.st_atime_ns, low.st_mtime_ns))
                else:
                    os.fchmod(cur, 0o755)
            return cur
        except BaseException:
            os.close(cur)
            raise

    def _owner(self, ins: Instruction, spec: str, view: Root | None) -> tuple[int, int]:
        """--chown=user[:group] from the image's /etc/passwd and /etc/group, read inside it."""
        u, _, g = spec.partition(":")
        try:
            if view is None:  # scratch: numeric ids only
                if not u.isdigit() or (g and not g.isdigit()):
                    raise ConfigError("USER", "the image has no /etc/passwd or /etc/group")
                return int(u), int(g) if g else 0  # as resolve_user: no passwd entry, gid 0
            uid, gid = resolve_user(view.path, u)
            if g:
                gid = resolve_user(view.path, f"{u}:{g}")[1]
            return uid, gid
        except ConfigError as e:
            raise ins.error(f"--chown={spec}: {e}") from None


class _FakeImage:
    def __init__(self, layer_dirs: list[str]) -> None:
        self.layer_dirs = layer_dirs


def _is_dir(view: Root, real: str) -> bool:
    try:
        fd = view.open(real, os.O_PATH, follow=False)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _view_dir_stat(view: Root | None, real: str) -> os.stat_result | None:
    """lstat of a directory of the image at an already resolved path (None: not a directory)."""
    if view is None:
        return None
    try:
        fd = view.open(real, os.O_PATH, follow=False)
    except OSError:
        return None
    try:
        s = os.fstat(fd)
    finally:
        os.close(fd)
    return s if stat.S_ISDIR(s.st_mode) else None


def _content_hash(files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for path, rel in files:
        for top, dirs, names in (
            os.walk(path)
            if os.path.isdir(path) and not os.path.islink(path)
            else [(os.path.dirname(path), [], [os.path.basename(path)])]
        ):
            dirs.sort()
            for n in sorted(names + dirs):
                p = os.path.join(top, n)
                s = os.lstat(p)
                h.update(f"{os.path.relpath(p, path)}\0{s.st_mode}\0{s.st_size}\0".encode())
                if stat.S_ISREG(s.st_mode):
                    with open(p, "rb") as f:
                        while b := f.read(1 << 20):
                            h.update(b)
                elif stat.S_ISLNK(s.st_mode):
                    h.update(os.readlink(p).encode())
        h.update(rel.encode())
    return h.hexdigest()


def _load_ignore(context: str) -> list[tuple[bool, str]]:
    for name in (".containerignore", ".dockerignore"):
        p = os.path.join(context, name)
        if os.path.isfile(p):
            out = []
            for line in open(p).read().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                neg = line.startswith("!")
                pat = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
                out.append((neg, pat))
            return out
    return []


def _match(pat: str, path: str) -> bool:
    rx = (
        re.escape(pat)
        .replace(r"\*\*/", "(.*/)?")
        .replace(r"\*\*", ".*")
        .replace(r"\*", "[^/]*")
        .replace(r"\?", "[^/]")
    )
    return re.fullmatch(rx, path) is not None


def _ignored(rules: list[tuple[bool, str]], rel: str) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent dir counts."""
    if not rules or rel in (".", ""):
        return False
    parts = rel.split("/")
    result = False
    for neg, pat in rules:
        for i in range(1, len(parts) + 1):
            if _match(pat, "/".join(parts[:i])):
                result = not neg
                break
    return result


def _compression(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return ""


def _is_archive(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    if _compression(path):
        return True
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False




def build(
    store: ImageStore,
    context: str,
    *,
    tags: list[str] | None = None,
    file: str | None = None,
    build_args: dict[str, str] | None = None,
    target: str | None = None,
    no_cache: bool = False,
    runtime: str = "isle-runtime",
    state_dir: str = "/run/isle",
    out: Callable[[str], None] = print,
    sandbox: StepSandbox | None = None,
) -> Image:
    if not os.path.isdir(context):
        raise ConfigError("context", f"{context!r} is not a directory")
    if file is None:
        for n in ("Containerfile", "Dockerfile"):
            if os.path.isfile(os.path.join(context, n)):
                file = os.path.join(context, n)
                break
        else:
            raise ConfigError("file", f"no Containerfile or Dockerfile in {context}")
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("file", f"{file}: {e.strerror}") from None
    except UnicodeDecodeError as e:  # one line, as Docker's parse error: never a traceback
        raise ConfigError("file", f"{file}: not a Containerfile (byte {e.object[e.start]:#04x} at "
                          f"offset {e.start} is not UTF-8 text)") from None
    b = Builder(
        store,
        context,
        runtime=runtime,
        state_dir=state_dir,
        build_args=dict(build_args or {}),
        no_cache=no_cache,
        out=out,
        sandbox=sandbox,
    )
    with store.transaction():
        st = b.run(text, os.path.basename(file), target)
        st.config["created"] = now_iso()
        st.config.setdefault("architecture", host_arch())
        st.config.setdefault("os", "linux")
        img = store.write_image(st.config, st.layers, list(tags or []))
    out(f"COMMIT {', '.join(tags or [])}".rstrip())
    out(f"--> {img.short_id}")
    for t in tags or []:
        out(f"Successfully tagged {t}")
    return img
