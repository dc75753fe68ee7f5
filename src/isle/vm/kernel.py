"""Guest kernel: Debian's cloud kernel via `apt-get download`, cached with the modules isle needs.

Cache layout (``<cache>/kernel``):

    current -> 6.1.0-56-cloud-amd64/       the kernel microVMs boot
    6.1.0-56-cloud-amd64/vmlinuz           bzImage (LZ4 in Debian's cloud config)
    6.1.0-56-cloud-amd64/vmlinux           the ELF inside it, booted by PVH entry (no decompression)
    6.1.0-56-cloud-amd64/config            the kernel's .config
    6.1.0-56-cloud-amd64/modules/*.ko      only MODULES (+ OPTIONAL_MODULES) and their dependencies
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from isle.errors import IsleError, VMError
from isle.sys import proc

__all__ = [
    "GuestKernel",
    "MODULES",
    "OPTIONAL_MODULES",
    "ON_DEMAND_MODULES",
    "META_PACKAGE",
    "kernel_dir",
    "find",
    "fetch",
    "module_load_order",
]

META_PACKAGE = "linux-image-cloud-amd64"
#: modules the guest init loads (the cloud config builds them as =m); deps are added automatically
MODULES = ("virtio_mmio", "virtio_blk", "virtio_console", "overlay", "erofs", "virtio_net",
           "virtiofs")
#: modules used when the cache has them (a cache made before they were added still boots):
#: virtio_balloon, whose free-page reporting gives an idle cold-booted guest's free RAM back;
#: virtio_pci, for a pod VM's PCIe slot its share is hot-plugged into (vm.snapshot.restore)
OPTIONAL_MODULES = ("virtio_balloon", "virtio_pci")
#: modules in the initramfs that the guest kernel loads when it asks for them (module autoload:
#: kernel.modprobe is the initramfs's isle-modprobe), never at boot: bridge (brctl addbr /
#: ip link add type bridge in a privileged or CAP_NET_ADMIN container), fetched as the optional
#: ones are
ON_DEMAND_MODULES = ("bridge",)


@dataclass(frozen=True, slots=True)
class GuestKernel:
    version: str
    dir: str

    @property
    def vmlinuz(self) -> str:
        return os.path.join(self.dir, "vmlinuz")

    @property
    def vmlinux(self) -> str:
        return os.path.join(self.dir, "vmlinux")

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "config")

    @property
    def modules_dir(self) -> str:
        return os.path.join(self.dir, "modules")

    @property
    def boot_image(self) -> str:
        """What -kernel gets: the ELF vmlinux (PVH entry, no decompression: ~0.4 s less in TCG)."""
        return self.vmlinux if os.path.exists(self.vmlinux) else self.vmlinuz

    def module(self, name: str) -> str:
        return os.path.join(self.modules_dir, f"{name}.ko")


#: where scripts/fetch-guest-kernel puts the kernel for every user of the host
SYSTEM_CACHE = "/var/cache/isle"


def kernel_dir(cache: str | None = None) -> str:
    if cache is None:
        from isle.config import default_settings

        cache = default_settings().cache
    return os.path.join(cache, "kernel")


def find(cache: str | None = None) -> GuestKernel:
    """The cached kernel, or VMError saying how to get one."""
    cur = os.path.join(kernel_dir(cache), "current")
    system = os.path.join(SYSTEM_CACHE, "kernel", "current")
    if os.geteuid() != 0 and not os.path.isfile(os.path.join(cur, "vmlinuz")) and os.access(
            os.path.join(system, "vmlinuz"), os.R_OK):
        cur = system  # a user's own cache is empty: the kernel setup fetched for everyone
    if not os.path.isfile(os.path.join(cur, "vmlinuz")):
        raise VMError(
            f"no guest kernel cached in {kernel_dir(cache)}: run scripts/fetch-guest-kernel"
        )
    real = os.path.realpath(cur)
    return GuestKernel(version=os.path.basename(real), dir=real)


def _modinfo_depends(path: str) -> list[str]:
    with open(path, "rb") as f:
        data = f.read()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    end = data.index(b"\0", i + 1)
    deps = data[i + 9 : end].decode()
    return [d for d in deps.split(",") if d]


def module_load_order(modules_dir: str, wanted: tuple[str, ...] = MODULES,
                      optional: tuple[str, ...] = OPTIONAL_MODULES) -> list[str]:
    """Names of wanted modules (and of the optional ones modules_dir has) and their deps,
    dependencies first (what insmod needs)."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in stack:
            raise VMError(f"module dependency cycle: {' -> '.join(stack + (name,))}")
        path = os.path.join(modules_dir, f"{name}.ko")
        if not os.path.exists(path):
            raise VMError(f"guest kernel module {name} missing from {modules_dir}")
        for dep in _modinfo_depends(path):
            visit(dep.replace("-", "_"), stack + (name,))
        order.append(name)

    for m in wanted:
        visit(m, ())
    for m in optional:
        if os.path.exists(os.path.join(modules_dir, f"{m}.ko")):
            visit(m, ())
    return order


def _resolve_package() -> str:
    for attempt in (1, 2):
        out = proc.run(
            ["apt-cache", "depends", META_PACKAGE], timeout=60, check=False
        ).stdout.decode()
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends:") and "linux-image-" in line:
                return line.split(":", 1)[1].strip()
        if attempt == 1:  # a fresh machine may have no package lists yet
            proc.run(["apt-get", "update", "-qq"], timeout=600, check=False)
    raise VMError(f"apt-cache knows no kernel behind {META_PACKAGE} even after apt-get update")


#: what a whole OS booted from an image needs besides MODULES: the ACPI power button (logind
#: powers off on it), loaded by the initramfs from the image disk's /lib/modules/<ver>/isle/
OS_MODULES = ("button", "evdev")


def os_modules(k: GuestKernel) -> str:
    """A directory with OS_MODULES' .ko files for k, taken once from k's own Debian package."""
    d = os.path.join(k.dir, "os-modules")
    if all(os.path.exists(os.path.join(d, f"{m}.ko")) for m in OS_MODULES):
        return d
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.realpath(k.dir)),
                                     prefix=".fetch-") as tmp:
        proc.run(["apt-get", "download", "-q", f"linux-image-{k.version}"], cwd=tmp, timeout=600)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if not debs:
            raise VMError(f"apt-get download linux-image-{k.version} produced no .deb")
        x = os.path.join(tmp, "x")
        proc.run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), x], timeout=300)
        stage = os.path.join(tmp, "os-modules")
        os.makedirs(stage)
        for root, _, files in os.walk(os.path.join(x, "lib", "modules")):
            for f in files:
                if f.endswith(".ko") and f[:-3].replace("-", "_") in OS_MODULES:
                    shutil.copy(os.path.join(root, f), os.path.join(stage, f))
        missing = [m for m in OS_MODULES if not os.path.exists(os.path.join(stage, f"{m}.ko"))]
        if missing:
            raise VMError(f"linux-image-{k.version} has no module {missing[0]}")
        shutil.rmtree(d, ignore_errors=True)
        os.rename(stage, d)
    return d


def _extract_vmlinux(vmlinuz: str, out: str) -> bool:
    """Pull the ELF vmlinux out of an LZ4 bzImage (extract-vmlinux's idea); False if not LZ4."""
    with open(vmlinuz, "rb") as f:
        data = f.read()
    i = data.find(b"\x02\x21\x4c\x18")  # legacy LZ4 frame magic
    if i < 0:
        return False
    r = proc.run(["lz4", "-dc"], input=data[i:], timeout=120, check=False)
    if not r.stdout.startswith(b"\x7fELF"):
        return False
    with open(out, "wb") as f:
        f.write(r.stdout)
    return True


def fetch(cache: str | None = None, *, package: str | None = None) -> GuestKernel:
    """Download (once) and unpack Debian's cloud kernel into the cache; idempotent."""
    try:
        k = find(cache)
        module_load_order(k.modules_dir)  # a cache made when MODULES was shorter is refetched
    except VMError:
        pass
    else:  # a kernel that boots: an optional module it cannot get is no reason to fail
        _add_optional(k, package)
        return k
    base = kernel_dir(cache)
    os.makedirs(base, exist_ok=True)
    package = package or _resolve_package()
    version = package.removeprefix("linux-image-")
    with tempfile.TemporaryDirectory(dir=base, prefix=".fetch-") as tmp:
        proc.run(["apt-get", "download", "-q", package], cwd=tmp, timeout=600)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if not debs:
            raise VMError(f"apt-get download {package} produced no .deb")
        x = os.path.join(tmp, "x")
        proc.run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), x], timeout=300)
        stage = os.path.join(tmp, version)
        os.makedirs(os.path.join(stage, "modules"))
        shutil.copy(os.path.join(x, "boot", f"vmlinuz-{version}"), os.path.join(stage, "vmlinuz"))
        shutil.copy(os.path.join(x, "boot", f"config-{version}"), os.path.join(stage, "config"))
        kos = _kos(os.path.join(x, "lib", "modules", version, "kernel"))
        tmpmods = os.path.join(tmp, "allmods")
        os.makedirs(tmpmods)
        for name, path in kos.items():
            os.symlink(path, os.path.join(tmpmods, f"{name}.ko"))
        for name in module_load_order(tmpmods, optional=OPTIONAL_MODULES + ON_DEMAND_MODULES):
            shutil.copy(kos[name], os.path.join(stage, "modules", f"{name}.ko"))
        _extract_vmlinux(os.path.join(stage, "vmlinuz"), os.path.join(stage, "vmlinux"))
        final = os.path.join(base, version)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(stage, final)
    link = os.path.join(base, f".current.{os.getpid()}")
    os.symlink(version, link)
    os.replace(link, os.path.join(base, "current"))
    return find(cache)


def _add_optional(k: GuestKernel, package: str | None) -> None:
    """Copy OPTIONAL_MODULES and ON_DEMAND_MODULES (and deps) a cache made before they were added
    lacks from k's own package, once (a marker remembers the attempt: an older kernel may not
    build them). A
    failure to get them (the package gone from the mirror, no network) is only warned about,
    naming the modules, and tried again on the next fetch: the guest boots without them."""
    extra = OPTIONAL_MODULES + ON_DEMAND_MODULES
    marker = os.path.join(k.dir, ".optional-" + "-".join(extra))
    missing = [m for m in extra if not os.path.exists(k.module(m))]
    if os.path.exists(marker) or not missing:
        return
    if package is None or package.removeprefix("linux-image-") != k.version:
        package = f"linux-image-{k.version}"  # the cached kernel's own, not another version's
    try:
        _copy_optional(k, package)
    except (IsleError, OSError) as exc:
        import sys

        print(f"isle: guest kernel {k.version}: optional module(s) {', '.join(missing)} not "
              f"added ({exc}); guests boot without them", file=sys.stderr)
        return
    with open(marker, "w"):
        pass


def _copy_optional(k: GuestKernel, package: str) -> None:
    with tempfile.TemporaryDirectory(dir=os.path.dirname(k.dir), prefix=".fetch-") as tmp:
        proc.run(["apt-get", "download", "-q", package], cwd=tmp, timeout=600)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if not debs:
            raise VMError(f"apt-get download {package} produced no .deb")
        x = os.path.join(tmp, "x")
        proc.run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), x], timeout=300)
        kos = _kos(os.path.join(x, "lib", "modules", k.version, "kernel"))
        links = os.path.join(tmp, "allmods")
        os.makedirs(links)
        for name, path in kos.items():
            os.symlink(path, os.path.join(links, f"{name}.ko"))
        for name in module_load_order(links, optional=OPTIONAL_MODULES + ON_DEMAND_MODULES):
            if not os.path.exists(k.module(name)):  # beside, then renamed: never a partial .ko
                shutil.copy(kos[name], k.module(name) + ".tmp")
                os.rename(k.module(name) + ".tmp", k.module(name))


def _kos(tree: str) -> dict[str, str]:
    """{module name: path} of the .ko files under a kernel package's module tree."""
    kos: dict[str, str] = {}
    for root, _, files in os.walk(tree):
        for f in files:
            if f.endswith(".ko"):
                kos[f[:-3].replace("-", "_")] = os.path.join(root, f)
    return kos


def _main() -> int:
    import sys

    cache = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        k = fetch(cache)
        from isle.vm import initramfs  # build the guest helper and initramfs now, not on first boot

        initramfs.build(k, os.path.dirname(kernel_dir(cache)))
    except (VMError, OSError) as exc:
        print(f"fetch-guest-kernel: {exc}", file=sys.stderr)
        return 1
    print(f"guest kernel {k.version} in {k.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
