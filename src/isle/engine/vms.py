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
from isle.errors import NotFound
from isle.engine.vmhook import _MAKING, TEMPLATE_ANNOTATION, annotate
from isle.vm.machine import MachineInfo, MachineStore

__all__ = ["VMs", "TemplateInfo", "annotate", "TEMPLATE_ANNOTATION"]


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
               firmware: str = "bios", network: str = "none") -> MachineInfo:
        return self.store.create(name, disk, memory_mib=memory_mib, vcpus=vcpus,
                                 firmware=firmware, network=network)

    def create_from_image(self, name: str, image: str, *, memory_mib: int = 512, vcpus: int = 1,
                          network: str = "none") -> MachineInfo:
        """A whole-OS VM from an isle image: its disk built once per image, booted by the cached
        guest kernel + isle's initramfs into the image's own init (systemd, busybox init...)."""
        from isle.vm import initramfs, kernel

        self.store._dir(name)  # a bad name fails before any work
        if os.path.exists(os.path.join(self.store.root, name)):
            from isle.errors import AlreadyExists

            raise AlreadyExists(f"a VM named {name} exists")
        k = kernel.find(self.s.cache)
        base, init = self._image_disk(image, k)
        return self.store.create(name, base, memory_mib=memory_mib, vcpus=vcpus, network=network,
                                 kernel=k.boot_image, initrd=initramfs.build(k, self.s.cache),
                                 init=init)

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
        if self.store._pid(name):
            from isle.errors import InvalidState

            raise InvalidState(f"VM {name} is already running")
        self._drop_cgroup(name)  # a VM that powered off by itself left its cgroup
        files = self._make_cgroup(name, spec.memory_mib, spec.vcpus)
        try:
            return self.store.start(name, cgroup_files=files)
        except BaseException:
            self._drop_cgroup(name)
            raise

    def stop(self, name: str, timeout: float = 30.0) -> MachineInfo:
        info = self.store.stop(name, timeout=timeout)
        self._drop_cgroup(name)
        return info

    def rm(self, name: str, force: bool = False) -> None:
        self.store.rm(name, force=force)
        self._drop_cgroup(name)

    def _cgroup_record(self, name: str) -> str:
        return os.path.join(self.store.runroot, f"{name}.cgroup")

    def _make_cgroup(self, name: str, memory_mib: int, vcpus: int) -> tuple[str, ...]:
        if os.geteuid() != 0:
            return ()
        from isle.runtime.cgroup import manager
        from isle.runtime.vm.runner import procs_files
        from isle.runtime.vm.spec import QEMU_MEMORY_OVERHEAD_MIB, QEMU_THREADS
        from isle.sys.fs import atomic_write

        cg = manager(None, f"vm-{name}")
        res = {"memory": {"limit": (memory_mib + QEMU_MEMORY_OVERHEAD_MIB) << 20},
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
        return self.store.ls()

    def inspect(self, name: str) -> MachineInfo:
        return self.store.inspect(name)

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
        return TemplateInfo(key=key, image=label.get("image", "?"),
                            memory_mib=int(label.get("memory_mib", 0)),
                            vcpus=int(label.get("vcpus", 0)), net=label.get("net", ""),
                            created=label.get("created", ""), ram_bytes=ram)

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
        """Remove image disks (--from-image) no VM is built on."""
        d = os.path.join(self.store.root, ".disks")
        if not os.path.isdir(d):
            return []
        used = {i.spec.base for i in self.ls()}
        gone = []
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            if n.endswith(".ext4") and p not in used:
                for q in (p, p + ".init"):
                    if os.path.exists(q):
                        os.unlink(q)
                gone.append(n)
        return gone

    def _remove(self, key: str) -> None:
        import shutil

        d = self._tdir()
        shutil.rmtree(os.path.join(d, key), ignore_errors=True)
        for p in (f"/dev/shm/isle-tpl-{key}.ram", os.path.join(d, f"{key}.lock"),
                  os.path.join(d, f"{key}.json")):
            if os.path.exists(p):
                os.unlink(p)
