"""VMs as user-facing objects: full-OS machines (vm.machine.MachineStore) and microVM templates.

    vms = VMs(settings)
    vms.create("deb", disk="/images/debian.qcow2", memory_mib=512)   # MachineInfo
    vms.start("deb"); vms.console("deb") -> socket path; vms.stop("deb"); vms.rm("deb")
    vms.template_create(engine, "busybox", memory_mib=128)  # boot once, save; runs then restore
    vms.templates() -> [TemplateInfo]; vms.template_rm("busybox" | key) ; vms.prune_templates()
    annotate(settings, spec, bundle)  # engine hook: org.isle.vm.template=true on a match

Machines live under <root>/vms/<name>/, their sockets under <runroot>/vms/<name>/; templates are
the runtime's (<cache>/templates/<key>/ + /dev/shm/isle-tpl-<key>.ram), labelled <key>.json here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from isle.config import Settings
from isle.engine.vmhook import _MAKING, TEMPLATE_ANNOTATION, annotate
from isle.errors import IsleError, NotFound
from isle.vm.machine import MachineInfo, MachineStore

__all__ = ["VMs", "TemplateInfo", "annotate", "TEMPLATE_ANNOTATION", "bootstrap_os"]

#: `isle vm push --artifact`: the artifact's type and its disk layer's media type (ORAS style)
ARTIFACT_TYPE = "application/vnd.isle.vm.disk.v1"
DISK_MEDIA_TYPE = "application/vnd.isle.vm.disk.qcow2"

#: file names a VM disk in a registry goes by (a containerDisk's /disk/*, an artifact's title)
_DISK_EXTS = (".qcow2", ".img", ".raw", ".vmdk", ".vdi", ".vhdx")

#: QEMU's TCG translation cache (tb-size) default, MiB: part of a VM's memory bound under TCG
TCG_TB_MIB = 1024


@dataclass(slots=True)
class TemplateInfo:
    key: str
    image: str
    memory_mib: int
    vcpus: int
    net: str
    created: str
    ram_bytes: int  # RAM file size in /dev/shm (pages the clones share)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VMs:
    """Full-OS machines and microVM templates of one isle root."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.store = MachineStore(os.path.join(settings.root, "vms"),
                                  os.path.join(settings.runroot, "vms"))

    # -- full-OS machines ---------------------------------------------------------------------
    def create(self, name: str, *, disk: str, memory_mib: int = 512, vcpus: int = 1,
               firmware: str = "bios", network: str = "none",
               ports: list[str] | None = None) -> MachineInfo:
        return self.store.create(name, disk, memory_mib=memory_mib, vcpus=vcpus,
                                 firmware=firmware, network=network, ports=ports)

    def create_from_image(self, name: str, image: str, *, memory_mib: int = 512, vcpus: int = 1,
                          network: str = "none", user: str = "", ssh_key: str = "",
                          hostname: str = "", user_data: str = "", password: str = "",
                          ports: list[str] | None = None, ip: str = "") -> MachineInfo:
        """A whole-OS VM from an isle image: its disk built once per image. An OS image (one
        `isle image bootstrap --os` made: a kernel and initramfs in /boot) boots its own kernel
        on q35, provisioned by a cloud-init seed (user, SSH key, host name, user-data) and with
        a guest agent port; any other image boots the cached guest kernel + isle's initramfs
        into the image's own init (systemd, busybox init...)."""
        from isle.vm import initramfs, kernel

        self.store._dir(name)  # a bad name fails before any work
        if os.path.exists(os.path.join(self.store.root, name)):
            from isle.errors import AlreadyExists

            raise AlreadyExists(f"a VM named {name} exists")
        osboot = self._os_image(image)
        if osboot is not None:
            return self._create_os(name, osboot, memory_mib=memory_mib, vcpus=vcpus,
                                   network=network, user=user or "isle", ssh_key=ssh_key,
                                   hostname=hostname or name, user_data=user_data,
                                   password=password, ports=ports or [], ip=ip, image=image)
        if user or ssh_key or hostname or user_data or password:
            from isle.errors import ConfigError

            raise ConfigError("--user", f"{image} is not an OS image (no kernel in /boot): it "
                              "cannot be provisioned; make one with `isle image bootstrap --os`")
        k = kernel.find(self.s.cache)
        base, init = self._image_disk(image, k)
        return self.store.create(name, base, memory_mib=memory_mib, vcpus=vcpus, network=network,
                                 kernel=k.boot_image, initrd=initramfs.build(k, self.s.cache),
                                 init=init, image=image)

    def _os_image(self, ref: str) -> Any:
        """The image if it carries its own kernel + initramfs (an OS image), else None."""
        from isle.image.store import ImageStore

        img = ImageStore.from_settings(self.s).resolve(ref)
        for layer in reversed(img.layer_dirs):
            boot = os.path.join(layer, "boot")
            if os.path.isdir(boot) and any(n.startswith("vmlinuz-") for n in os.listdir(boot)):
                return img
        return None

    def _os_disk(self, img: Any) -> tuple[str, str, str]:
        """(disk, vmlinuz, initrd) of an OS image, built once per image under .disks/: the
        merged layers as a whole-disk ext4 (the read-only base every VM of the image shares
        through its qcow2 overlay, with room for the guests' writes) and its kernel files."""
        import shutil
        import tempfile

        from isle.sys import proc
        from isle.sys.fs import flock
        from isle.vm import osimage

        d = os.path.join(self.store.root, ".disks")
        os.makedirs(d, exist_ok=True)
        stem = os.path.join(d, f"{img.id.split(':')[-1][:24]}-os")
        out, vml, ird = stem + ".ext4", stem + ".vmlinuz", stem + ".initrd"
        with flock(stem + ".lock"):
            if all(os.path.exists(p) for p in (out, vml, ird)):
                return out, vml, ird
            work = tempfile.mkdtemp(prefix="build-", dir=d)
            mnt, tmp = os.path.join(work, "root"), os.path.join(work, "disk.ext4")
            os.mkdir(mnt)
            mounted = False
            try:
                lower = ":".join(reversed(img.layer_dirs))
                if len(img.layer_dirs) == 1:
                    proc.run(["mount", "--bind", "-o", "ro", img.layer_dirs[0], mnt], timeout=30)
                else:
                    proc.run(["mount", "-t", "overlay", "-o", f"ro,lowerdir={lower}", "overlay",
                              mnt], timeout=30)
                mounted = True
                k, i = osimage.kernel_files(mnt)
                used = int(proc.run(["du", "-sxb", mnt], timeout=300).stdout.split()[0])
                size_mib = int(used / 2**20) + 2048  # sparse: free space costs nothing
                proc.run(["mkfs.ext4", "-q", "-F", "-L", "isle-root", "-d", mnt, tmp,
                          f"{size_mib}M"], timeout=900)
                shutil.copyfile(k, vml + ".tmp")
                shutil.copyfile(i, ird + ".tmp")
                os.rename(vml + ".tmp", vml)
                os.rename(ird + ".tmp", ird)
                os.rename(tmp, out)
                return out, vml, ird
            finally:
                if mounted:
                    proc.run(["umount", mnt], timeout=30, check=False)
                shutil.rmtree(work, ignore_errors=True)

    def _create_os(self, name: str, img: Any, *, memory_mib: int, vcpus: int, network: str,
                   user: str, ssh_key: str, hostname: str, user_data: str, password: str,
                   ports: list[str], ip: str = "", image: str = "") -> MachineInfo:
        from isle.vm import cloudinit

        cloudinit.check_user(user)
        cloudinit.check_hostname(hostname)
        keys = [cloudinit.read_ssh_key(ssh_key)] if ssh_key else []
        if user_data:
            cloudinit._subtype(user_data)  # fails before any work
        base, vml, ird = self._os_disk(img)
        return self._create_os_on(name, base, vml, ird, memory_mib=memory_mib, vcpus=vcpus,
                                  network=network, user=user, ssh_key=ssh_key,
                                  hostname=hostname, user_data=user_data, password=password,
                                  ports=ports, ip=ip, image=image, keys=keys)

    def _create_os_on(self, name: str, base: str, vml: str, ird: str, *, memory_mib: int,
                      vcpus: int, network: str, user: str, ssh_key: str = "",
                      hostname: str = "", user_data: str = "", password: str = "",
                      ports: list[str] | None = None, ip: str = "", image: str = "",
                      keys: list[str] | None = None) -> MachineInfo:
        """An OS VM over base (an OS disk) booting vml + ird, provisioned by a fresh seed."""
        from isle.vm import cloudinit, osimage

        hostname = hostname or name
        cloudinit.check_user(user)
        cloudinit.check_hostname(hostname)
        if keys is None:
            keys = [cloudinit.read_ssh_key(ssh_key)] if ssh_key else []
        ports = ports or []

        def provision(d: str) -> None:
            pw = password or cloudinit.new_password()
            fd = os.open(os.path.join(d, "password"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pw + "\n")
            ours = cloudinit.ensure_key(d)  # isle's own key: `isle vm ssh` works regardless
            cloudinit.make_seed(d, name=name, user=user, ssh_keys=[ours, *keys], password=pw,
                                hostname=hostname, user_data=user_data)

        if network not in ("none", "user"):
            from isle.engine.networks import network_manager

            network_manager(self.s)._get(network)  # NotFound naming it, before any work
        elif ip:
            from isle.errors import ConfigError

            raise ConfigError("--ip", "an address needs an isle network (--network NAME)")
        return self.store.create(name, base, memory_mib=memory_mib, vcpus=vcpus, network=network,
                                 kernel=vml, initrd=ird, cmdline=osimage.CMDLINE, user=user,
                                 hostname=hostname, ports=ports, agent=True, provision=provision,
                                 ip=ip, image=image)

    # -- moving VMs ---------------------------------------------------------------------------
    def export(self, name: str, out: str, fmt: str) -> str:
        """The stopped VM's disk as out: qcow2, raw, vmdk (streamOptimized), vdi, vhdx, or an
        OVA (OVF descriptor + VMDK: VirtualBox's and VMware's import)."""
        from isle.errors import ConfigError
        from isle.vm import disk, ova

        if fmt not in ("qcow2", "raw", "vmdk", "vdi", "vhdx", "ova"):
            raise ConfigError("--format", f"{fmt!r} is not qcow2, raw, vmdk, vdi, vhdx or ova")
        out = os.path.abspath(out)
        if not os.path.isdir(os.path.dirname(out)):
            raise ConfigError("--output", f"{os.path.dirname(out)} is not a directory")
        if fmt != "ova":
            return self.store.export(name, out, fmt)
        spec = self.store._load(name)
        tmp = f"{out}.vmdk.{os.getpid()}"
        try:
            self.store.export(name, tmp, "vmdk")
            cap = int(str(disk.info(os.path.join(self.store._dir(name), "disk.qcow2"))
                          .get("virtual-size") or 0))
            return ova.write(out, name=name, vcpus=spec.vcpus, memory_mib=spec.memory_mib,
                             vmdk=tmp, capacity=cap)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def import_(self, path: str, name: str = "", *, memory_mib: int = 0, vcpus: int = 0,
                firmware: str = "bios", network: str = "", user: str = "",
                ssh_key: str = "") -> MachineInfo:
        """A VM from a disk (qcow2/raw/vmdk/vdi/vhdx) or an OVA: the disk becomes a qcow2 base
        under .disks/; one with a boot sector boots through firmware, an isle OS disk (a whole-
        disk ext4 with a kernel in /boot) boots that kernel, re-provisioned by cloud-init."""
        import hashlib
        import shutil
        import tempfile

        from isle.errors import ConfigError, VMError
        from isle.vm import disk, ova

        if not os.path.isfile(path):
            raise ConfigError("import", f"{path} is not a file")
        d = os.path.join(self.store.root, ".disks")
        os.makedirs(d, exist_ok=True)
        work = tempfile.mkdtemp(prefix="import-", dir=d)
        try:
            src, desc = path, dict[str, object]()
            if path.endswith(".ova"):
                desc = ova.read(path, work)
                src = str(desc["disk"])
            name = (name or str(desc.get("name") or "")
                    or os.path.basename(path).rsplit(".", 1)[0])
            self.store._dir(name)
            if os.path.exists(os.path.join(self.store.root, name)):
                from isle.errors import AlreadyExists

                raise AlreadyExists(f"a VM named {name} exists")
            fmt = str(disk.info(src).get("format"))
            if fmt not in disk.FORMATS:
                raise VMError(f"{path}: disk format {fmt} is not one of "
                              f"{', '.join(disk.FORMATS)}")
            st = os.stat(path)
            key = hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
                                 .encode()).hexdigest()[:16]
            base = os.path.join(d, f"import-{key}.qcow2")
            if not os.path.exists(base):
                disk.convert(src, base, "qcow2")
            memory_mib = memory_mib or int(str(desc.get("memory_mib") or 0)) or 768
            vcpus = vcpus or int(str(desc.get("vcpus") or 0)) or 1
            k = disk.kind(base, "qcow2")
            if k == "ext4":
                vml, ird = self._kernel_from_disk(base, work)
                return self._create_os_on(name, base, vml, ird, memory_mib=memory_mib,
                                          vcpus=vcpus, network=network or "user",
                                          user=user or "isle", ssh_key=ssh_key)
            if k != "mbr":
                raise VMError(f"{path} is not bootable: no boot sector and no isle OS "
                              "filesystem")
            return self.store.create(name, base, memory_mib=memory_mib, vcpus=vcpus,
                                     firmware=firmware, network=network or "none")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- disks as OCI artifacts in registries ------------------------------------------------
    def push(self, name: str, ref: str, *, tls_verify: bool = True,
             progress: Any = None, artifact: bool = False) -> str:
        """The stopped VM's disk pushed to a registry as a one-layer OCI image holding
        /disk/disk.qcow2 (KubeVirt's containerDisk layout: skopeo, crane, podman and KubeVirt
        read it) with the VM's size in its labels, or (artifact) as an OCI artifact the way
        `oras push` makes one (artifactType, an empty config, the qcow2 file itself as the one
        layer, named by its title); the manifest digest."""
        import shutil
        import tempfile

        from isle.engine.images import Images
        from isle.image.defaults import _image_from_dir
        from isle.image.store import now_iso

        spec = self.store._load(name)
        if artifact:
            return self._push_artifact(name, spec, ref, tls_verify=tls_verify)
        d = os.path.join(self.store.root, ".disks")
        os.makedirs(d, exist_ok=True)
        work = tempfile.mkdtemp(prefix="push-", dir=d)
        imgs = Images(self.s)
        try:
            os.mkdir(os.path.join(work, "disk"))
            self.store.export(name, os.path.join(work, "disk", "disk.qcow2"), "qcow2")
            labels = {"org.isle.vm.disk": "/disk/disk.qcow2",
                      "org.isle.vm.memory_mib": str(spec.memory_mib),
                      "org.isle.vm.vcpus": str(spec.vcpus),
                      "org.isle.vm.firmware": spec.firmware}
            _image_from_dir(imgs.store, work, ref, {"Labels": labels}, now_iso(),
                            f"isle vm push {name}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        try:
            return str(imgs.push(ref, tls_verify=tls_verify, progress=progress))
        finally:
            try:
                imgs.store.remove(ref)  # the registry has it; no second copy of the disk here
            except Exception:
                pass

    def _push_artifact(self, name: str, spec: Any, ref: str, *, tls_verify: bool) -> str:
        import hashlib
        import json
        import shutil
        import tempfile

        from isle.engine.images import Images
        from isle.image.reference import Reference
        from isle.image.store import now_iso
        from isle.oci.image_spec import MT_OCI_MANIFEST

        r = Reference.parse(ref)
        d = os.path.join(self.store.root, ".disks")
        os.makedirs(d, exist_ok=True)
        work = tempfile.mkdtemp(prefix="push-", dir=d)
        try:
            disk = os.path.join(work, "disk.qcow2")
            self.store.export(name, disk, "qcow2")
            with open(disk, "rb") as f:
                digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            size = os.path.getsize(disk)

            def chunks() -> Any:
                with open(disk, "rb") as f:
                    while chunk := f.read(1 << 20):
                        yield chunk

            empty = b"{}"
            edigest = "sha256:" + hashlib.sha256(empty).hexdigest()
            manifest = {
                "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": edigest,
                           "size": len(empty), "data": "e30="},
                "layers": [{"mediaType": DISK_MEDIA_TYPE, "digest": digest, "size": size,
                            "annotations": {"org.opencontainers.image.title": "disk.qcow2"}}],
                "annotations": {"org.opencontainers.image.created": now_iso(),
                                "org.isle.vm.memory_mib": str(spec.memory_mib),
                                "org.isle.vm.vcpus": str(spec.vcpus),
                                "org.isle.vm.firmware": spec.firmware}}
            with Images(self.s).client(r.registry, tls_verify=tls_verify) as c:
                for dg, n, body in ((edigest, len(empty), empty), (digest, size, None)):
                    if not c.has_blob(r.repository, dg):
                        c.upload_blob(r.repository, dg, n, body if body is not None
                                      else chunks())
                return str(c.put_manifest(r.repository, r.digest or r.tag,
                                          json.dumps(manifest).encode(), MT_OCI_MANIFEST))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _import_annotated(self, path: str, name: str, ann: dict[str, str], network: str,
                          user: str) -> MachineInfo:
        """import_ with the machine settings a pushed disk carries (org.isle.vm.* annotations
        of an artifact, labels of an image); a disk that reads other files is refused."""
        from isle.vm import disk

        disk.check_self_contained(path)
        return self.import_(path, name, memory_mib=int(ann.get("org.isle.vm.memory_mib") or 0),
                            vcpus=int(ann.get("org.isle.vm.vcpus") or 0),
                            firmware=ann.get("org.isle.vm.firmware") or "bios",
                            network=network, user=user)

    def pull(self, ref: str, name: str = "", *, tls_verify: bool = True,
             progress: Any = None, network: str = "", user: str = "") -> MachineInfo:
        """A VM from a disk in a registry: an OCI artifact (ORAS's layout: the disk file is a
        layer blob itself, e.g. `oras push REF disk.qcow2`, or `isle vm push --artifact`), or an
        image (isle vm push's, any containerDisk: the first *.qcow2/*.img/*.raw/*.vmdk under
        /disk). The manifest is fetched once, through one client, for both."""
        import shutil
        import tempfile

        from isle.engine.images import Images
        from isle.errors import NotFound as NF
        from isle.image.pull import pull as pull_image
        from isle.image.reference import Reference

        name = name or ref.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
        r = Reference.parse(ref)
        d = os.path.join(self.store.root, ".disks")
        os.makedirs(d, exist_ok=True)
        work = tempfile.mkdtemp(prefix="pull-", dir=d)
        imgs = Images(self.s)
        try:
            with imgs.client(r.registry, tls_verify=tls_verify) as c:
                manifest = c.get_manifest(r.repository, r.digest or r.tag)
                got = self._artifact_disk(ref, c, manifest, work)
                if got is None:
                    img = pull_image(imgs.store, str(r), c, progress=progress, manifest=manifest)
            if got is not None:
                return self._import_annotated(got[0], name, got[1], network, user)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        try:
            labels = (img.config.get("config") or {}).get("Labels") or {}
            disk_path = ""
            for layer in reversed(img.layer_dirs):
                dd = os.path.join(layer, "disk")
                if os.path.isdir(dd):
                    for n in sorted(os.listdir(dd)):
                        if n.endswith(_DISK_EXTS):
                            disk_path = os.path.join(dd, n)
                            break
                if disk_path:
                    break
            if not disk_path:
                raise NF(f"{ref} holds no VM disk (/disk/*.qcow2)")
            return self._import_annotated(disk_path, name, labels, network, user)
        finally:
            try:
                imgs.store.remove(ref)  # the disk is a base under .disks/ now
            except Exception:
                pass

    @staticmethod
    def _artifact_disk(ref: str, c: Any, manifest: tuple[bytes, str, str],
                       work: str) -> tuple[str, dict[str, str]] | None:
        """(the disk downloaded into work through registry client c, the manifest's
        annotations) if ref, whose manifest is manifest (c.get_manifest's), is an OCI artifact
        whose layers are files, not tars (ORAS: artifactType, a file's media type, its name in
        org.opencontainers.image.title); None for an image."""
        import hashlib
        import json

        from isle.errors import ImageError
        from isle.image.reference import Reference
        from isle.oci.image_spec import LAYER_TYPES, MT_OCI_MANIFEST, check_digest

        r = Reference.parse(ref)
        body, mt, _ = manifest
        try:
            m = json.loads(body)
        except ValueError as exc:
            raise ImageError(f"{ref}: manifest is not JSON: {exc}") from None
        if not isinstance(m, dict) or (m.get("mediaType") or mt) != MT_OCI_MANIFEST:
            return None
        files = [x for x in m.get("layers") or [] if isinstance(x, dict)
                 and x.get("mediaType") not in LAYER_TYPES]
        if not files:
            return None  # an image: its layers are tars

        def title(x: dict[str, Any]) -> str:
            return str((x.get("annotations") or {}).get("org.opencontainers.image.title")
                       or "")

        disks = [x for x in files if title(x).endswith(_DISK_EXTS)] or files
        layer = disks[0]
        digest = check_digest(layer.get("digest"), f"{ref}: layer digest")
        ext = next((e for e in _DISK_EXTS if title(layer).endswith(e)), ".img")
        out = os.path.join(work, "disk" + ext)
        size = layer.get("size")
        if not isinstance(size, int) or size < 0:
            raise ImageError(f"{ref}: disk layer {digest} has no size")
        h, got = hashlib.sha256(), 0
        resp = c.blob_stream(r.repository, digest)
        try:
            with open(out, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    got += len(chunk)
                    if got > size:  # never more than the manifest says (a full disk)
                        raise ImageError(f"{ref}: disk blob {digest} is larger than the "
                                         f"{size} bytes its manifest says")
                    h.update(chunk)
                    f.write(chunk)
        finally:
            resp.close()
        if got != size or "sha256:" + h.hexdigest() != digest:
            raise ImageError(f"{ref}: disk blob {digest}: digest mismatch")
        ann = m.get("annotations") or {}
        return out, {str(k): str(v) for k, v in ann.items()}

    def _kernel_from_disk(self, base: str, work: str) -> tuple[str, str]:
        """An isle OS disk's newest kernel + initramfs, copied out with debugfs (no mount)."""
        import shutil

        from isle.errors import VMError
        from isle.sys import proc
        from isle.vm import disk

        raw = os.path.join(work, "raw")
        disk.convert(base, raw, "raw")
        ls = proc.run(["debugfs", "-R", "ls -p /boot", raw], timeout=60).stdout.decode()
        names = sorted(x.split("/")[5] for x in ls.splitlines() if x.count("/") >= 6)
        kernels = [n for n in names if n.startswith("vmlinuz-")]
        ver = next((k.removeprefix("vmlinuz-") for k in reversed(kernels)
                    if f"initrd.img-{k.removeprefix('vmlinuz-')}" in names), "")
        if not ver:
            raise VMError(f"{base}: an ext4 disk without a kernel and initramfs in /boot")
        stem = base[:-len(".qcow2")]
        for src, dst in ((f"/boot/vmlinuz-{ver}", stem + ".vmlinuz"),
                         (f"/boot/initrd.img-{ver}", stem + ".initrd")):
            proc.run(["debugfs", "-R", f"dump {src} {dst}.tmp", raw], timeout=120)
            if not os.path.getsize(dst + ".tmp"):
                raise VMError(f"could not copy {src} out of {base}")
            os.rename(dst + ".tmp", dst)
        os.unlink(raw)
        shutil.rmtree(os.path.join(work, "raw"), ignore_errors=True)
        return stem + ".vmlinuz", stem + ".initrd"

    def agent_exec(self, name: str, argv: list[str], *, stdin: bytes = b"",
                   timeout: float = 0, wait: float = 0) -> tuple[int, bytes, bytes]:
        """Run argv in a running whole-OS VM through its guest agent; wait: seconds to wait for
        the agent to come up (a booting guest)."""
        from isle.errors import InvalidState, VMError
        from isle.vm.agent import Agent

        info = self.store.inspect(name)
        if not info.spec.agent:
            raise InvalidState(f"VM {name} has no guest agent (only OS images' VMs have one)")
        if info.status != "running":
            raise InvalidState(f"VM {name} is not running")
        path = os.path.join(os.path.dirname(info.console), "qga.sock")
        deadline = time.monotonic() + wait
        while True:
            try:
                with Agent(path) as a:
                    a.sync(timeout=min(5.0, max(1.0, deadline - time.monotonic())))
                    return a.exec(argv, stdin=stdin, timeout=timeout)
            except VMError:
                if time.monotonic() >= deadline or not self.store._pid(name):
                    raise
                time.sleep(1)

    def ssh_argv(self, name: str, args: list[str]) -> list[str]:
        """ssh to the VM's provisioned user with its own key over the forwarded SSH port."""
        from isle.errors import InvalidState

        info = self.store.inspect(name)
        if not info.spec.user:
            raise InvalidState(f"VM {name} was not provisioned (no user): no SSH")
        if info.status != "running":
            raise InvalidState(f"VM {name} is not running")
        fw = {k.split("@")[0]: v for k, v in info.forwards.items()}
        host, port = "127.0.0.1", fw.get("22/tcp", 0)
        if not port:  # on an isle network: its address, reachable from the host over the bridge
            nets = self.network_info(name).get("Networks") or {}
            ips = [ip for n in nets.values() for ip in n["ips"] if ":" not in ip]
            if ips:
                host, port = ips[0], 22
        if not port:
            raise InvalidState(f"VM {name} has no SSH port forwarded nor a network address")
        key = os.path.join(self.store._dir(name), "id_ed25519")
        return ["ssh", "-i", key, "-p", str(port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                f"{info.spec.user}@{host}", *args]

    def _image_disk(self, ref: str, k: Any) -> tuple[str, str]:
        """(<root>/vms/.disks/<image id>-<kernel>.ext4, its init): the image's layers merged into
        ext4, with the guest kernel's OS modules (ACPI power button) in /lib/modules/<ver>/isle."""
        import shutil
        import tempfile

        from isle.errors import VMError
        from isle.image.store import ImageStore
        from isle.sys import proc

        img = ImageStore.from_settings(self.s).resolve(ref)
        d = os.path.join(self.store.root, ".disks")
        os.makedirs(d, exist_ok=True)
        out = os.path.join(d, f"{img.id.split(':')[-1][:24]}-{k.version}.ext4")
        if os.path.exists(out) and os.path.exists(out + ".init"):
            with open(out + ".init") as f:
                return out, f.read().strip()
        work = tempfile.mkdtemp(prefix="build-", dir=d)
        mnt, tmp = os.path.join(work, "root"), os.path.join(work, "disk.ext4")
        os.mkdir(mnt)
        mounted = False
        try:
            from isle.vm.kernel import os_modules

            mods = os.path.join(work, "mods")
            libdir = "lib"  # merged /usr: /lib is a symlink a directory here would hide
            for layer in reversed(img.layer_dirs):
                p = os.path.join(layer, "lib")
                if os.path.lexists(p):
                    if os.path.islink(p):
                        libdir = os.path.normpath(os.readlink(p)).lstrip("/")
                    break
            shutil.copytree(os_modules(k), os.path.join(mods, libdir, "modules", k.version, "isle"))
            lower = ":".join([mods, *reversed(img.layer_dirs)])
            proc.run(["mount", "-t", "overlay", "-o", f"ro,lowerdir={lower}", "overlay", mnt],
                     timeout=30)
            mounted = True
            init = next((c for c in ("/sbin/init", "/lib/systemd/systemd", "/bin/init")
                         if os.path.lexists(mnt + c)), "")
            if not init:
                raise VMError(f"image {ref} has no init (/sbin/init, /bin/init): it cannot boot")
            used = int(proc.run(["du", "-sxb", mnt], timeout=300).stdout.split()[0])
            size_mib = int(used * 1.3 / 2**20) + 256
            proc.run(["mkfs.ext4", "-q", "-F", "-d", mnt, tmp, f"{size_mib}M"], timeout=900)
            with open(out + ".init", "w") as f:
                f.write(init + "\n")
            os.rename(tmp, out)
            return out, init
        finally:
            if mounted:
                proc.run(["umount", os.path.join(work, "root")], timeout=30, check=False)
            shutil.rmtree(work, ignore_errors=True)

    def start(self, name: str) -> MachineInfo:
        """Start the VM's QEMU jailed inside a cgroup of its own (/isle/vm-<name>): its RAM plus
        QEMU's overhead and its threads bound it, as a container's limits bound a container."""
        spec = self.store._load(name)
        with self._lock(name):
            return self._start(name, spec)

    def _start(self, name: str, spec: Any) -> MachineInfo:
        if self.store._pid(name):
            from isle.errors import InvalidState

            raise InvalidState(f"VM {name} is already running")
        self._release(name)  # what a VM that ended by itself left (if nobody saw it end)
        files = self._make_cgroup(name, spec.memory_mib, spec.vcpus)
        fd = -1
        try:
            nic, cmdline, fd = None, "", -1
            if spec.network not in ("none", "user"):
                nic, cmdline = self._net_up(name, spec)
                fd = nic.fd
            return self.store.start(name, cgroup_files=files, nic=nic, cmdline_extra=cmdline)
        except BaseException:
            self._release(name)
            raise
        finally:
            if fd >= 0:
                os.close(fd)  # QEMU holds the tap now: it goes when QEMU does

    def _net_owner(self, name: str) -> str:
        return f"vmos-{name}"

    def _net_up(self, name: str, spec: Any) -> tuple[Any, str]:
        """The VM on an isle network the way the VM runtime puts a VM container there: a netns
        the network manager attaches (lease, DNS name and aliases, published ports), whose veth
        the runtime's tc-mirred code joins to a tap QEMU gets by fd (runtime.vm.network). The
        guest takes the veth's MAC; its address, gateway and DNS server reach it on the kernel
        command line (ip=, nameserver=: systemd-network-generator -> networkd)."""
        import ipaddress

        from isle.errors import VMError
        from isle.net.types import PortMapping
        from isle.runtime.vm import network as vmnet
        from isle.vm.config import Nic

        nm = self._nm(name, spec)
        owner = self._net_owner(name)
        ports = []
        for p in spec.ports:
            hostpart, guest = p.rsplit(":", 1)
            gport, _, proto = guest.partition("/")
            hip, _, hport = hostpart.rpartition(":")
            ports.append(PortMapping(host_ip=hip, host_port=int(hport),
                                     container_port=int(gport), proto=proto or "tcp"))
        ns = nm.create_netns(owner)
        if ns is None:
            raise VMError("whole-OS VMs on isle networks need root (use --network user)")
        opts: dict[str, Any] = {"aliases": [name, spec.hostname or name]}
        if spec.ip:
            opts["ip"] = spec.ip
        att = nm.connect(owner, ns, [(spec.network, opts)], ports, name=name,
                         hostname=spec.hostname or name)
        plan = vmnet.discover(ns)
        if plan is None:
            raise VMError(f"network {spec.network} gave VM {name} no IPv4 address")
        fd = vmnet.connect(plan)
        g = plan.guest
        iface = ipaddress.ip_interface(g.address)
        na = next(iter(att.networks.values()))
        cmd = f"ip={iface.ip}::{g.gateway}:{iface.netmask}::eth0:off"
        cmd += "".join(f" nameserver={d}" for d in na.dns_servers or na.gateways[:1])
        return Nic(id="net0", kind="tap", fd=fd, mac=g.mac), cmd

    def _nm(self, name: str, spec: Any = None) -> Any:
        """The network manager holding the VM's attachment: this root's, or the one a live
        migration left it with (spec.netroot)."""
        from isle.engine.networks import network_manager

        if spec is None:
            try:
                spec = self.store._load(name)
            except NotFound:
                spec = None
        return network_manager(self._net_settings(spec))

    def _net_settings(self, spec: Any) -> Settings:
        """The settings of the root whose network manager holds VM spec's attachment."""
        if spec is not None and spec.netroot:
            return Settings(root=spec.netroot[0], runroot=spec.netroot[1], cache=self.s.cache)
        return self.s

    def _netns_path(self, name: str, spec: Any) -> str:
        """nm.store.netns_path of the VM's owner, without the network manager (~25 ms to import
        and it makes its directories): network_manager's runroot (<runroot>/networks) and the
        net store's netns/ under it, in the root _net_settings picks."""
        runroot = os.path.join(self._net_settings(spec).runroot, "networks")
        return os.path.join(runroot, "netns", self._net_owner(name))

    def _net_down(self, name: str, spec: Any = None) -> None:
        nm = self._nm(name, spec)
        owner = self._net_owner(name)
        if nm.store.record(owner) is None and owner not in nm.store.netns_ids():
            return
        try:
            from isle.runtime.vm import network as vmnet

            plan = vmnet.discover(nm.store.netns_path(owner))
            if plan is not None:
                vmnet.disconnect(plan.netns, plan.veth)
        except Exception:
            pass
        nm.teardown(owner)

    def network_info(self, name: str) -> dict[str, Any]:
        """The VM's isle network attachment (addresses, ports) while it runs; {} otherwise."""
        att = self._nm(name).attachment(self._net_owner(name))
        if att is None:
            return {}
        return {"Networks": {k: v.to_dict() for k, v in att.networks.items()},
                "Ports": [p.to_dict() for p in att.ports]}

    # -- live migration -----------------------------------------------------------------------
    def migrate(self, name: str, to_root: str, to_runroot: str, *,
                timeout: float = 600) -> dict[str, Any]:
        """Move running VM name to another isle root on this host, live: a QEMU started there
        with -incoming takes the VM's RAM and device state over a socket pair handed to both
        QEMUs (fd: migration), the disk stays where it is (shared storage: the overlay file moves
        into the new root's directory; both QEMUs only ever hold it by fd) and so does the
        network attachment: the new QEMU's tap joins the same namespace, and at switch-over the
        veth's mirred redirect moves to it, so the guest keeps its address, MAC and open TCP
        connections. On QEMU's user network the host port forwards (published ports, SSH) follow
        the VM: the new QEMU binds them once the old one has quit (connections through them do
        not survive: they were the old QEMU's host sockets). {"downtime_ms", "total_ms"} from
        QEMU, "forwards" moved and "forwards_lost" (rules the new QEMU could not bind).

        Under the VM's lock, as start, stop and rm: a reap (ls, inspect) that saw the source
        QEMU gone would otherwise give back the cgroup and network attachment being moved."""
        self.store._load(name)
        with self._lock(name):
            return self._migrate(name, to_root, to_runroot, timeout=timeout)

    def _migrate(self, name: str, to_root: str, to_runroot: str, *,
                 timeout: float) -> dict[str, Any]:
        import dataclasses
        import shutil
        import socket

        from isle.errors import AlreadyExists, ConfigError, InvalidState, VMError
        from isle.vm.qmp import Monitor

        spec = self.store._load(name)
        if not self.store._pid(name):
            raise InvalidState(f"VM {name} is not running: nothing to migrate live")
        if spec.firmware == "uefi":
            raise ConfigError("migrate", "UEFI VMs (their firmware variables) do not migrate")
        dst = VMs(Settings(root=os.path.abspath(to_root), runroot=os.path.abspath(to_runroot),
                           cache=self.s.cache))
        if os.path.abspath(dst.store.root) == os.path.abspath(self.store.root):
            raise ConfigError("--to", "the VM is in that root already")
        sdir, ddir = self.store._dir(name), dst.store._dir(name)
        fwd = self.store._forwards(name)  # the user network's host ports: they follow the VM
        os.makedirs(dst.store.root, exist_ok=True)
        if os.stat(dst.store.root).st_dev != os.stat(sdir).st_dev:
            raise ConfigError("--to", f"{to_root} is on another filesystem than {self.s.root}: "
                              "the disk moves by rename (shared storage)")
        try:
            os.mkdir(ddir)
        except FileExistsError:
            raise AlreadyExists(f"{to_root} has a VM named {name}") from None
        # the new root's reap (its ls, inspect) would see this VM stopped until the new QEMU
        # runs, and give back the cgroup and the network attachment it is being moved with
        with dst._lock(name):
            moved = False
            nic = None
            plan = None
            try:
                for f in os.listdir(sdir):
                    if f not in ("disk.qcow2", "machine.json", ".lock"):
                        shutil.copy2(os.path.join(sdir, f), os.path.join(ddir, f))
                newspec = dataclasses.replace(spec)
                cmdline = ""
                if spec.network not in ("none", "user"):
                    newspec.netroot = spec.netroot or [os.path.abspath(self.s.root),
                                                       os.path.abspath(self.s.runroot)]
                    nic, cmdline, plan = self._second_tap(name, spec)
                from isle.sys.fs import atomic_write

                atomic_write(os.path.join(ddir, "machine.json"),
                             json.dumps(dataclasses.asdict(newspec)).encode())
                os.rename(os.path.join(sdir, "disk.qcow2"), os.path.join(ddir, "disk.qcow2"))
                moved = True
                files = dst._make_cgroup(name, spec.memory_mib, spec.vcpus)
                try:
                    # on QEMU's user network the host ports (published, SSH) are the source QEMU's
                    # sockets: the incoming one starts without them and takes them after it quits
                    dst.store.start(name, cgroup_files=files, nic=nic, cmdline_extra=cmdline,
                                    incoming="defer", forwards=({} if spec.network == "user"
                                                                else None))
                finally:
                    if nic is not None:
                        os.close(nic.fd)
                a, b = socket.socketpair()
                src_mon = Monitor(os.path.join(self.store._run(name), "qmp.sock"), timeout=30)
                dst_mon = Monitor(os.path.join(dst.store._run(name), "qmp.sock"), timeout=30)
                try:
                    dst_mon.send_fd(b.fileno(), "mig")
                    src_mon.send_fd(a.fileno(), "mig")
                    a.close()
                    b.close()
                    dst_mon.cmd("migrate-incoming", uri="fd:mig")
                    src_mon.cmd("migrate-set-parameters", **{"downtime-limit": 100})
                    src_mon.cmd("migrate", uri="fd:mig")
                    src_mon.wait_migration(timeout)
                    stats = src_mon.cmd("query-migrate") or {}
                    if plan is not None:  # the veth's frames now go to the new QEMU's tap
                        self._switch_tap(plan)
                    deadline = time.monotonic() + 30
                    while (st := (dst_mon.cmd("query-status") or {}).get("status")) != "running":
                        if st == "paused":  # arrived whole (QEMU leaves a deferred incoming paused)
                            dst_mon.cmd("cont")
                        if time.monotonic() > deadline:
                            mig = dst_mon.cmd("query-migrate") or {}
                            raise VMError(f"the migrated VM did not resume ({st}, incoming "
                                          f"{mig.get('status', '?')})")
                        time.sleep(0.01)
                    try:
                        src_mon.cmd("quit")
                    except VMError:
                        pass
                finally:
                    src_mon.close()
                    dst_mon.close()
            except BaseException:
                if dst.store._pid(name):
                    dst.store.stop(name, timeout=0)
                try:  # the source ran up to the switch-over: it carries on
                    with_mon = Monitor(os.path.join(self.store._run(name), "qmp.sock"), timeout=10)
                    try:
                        if (with_mon.cmd("query-status") or {}).get("status") != "running":
                            with_mon.cmd("cont")
                    finally:
                        with_mon.close()
                except VMError:
                    pass
                dst._drop_cgroup(name)
                if moved:
                    os.rename(os.path.join(ddir, "disk.qcow2"), os.path.join(sdir, "disk.qcow2"))
                if plan is not None:
                    self._drop_second_tap(plan)
                    self._switch_tap(plan, back=True)
                shutil.rmtree(ddir, ignore_errors=True)
                raise
            deadline = time.monotonic() + 10
            while self.store._pid(name) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.store._clean_run(name)  # (forwards stay: the record's copy is read before)
            lost = dst.store.add_forwards(name, fwd) if fwd else []
            # what stays behind for the VM (its base disk, its network attachment): the roots that
            # hold it keep it through their prunes (engine/vmos.moved_away)
            home = os.path.abspath(dst.s.root)
            for keep in self._held_by(newspec):
                self._mark_moved(keep, name, None if keep == home else home)
            self._drop_cgroup(name)
            shutil.rmtree(sdir, ignore_errors=True)
            return {"downtime_ms": stats.get("downtime", 0),
                    "total_ms": stats.get("total-time", 0), "to": dst.store.root,
                    "forwards": fwd, "forwards_lost": lost}

    @staticmethod
    def _held_by(spec: Any) -> set[str]:
        """The isle roots holding something of VM spec: its network attachment (netroot), its
        base disk (<root>/vms/.disks/: built or imported there)."""
        roots = {os.path.abspath(spec.netroot[0])} if spec.netroot else set()
        disks = os.path.dirname(os.path.abspath(spec.base or "/"))
        if os.path.basename(disks) == ".disks":
            roots.add(os.path.dirname(os.path.dirname(disks)))
        return roots

    @staticmethod
    def _mark_moved(root: str, name: str, to: str | None, only: str = "") -> None:
        """<root>/vms/.moved/<name>: the isle root VM name (which uses something root holds)
        lives in now (engine/vmos.moved_away); to=None: it is gone (only: if it lived there)."""
        from isle.sys.fs import atomic_write

        d = os.path.join(root, "vms", ".moved")
        p = os.path.join(d, name)
        if to is None:
            try:
                if only:
                    with open(p) as f:
                        if f.read().strip() != os.path.abspath(only):
                            return
                os.unlink(p)
            except FileNotFoundError:
                pass
            return
        os.makedirs(d, mode=0o700, exist_ok=True)
        atomic_write(p, os.path.abspath(to).encode(), durable=False)

    _TAP2 = "isle-tap1"

    def _second_tap(self, name: str, spec: Any) -> tuple[Any, str, Any]:
        """A second tap in the VM's namespace for the incoming QEMU: already mirrored towards
        the veth (the new guest sends nothing until it runs); the veth's side moves at
        switch-over. Returns (Nic, the guest's command line addition, the runtime's Plan)."""
        import ipaddress

        from isle.errors import VMError
        from isle.runtime.vm import network as vmnet
        from isle.sys import proc
        from isle.vm import jail
        from isle.vm.config import Nic

        nm = self._nm(name, spec)
        ns = nm.store.netns_path(self._net_owner(name))
        plan = vmnet.discover(ns)
        if plan is None:
            raise VMError(f"VM {name} has no network attachment to move")
        with vmnet._inside(ns):
            fd = jail.open_tap(self._TAP2)
            try:
                mtu = ["mtu", str(plan.guest.mtu)] if plan.guest.mtu else []
                proc.run(["ip", "link", "set", self._TAP2, *mtu, "up"], timeout=10)
                proc.run(["tc", "qdisc", "add", "dev", self._TAP2, "ingress"], timeout=10)
                proc.run(["tc", "filter", "add", "dev", self._TAP2, *vmnet._REDIRECT.format(
                    plan.veth).split()], timeout=10)
            except BaseException:
                os.close(fd)
                raise
        g = plan.guest
        iface = ipaddress.ip_interface(g.address)
        att = nm.attachment(self._net_owner(name))
        na = next(iter(att.networks.values())) if att else None
        cmd = f"ip={iface.ip}::{g.gateway}:{iface.netmask}::eth0:off"
        if na is not None:
            cmd += "".join(f" nameserver={d}" for d in na.dns_servers or na.gateways[:1])
        return Nic(id="net0", kind="tap", fd=fd, mac=g.mac), cmd, plan

    def _switch_tap(self, plan: Any, back: bool = False) -> None:
        """Point the veth's redirect at the incoming QEMU's tap (back: at the first one)."""
        from isle.runtime.vm import network as vmnet
        from isle.sys import proc

        to = vmnet.TAP if back else self._TAP2
        with vmnet._inside(plan.netns):
            batch = (f"filter del dev {plan.veth} parent ffff:\n"
                     f"filter add dev {plan.veth} {vmnet._REDIRECT.format(to)}\n")
            proc.run(["tc", "-batch", "-"], input=batch.encode(), timeout=10, check=not back)

    def _drop_second_tap(self, plan: Any) -> None:
        from isle.runtime.vm import network as vmnet
        from isle.sys import proc

        try:
            with vmnet._inside(plan.netns):
                proc.run(["tc", "qdisc", "del", "dev", self._TAP2, "ingress"], timeout=10,
                         check=False)
        except OSError:
            pass

    def stop(self, name: str, timeout: float = 30.0) -> MachineInfo:
        self.store._load(name)
        with self._lock(name):
            info = self.store.stop(name, timeout=timeout)
            self._release(name)
        return info

    def rm(self, name: str, force: bool = False) -> None:
        spec = self.store._load(name)
        with self._lock(name):
            self.store.rm(name, force=force)
            self._release(name, spec)
        for r in self._held_by(spec) - {os.path.abspath(self.s.root)}:
            self._mark_moved(r, name, None, only=self.s.root)

    def cgroup_name(self, name: str) -> str:
        """/isle/vm-<name>-<root tag>: per root, as two roots (a live migration's two ends)
        may each run a VM of this name."""
        import hashlib

        tag = hashlib.sha256(os.path.abspath(self.s.root).encode()).hexdigest()[:6]
        return f"vm-{name}-{tag}"

    def _cgroup_record(self, name: str) -> str:
        return os.path.join(self.store.runroot, f"{name}.cgroup")

    def _make_cgroup(self, name: str, memory_mib: int, vcpus: int) -> tuple[str, ...]:
        if os.geteuid() != 0:
            return ()
        from isle.runtime.cgroup import manager
        from isle.runtime.vm.runner import procs_files
        from isle.runtime.vm.spec import QEMU_MEMORY_OVERHEAD_MIB, QEMU_THREADS
        from isle.sys.fs import atomic_write
        from isle.vm import accel

        cg = manager(None, self.cgroup_name(name))
        # TCG's translated-code cache grows to 1 GiB (QEMU's default tb-size) with a whole OS
        tcg = TCG_TB_MIB if accel.detect()[0] == "tcg" else 0
        res = {"memory": {"limit": (memory_mib + QEMU_MEMORY_OVERHEAD_MIB + tcg) << 20},
               "pids": {"limit": QEMU_THREADS + vcpus}}
        cg.drop_unused_unified(res)
        cg.create()
        try:
            os.makedirs(self.store.runroot, mode=0o700, exist_ok=True)
            atomic_write(self._cgroup_record(name), json.dumps(cg.to_state()).encode(),
                         durable=False)
            cg.set(res)
        except BaseException:
            cg.destroy()
            raise
        return procs_files(cg)

    def _drop_cgroup(self, name: str) -> None:
        from isle.runtime.vm.runner import drop_cgroup

        path = self._cgroup_record(name)
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return
        drop_cgroup(state)
        os.unlink(path)

    def ls(self) -> list[MachineInfo]:
        infos = self.store.ls()
        for i in infos:
            self._reap(i)
        return infos

    def inspect(self, name: str) -> MachineInfo:
        info = self.store.inspect(name)
        self._reap(info)
        return info

    # -- what a VM holds on the host besides QEMU: its cgroup and network attachment ------------
    def _lock(self, name: str, wait: bool = True) -> Any:
        """The VM's own lock (in its directory, gone with it): start, stop, rm and a reap of
        the same VM never interleave."""
        from isle.sys.fs import flock

        return flock(os.path.join(self.store.root, name, ".lock"), wait=wait)

    def _release(self, name: str, spec: Any = None) -> None:
        """Give back the cgroup and the network attachment of a VM whose QEMU is gone."""
        self._drop_cgroup(name)
        self._net_down(name, spec)

    def _holds(self, name: str, spec: Any) -> bool:
        """Whether the VM has a cgroup record or a network namespace: two stats, as `isle ps`
        and `vm ls` ask this of every stopped VM."""
        return (os.path.exists(self._cgroup_record(name))
                or os.path.lexists(self._netns_path(name, spec)))

    def _reap(self, info: MachineInfo) -> None:
        """A VM whose QEMU ended without `vm stop` (powered off by itself, crashed, killed)
        still holds its cgroup and network attachment (netns, veth, lease, nft rules): whoever
        sees it stopped gives them back, as a container's end is handled by the next command
        that sees it. Skipped while a start, stop or rm of it holds its lock (that one does)."""
        name = info.spec.name
        if info.status == "running" or not self._holds(name, info.spec):
            return
        try:
            with self._lock(name, wait=False):
                if not self.store._pid(name):
                    self._release(name, info.spec)
        except (BlockingIOError, FileNotFoundError):  # busy, or removed meanwhile
            return

    def console(self, name: str) -> str:
        return self.store.console(name)

    # -- templates ----------------------------------------------------------------------------
    def _tdir(self) -> str:
        return os.path.join(self.s.cache, "templates")

    def template_create(self, engine: Any, image: str, *, memory_mib: int = 128,
                        vcpus: int = 1, network: str = "") -> TemplateInfo:
        """Boot image once at this size, save it; `isle run --isolation vm` then restores it."""
        from isle.engine.options import RunOptions

        opts = RunOptions(image=image, command=["true"], remove=True, isolation="vm",
                          memory=memory_mib << 20, cpus=float(vcpus) if vcpus > 1 else 0.0,
                          network=network)
        _MAKING.clear()
        _MAKING.update(image=image)
        try:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                rep = engine.run(opts, stdin_fd=null, stdout_fd=null, stderr_fd=null)
            finally:
                os.close(null)
            key = _MAKING.get("key", "")
        finally:
            _MAKING.clear()
        if not key or rep.exit_code not in (0, None):
            raise NotFound(f"no template was made for {image} (its VM exited {rep.exit_code})")
        return self._info(key)

    def _info(self, key: str) -> TemplateInfo:
        try:
            with open(os.path.join(self._tdir(), f"{key}.json")) as f:
                label = json.load(f)
        except (OSError, ValueError):
            label = {}
        try:
            ram = os.stat(f"/dev/shm/isle-tpl-{key}.ram").st_blocks * 512
        except OSError:
            ram = 0
        return TemplateInfo(key=key, image=label.get("image") or self._image_of(label),
                            memory_mib=int(label.get("memory_mib", 0)),
                            vcpus=int(label.get("vcpus", 0)), net=label.get("net", ""),
                            created=label.get("created", ""), ram_bytes=ram)

    def _image_of(self, label: dict[str, Any]) -> str:
        """The image a template the runtime made on first use boots (its label has the image id):
        its first name, Docker's short form without ':latest'; '?' when gone."""
        from isle.engine.images import familiar_name
        from isle.image.store import ImageStore

        if not label.get("image_id"):
            return "?"
        try:
            img = ImageStore.from_settings(self.s).resolve(str(label["image_id"]))
            return familiar_name(img.names[0]).removesuffix(":latest")
        except (KeyError, IndexError, IsleError, ValueError):
            return "?"

    def templates(self) -> list[TemplateInfo]:
        d = self._tdir()
        if not os.path.isdir(d):
            return []
        return [self._info(k) for k in sorted(os.listdir(d))
                if os.path.isfile(os.path.join(d, k, "vmstate"))]

    def template_rm(self, ref: str) -> list[str]:
        """Remove templates by key (or key prefix) or by image name; the keys removed."""
        keys = [t.key for t in self.templates() if t.key.startswith(ref) or t.image == ref]
        if not keys:
            raise NotFound(f"no VM template {ref}")
        for k in keys:
            self._remove(k)
        return keys

    def prune_templates(self) -> list[str]:
        """Remove every template (their /dev/shm RAM files too) and stray labels."""
        keys = [t.key for t in self.templates()]
        d = self._tdir()
        if os.path.isdir(d):
            keys += [n[:-5] for n in os.listdir(d) if n.endswith(".json") and n[:-5] not in keys]
        for k in keys:
            self._remove(k)
        return keys

    def prune_disks(self) -> list[str]:
        """Remove image disks (--from-image) and imported/pulled bases no VM is built on."""
        d = os.path.join(self.store.root, ".disks")
        if not os.path.isdir(d):
            return []
        used = {i.spec.base for i in self.ls()}
        from isle.engine import vmos

        for n, r in vmos.moved_away(self.s).items():  # VMs migrated away, on a base here
            try:
                used.add(MachineStore(os.path.join(r, "vms"), "")._load(n).base)
            except (NotFound, OSError, ValueError, TypeError):
                pass
        gone = []
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            imported = n.startswith("import-") and n.endswith(".qcow2")
            if (n.endswith(".ext4") or imported) and p not in used:
                stem = p.rsplit(".", 1)[0]
                for q in (p, p + ".init", stem + ".vmlinuz", stem + ".initrd", stem + ".lock"):
                    if os.path.exists(q):
                        os.unlink(q)
                gone.append(n)
        return gone

    def _remove(self, key: str) -> None:
        """The runtime's own removal (vm.snapshot), under the template's lock: not while it is
        being made or a clone restored from it, and its lock file goes only while held."""
        from isle.vm import snapshot

        snapshot.remove(self.s.cache, keys=(key,))


def bootstrap_os(settings: Settings, os_ref: str, ref: str = "", *, mirror: str | None = None,
                 progress: Any = lambda s: None) -> Any:
    """`isle image bootstrap --os debian:bookworm [REF]`: a bootable OS image (systemd, its own
    kernel + initramfs, cloud-init, sshd, qemu-guest-agent), tagged REF (default DIST:SUITE-os).
    The debootstrapped tree is cached by content under <cache>/os-images/."""
    from isle.image.defaults import PATH, _image_from_dir, host_mirror
    from isle.image.store import ImageStore, now_iso
    from isle.vm import osimage

    dist, _, suite = os_ref.partition(":")
    suite = suite or osimage.SUITES.get(dist, ("",))[0]
    osimage._check(dist, suite)
    mirror = mirror or host_mirror()
    tree = osimage.build(dist, suite, settings.cache, mirror, progress=progress)
    store = ImageStore.from_settings(settings)
    progress(f"committing {tree} as an image")
    cfg = {"Env": [PATH], "Cmd": ["/sbin/init"],
           "Labels": {"org.isle.os": f"{dist}:{suite}"}}
    img = _image_from_dir(store, tree, ref or f"{dist}:{suite}-os", cfg, now_iso(),
                          f"isle image bootstrap --os {dist}:{suite} ({mirror})")
    return img

