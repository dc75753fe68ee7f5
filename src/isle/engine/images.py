"""Images as the CLI and API see them: one method per verb over isle.image, Docker-shaped reports.

imgs = Images(settings)                 # imgs.store is the ImageStore
imgs.set_users_callback(fn)             # fn(image_id) -> [container ids]; rmi refuses those
imgs.pull("busybox", tls_verify=False)
"""

from __future__ import annotations

import builtins
import datetime as _dt
import fnmatch
import os
from collections.abc import Callable
from typing import Any

from isle.config import Settings
from isle.errors import ConfigError
from isle.image.reference import Reference
from isle.image.store import Image, ImageStore

__all__ = ["Images", "inspect_dict", "list_row", "ref_matches"]


class Images:
    def __init__(
        self, settings: Settings, *, runtime: str | None = None, store: ImageStore | None = None
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else ImageStore.from_settings(settings)
        self.runtime = runtime or settings.runtime

    def set_users_callback(self, fn: Callable[[str], builtins.list[str]]) -> None:
        self.store.set_users_callback(fn)

    # -- local -------------------------------------------------------------------------------
    def resolve(self, ref: str) -> Image:
        return self.store.resolve(ref)

    def list(self, filters: builtins.list[str] | None = None,
             all_: bool = True) -> builtins.list[Image]:
        imgs = sorted(self.store.list(), key=lambda i: i.config.get("created", ""), reverse=True)
        for f in filters or []:
            imgs = _apply_filter(self.store, imgs, f)
        return imgs

    def inspect(self, ref: str) -> dict[str, Any]:
        return inspect_dict(self.store.resolve(ref))

    def history(self, ref: str) -> builtins.list[dict[str, Any]]:
        img = self.store.resolve(ref)
        hist = list(img.config.get("history") or [])
        sizes = [self.store.layer_size(d) for d in img.diff_ids]
        rows: builtins.list[dict[str, Any]] = []
        li = 0
        for h in hist:
            size = 0
            if not h.get("empty_layer") and li < len(sizes):
                size = sizes[li]
                li += 1
            rows.append(
                {
                    "Id": "<missing>",
                    "Created": h.get("created", ""),
                    "CreatedBy": h.get("created_by", ""),
                    "Size": size,
                    "Comment": h.get("comment", ""),
                }
            )
        rows.reverse()
        if rows:
            rows[0]["Id"] = img.id
            rows[0]["Tags"] = [Reference.parse(n).familiar for n in img.names]
        return rows

    def tag(self, src: str, dest: str) -> Image:
        return self.store.tag(src, dest)

    def remove(self, refs: builtins.list[str], force: bool = False) -> builtins.list[str]:
        def rm() -> builtins.list[str]:
            out: builtins.list[str] = []
            for r in refs:
                out += self.store.remove(r, force)
            return out

        return self._owned(rm)

    def prune(self, all_images: bool = False) -> builtins.list[str]:
        return self._owned(lambda: self.store.prune(all_images))

    def _owned(self, fn: Any) -> builtins.list[str]:
        """fn() -> removed ids; rootless with layers a build gave other ids' files (a directory
        of a subordinate uid holding files): in the user namespace, where they can be deleted."""
        if not self.settings.rootless:
            return list(fn())
        from isle.engine import buildns

        ldir = self.store.layers_dir
        if not buildns.needs_owners([os.path.join(ldir, h, "diff") for h in (
                os.listdir(ldir) if os.path.isdir(ldir) else [])]):
            return list(fn())
        from isle.oci.fastjson import dumps, loads

        return list(loads(buildns.run_in_userns(lambda: dumps(list(fn())))))

    def disk_usage(self) -> dict[str, Any]:
        return self.store.disk_usage()

    # -- registries ----------------------------------------------------------------------------
    def client(self, registry: str, *, tls_verify: bool = True, authfile: str | None = None,
               creds: tuple[str, str] | None = None, ca_file: str | None = None) -> Any:
        """A registry client with the credentials given, or the auth file's for registry."""
        from isle.image.auth import get_credentials
        from isle.image.registry import RegistryClient

        return RegistryClient(
            registry,
            credentials=creds or get_credentials(registry, authfile),
            tls_verify=tls_verify,
            ca_file=ca_file,
        )

    def pull(
        self,
        ref: str,
        *,
        tls_verify: bool = True,
        authfile: str | None = None,
        creds: tuple[str, str] | None = None,
        platform: str | None = None,
        progress: Any = None,
        ca_file: str | None = None,
    ) -> Image:
        from isle.image.pull import pull
        from isle.oci.image_spec import Platform

        r = Reference.parse(ref)
        with self.client(
            r.registry, tls_verify=tls_verify, authfile=authfile, creds=creds, ca_file=ca_file
        ) as c:
            return pull(
                self.store,
                str(r),
                c,
                progress=progress,
                platform=Platform.parse(platform) if platform else None,
            )

    def push(
        self,
        ref: str,
        dest: str | None = None,
        *,
        tls_verify: bool = True,
        authfile: str | None = None,
        creds: tuple[str, str] | None = None,
        progress: Any = None,
        ca_file: str | None = None,
    ) -> str:
        from isle.image.push import push

        img = self.store.resolve(ref)
        target = Reference.parse(dest or ref)
        with self.client(
            target.registry, tls_verify=tls_verify, authfile=authfile, creds=creds, ca_file=ca_file
        ) as c:
            return push(self.store, img, str(target), c, progress=progress)

    def login(
        self,
        registry: str,
        user: str,
        password: str,
        *,
        tls_verify: bool = True,
        authfile: str | None = None,
        ca_file: str | None = None,
    ) -> str:
        from isle.image.auth import store_credentials
        from isle.image.registry import RegistryClient

        with RegistryClient(
            registry, credentials=(user, password), tls_verify=tls_verify, ca_file=ca_file
        ) as c:
            c.ping()
        return store_credentials(registry, user, password, authfile)

    def logout(self, registry: str, authfile: str | None = None) -> bool:
        from isle.image.auth import remove_credentials

        return remove_credentials(registry, authfile)

    # -- archives ------------------------------------------------------------------------------
    def save(self, refs: builtins.list[str], out: Any, fmt: str = "docker-archive") -> None:
        from isle.image import archive

        archive.save(self.store, refs, out, fmt)

    def load(self, src: Any) -> builtins.list[Image]:
        from isle.image import archive

        return archive.load(self.store, src)

    def import_(
        self, src: Any, ref: str | None, changes: builtins.list[str] | None = None,
        message: str = ""
    ) -> Image:
        from isle.image import archive

        return archive.import_rootfs(self.store, src, ref, changes or [], message)

    # -- build ---------------------------------------------------------------------------------
    def build(self, context: str, *, network: str = "default", **kw: Any) -> Image:
        """RUN steps run in the sandbox `isle run` gives (engine/buildrun.py); network is
        default (isle's bridge), none or host, as `docker build --network`."""
        from isle.engine.buildrun import RunSandbox
        from isle.image.build.builder import build

        kw.setdefault("runtime", self.runtime)
        kw.setdefault("state_dir", self.settings.runroot)

        def run() -> Image:
            with RunSandbox(self.settings, network, runtime=kw["runtime"],
                            state_dir=os.path.join(kw["state_dir"], "build"),
                            unmount=self.store.unmount_rootfs) as sandbox:
                return build(self.store, context, sandbox=sandbox, **kw)

        if self.settings.rootless:
            # root in a user namespace with the user's subordinate ids (engine/buildns.py):
            # file owners and RUN's overlay need it; the child writes the user's own store
            from isle.engine import buildns
            from isle.engine.rootless import cgroup_delegated

            if not cgroup_delegated():  # once per build, as isle run warns of its limits
                kw.get("out", print)("WARNING: rootless with no delegated cgroup (cgroup v1 or "
                                     "hybrid here): RUN steps run without a cgroup")

            def in_userns() -> str:
                ldir = self.store.layers_dir
                before = set(os.listdir(ldir)) if os.path.isdir(ldir) else set()
                try:
                    return run().id
                finally:  # layers this build unpacked with other ids' files (stages' too)
                    buildns.mark_owners([os.path.join(ldir, h, "diff") for h in
                                         (set(os.listdir(ldir)) if os.path.isdir(ldir) else
                                          set()) - before])

            return self.store.resolve(buildns.run_in_userns(in_userns))
        return run()

    def bootstrap(self, ref: str, *, variant: str = "minbase", mirror: str | None = None) -> Image:
        from isle.image.defaults import bootstrap_debian

        return bootstrap_debian(self.store, ref, variant=variant, mirror=mirror)


def ref_matches(name: str, pattern: str) -> bool:
    """Docker's reference filter: pattern vs the familiar or full name, with or without tag."""
    r = Reference.parse(name)
    return any(fnmatch.fnmatch(c, pattern) for c in (r.familiar, str(r), r.familiar_name, r.name))


def _apply_filter(store: ImageStore, imgs: list[Image], f: str) -> list[Image]:
    key, _, val = f.partition("=")
    if key == "dangling":
        want = val.lower() in ("true", "1")
        return [i for i in imgs if (not i.names) == want]
    if key == "reference":
        return [i for i in imgs if any(ref_matches(n, val) for n in i.names)]
    if key == "label":
        k, eq, v = val.partition("=")
        return [
            i
            for i in imgs
            if k in (i.config.get("config", {}).get("Labels") or {})
            and (not eq or i.config["config"]["Labels"][k] == v)
        ]
    if key in ("before", "since"):
        ref = store.resolve(val).config.get("created", "")
        return [
            i
            for i in imgs
            if (
                i.config.get("created", "") < ref
                if key == "before"
                else i.config.get("created", "") > ref
            )
        ]
    if key == "id":
        return [
            i for i in imgs if i.id.removeprefix("sha256:").startswith(val.removeprefix("sha256:"))
        ]
    raise ConfigError(
        "filter", f"unknown image filter {key!r} (dangling, reference, label, before, since, id)"
    )


def inspect_dict(img: Image) -> dict[str, Any]:
    """Docker's ``image inspect`` JSON."""
    c = img.config
    cfg = dict(c.get("config") or {})
    return {
        "Id": img.id,
        "RepoTags": [Reference.parse(n).familiar for n in img.names],
        "RepoDigests": [_familiar_digest(d) for d in img.repo_digests],
        "Parent": "",
        "Comment": (c.get("history") or [{}])[-1].get("comment", ""),
        "Created": c.get("created", ""),
        "DockerVersion": "",
        "Author": c.get("author", ""),
        "Config": {
            "Hostname": "",
            "Domainname": "",
            "User": cfg.get("User", ""),
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "ExposedPorts": cfg.get("ExposedPorts"),
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": cfg.get("Env"),
            "Cmd": cfg.get("Cmd"),
            "Healthcheck": cfg.get("Healthcheck"),
            "Image": "",
            "Volumes": cfg.get("Volumes"),
            "WorkingDir": cfg.get("WorkingDir", ""),
            "Entrypoint": cfg.get("Entrypoint"),
            "OnBuild": cfg.get("OnBuild"),
            "Labels": cfg.get("Labels"),
            "StopSignal": cfg.get("StopSignal"),
            "Shell": cfg.get("Shell"),
        },
        "Architecture": c.get("architecture", ""),
        "Variant": c.get("variant", ""),
        "Os": c.get("os", ""),
        "Size": img.size,
        "VirtualSize": img.size,
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": ":".join(reversed(img.layer_dirs[:-1])),
                "UpperDir": img.layer_dirs[-1] if img.layer_dirs else "",
            },
        },
        "RootFS": {"Type": "layers", "Layers": img.diff_ids},
        "Metadata": {"LastTagTime": img.added},
        "Digest": img.digest,
        "ManifestMediaType": img.manifest.media_type,
    }


def _familiar_digest(rd: str) -> str:
    name, _, dg = rd.partition("@")
    return f"{Reference.parse(name).familiar_name}@{dg}"


def _since(created: str) -> str:
    try:
        t = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "N/A"
    s = (_dt.datetime.now(_dt.timezone.utc) - t).total_seconds()
    for unit, n in (
        ("years", 31536000),
        ("months", 2592000),
        ("weeks", 604800),
        ("days", 86400),
        ("hours", 3600),
        ("minutes", 60),
    ):
        if s >= 2 * n:
            return f"{int(s // n)} {unit} ago"
    return "About a minute ago" if s >= 60 else "Less than a minute ago"


def list_row(img: Image) -> list[dict[str, Any]]:
    """Docker ``images --format json`` rows: one per name (or one <none> row)."""
    rows = []
    names: list[Reference | None] = [Reference.parse(n) for n in img.names] or [None]
    for r in names:
        repo = r.familiar_name if r else "<none>"
        digest = next(
            (d.split("@")[1] for d in img.repo_digests if r and d.startswith(r.name + "@")),
            "<none>",
        )
        rows.append(
            {
                "ID": img.short_id,
                "Id": img.id,
                "Name": str(r) if r else "",
                "Repository": repo,
                "Tag": r.tag if r else "<none>",
                "Digest": digest,
                "CreatedAt": img.config.get("created", ""),
                "CreatedSince": _since(img.config.get("created", "")),
                "Size": img.size,
                "Containers": "N/A",
            }
        )
    return rows


def familiar_name(name: str) -> str:
    """Docker's short form of a stored name (``docker.io/library/busybox:latest`` ->
    ``busybox:latest``)."""
    return Reference.parse(name).familiar
