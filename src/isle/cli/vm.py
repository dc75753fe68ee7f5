"""`isle vm create/start/stop/rm/ls/inspect/console` and `isle vm template create/ls/rm`."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from typing import Any

import click

__all__ = ["register", "relay_console"]

DETACH = b"\x1d"  # Ctrl-]


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def _mib(flag: str, value: str) -> int:
    from isle.engine.options import parse_bytes

    n = parse_bytes(flag, value if value[-1:].isalpha() else value + "m")
    return max(1, n >> 20)


def _vms(ctx: click.Context) -> Any:
    from isle.engine.vms import VMs

    return VMs(ctx.obj.settings)


def relay_console(path: str, in_fd: int | None, out_fd: int, timeout: float = 0,
                  replay: str = "") -> None:
    """Bytes both ways between a console socket and in_fd/out_fd; ends on Ctrl-], stdin EOF,
    the console closing, or after timeout seconds (0: no limit). A tty stdin is put in raw mode.

    replay: the console's log file; what the guest wrote before we connected is printed first.
    """
    try:
        seen = os.path.getsize(replay) if replay else 0
    except OSError:
        seen = 0
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    if seen:
        with open(replay, "rb") as f:
            os.write(out_fd, f.read(seen))
    old = None
    if in_fd is not None and os.isatty(in_fd):
        import termios
        import tty

        old = termios.tcgetattr(in_fd)
        tty.setraw(in_fd)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            fds: list[Any] = [s] + ([in_fd] if in_fd is not None else [])
            ready, _, _ = select.select(fds, [], [], wait)
            if s in ready:
                data = s.recv(65536)
                if not data:
                    return
                os.write(out_fd, data)
            if in_fd is not None and in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    return
                if DETACH in data:
                    s.sendall(data.split(DETACH, 1)[0])
                    return
                s.sendall(data)
    finally:
        if old is not None:
            import termios

            termios.tcsetattr(in_fd, termios.TCSADRAIN, old)  # type: ignore[arg-type]
        s.close()


def _row(i: Any) -> list[str]:
    return [i.spec.name, i.status, str(i.spec.vcpus), f"{i.spec.memory_mib}MiB", i.spec.firmware,
            i.spec.base]


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        _out("   ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)).rstrip())


def register(cli: click.Group) -> None:
    @click.group("vm")
    def vm() -> None:
        """Whole-OS virtual machines (q35 + firmware) and microVM templates."""

    @vm.command("create")
    @click.argument("name")
    @click.option("--disk", default="", help="A raw or qcow2 boot disk (never written: a qcow2 "
                  "overlay takes the writes).")
    @click.option("--from-image", "image", default="", help="Boot an isle image as a whole OS "
                  "(guest kernel + the image's own init).")
    @click.option("-m", "--memory", default="512M", show_default=True, help="Guest RAM.")
    @click.option("--cpus", default=1, type=int, show_default=True, help="vCPUs.")
    @click.option("--firmware", default="bios", type=click.Choice(["bios", "uefi"]),
                  show_default=True, help="SeaBIOS or OVMF (UEFI) for --disk.")
    @click.option("--network", default="", help="none, user (QEMU's user network; the default "
                  "for OS images, which get an SSH port forward) or an isle network's name "
                  "(OS images: a lease and a DNS name containers resolve)")
    @click.option("--ip", default="", help="The VM's address on its isle network.")
    @click.option("--user", default="", help="OS images: the login user cloud-init makes "
                  "(default isle; sudo without password)")
    @click.option("--ssh-key", default="", help="OS images: a public key (file or text) for the "
                  "user, besides the key pair isle keeps in the VM's directory")
    @click.option("--hostname", default="", help="OS images: the guest's host name (default: NAME)")
    @click.option("--password", default="", help="OS images: the user's console password "
                  "(default: generated, shown by `isle vm password NAME`)")
    @click.option("--cloud-init", "cloud_init", default="", type=click.Path(dir_okay=False),
                  help="OS images: your own user-data (#cloud-config, a script...), run besides "
                  "isle's")
    @click.option("-p", "--publish", multiple=True, help="[ip:]hostport:guestport[/proto] "
                  "(user network)")
    @click.pass_context
    def create(ctx: click.Context, name: str, disk: str, image: str, memory: str, cpus: int,
               firmware: str, network: str, user: str, ssh_key: str, hostname: str,
               password: str, cloud_init: str, publish: tuple[str, ...], ip: str) -> int:
        """Create a VM from a disk (or from an image)."""
        from isle.errors import ConfigError

        if bool(disk) == bool(image):
            raise ConfigError("--disk", "a VM needs one boot disk: --disk PATH or --from-image REF")
        if network not in ("", "none", "user") and not image:
            raise ConfigError("--network", f"{network!r} is not none or user (isle networks "
                              "need an OS image: --from-image)")
        if image:
            user_data = ""
            if cloud_init:
                try:
                    with open(cloud_init, errors="replace") as f:
                        user_data = f.read()
                except OSError as exc:
                    raise ConfigError("--cloud-init", f"{cloud_init}: {exc.strerror}") from None
            vms = _vms(ctx)
            if not network:
                network = "user" if vms._os_image(image) is not None else "none"
            info = vms.create_from_image(name, image, memory_mib=_mib("--memory", memory),
                                         vcpus=cpus, network=network, user=user,
                                         ssh_key=ssh_key, hostname=hostname,
                                         user_data=user_data, password=password,
                                         ports=list(publish), ip=ip)
        else:
            if user or ssh_key or hostname or password or cloud_init:
                raise ConfigError("--user", "provisioning (--user, --ssh-key, --hostname, "
                                  "--password, --cloud-init) needs an OS image (--from-image)")
            info = _vms(ctx).create(name, disk=disk, memory_mib=_mib("--memory", memory),
                                    vcpus=cpus, firmware=firmware, network=network or "none",
                                    ports=list(publish))
        _out(info.spec.name)
        return 0

    @vm.command("start")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_context
    def start(ctx: click.Context, names: tuple[str, ...]) -> int:
        """Boot VMs."""
        for n in names:
            _out(_vms(ctx).start(n).spec.name)
        return 0

    @vm.command("stop")
    @click.argument("names", nargs=-1, required=True)
    @click.option("-t", "--time", "timeout", default=30, type=int, show_default=True,
                  help="Seconds to wait after the ACPI power button before quitting QEMU.")
    @click.pass_context
    def stop(ctx: click.Context, names: tuple[str, ...], timeout: int) -> int:
        """Power VMs off (ACPI power button, then quit after the timeout)."""
        for n in names:
            _out(_vms(ctx).stop(n, timeout=timeout).spec.name)
        return 0

    @vm.command("rm")
    @click.argument("names", nargs=-1, required=True)
    @click.option("-f", "--force", is_flag=True, help="Stop running VMs first.")
    @click.pass_context
    def rm(ctx: click.Context, names: tuple[str, ...], force: bool) -> int:
        """Remove VMs and their disks (the base disk is kept)."""
        for n in names:
            _vms(ctx).rm(n, force=force)
            _out(n)
        return 0

    @vm.command("ls")
    @click.option("-q", "--quiet", is_flag=True, help="Names only.")
    @click.option("--format", "fmt", default="", help="json")
    @click.pass_context
    def ls(ctx: click.Context, quiet: bool, fmt: str) -> int:
        """List VMs."""
        infos = _vms(ctx).ls()
        if fmt == "json":
            _out(json.dumps([i.to_dict() for i in infos]))
        elif quiet:
            for i in infos:
                _out(i.spec.name)
        else:
            _table([["NAME", "STATUS", "CPUS", "MEMORY", "FIRMWARE", "DISK"]]
                   + [_row(i) for i in infos])
        return 0

    @vm.command("inspect")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_context
    def inspect(ctx: click.Context, names: tuple[str, ...]) -> int:
        """VMs as JSON."""
        vms = _vms(ctx)
        _out(json.dumps([{**vms.inspect(n).to_dict(), "networks": vms.network_info(n)}
                         for n in names], indent=2))
        return 0

    @vm.command("console")
    @click.argument("name")
    @click.option("--no-stdin", is_flag=True, help="Only print the console stream.")
    @click.option("--timeout", default=0.0, type=float, help="Detach after SECONDS (0: never).")
    @click.pass_context
    def console(ctx: click.Context, name: str, no_stdin: bool, timeout: float) -> int:
        """Attach to a VM's serial console (detach with Ctrl-] or by closing stdin)."""
        path = _vms(ctx).console(name)
        if not no_stdin and os.isatty(0):
            sys.stderr.write(f"Connected to {name} (detach: Ctrl-])\r\n")
        relay_console(path, None if no_stdin else 0, 1, timeout,
                      replay=os.path.join(os.path.dirname(path), "console.log"))
        return 0

    @vm.command("exec", context_settings={"ignore_unknown_options": True})
    @click.argument("name")
    @click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
    @click.option("-i", "--interactive", is_flag=True, help="Pass stdin to the command.")
    @click.option("--wait", default=0.0, type=float, help="Wait up to SECONDS for the guest "
                  "agent (a booting VM).")
    @click.option("--timeout", default=0.0, type=float, help="Give up after SECONDS (0: never).")
    @click.pass_context
    def exec_(ctx: click.Context, name: str, cmd: tuple[str, ...], interactive: bool,
              wait: float, timeout: float) -> None:
        """Run CMD in a whole-OS VM through qemu-guest-agent; its exit code is ours."""
        stdin = sys.stdin.buffer.read() if interactive else b""
        code, out, err = _vms(ctx).agent_exec(name, list(cmd), stdin=stdin, timeout=timeout,
                                              wait=wait)
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
        sys.stderr.buffer.write(err)
        sys.stderr.flush()
        ctx.exit(code)

    @vm.command("ssh", context_settings={"ignore_unknown_options": True})
    @click.argument("name")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def ssh(ctx: click.Context, name: str, args: tuple[str, ...]) -> None:
        """ssh to the VM's provisioned user with the key pair isle made for it."""
        argv = _vms(ctx).ssh_argv(name, list(args))
        sys.stdout.flush()
        os.execvp(argv[0], argv)

    @vm.command("export")
    @click.argument("name")
    @click.option("-o", "--output", required=True, help="The file to write.")
    @click.option("--format", "fmt", default="qcow2", show_default=True,
                  type=click.Choice(["qcow2", "raw", "vmdk", "vdi", "vhdx", "ova"]),
                  help="Disk format (vmdk: VMware, vdi: VirtualBox, vhdx: Hyper-V) or an OVA.")
    @click.pass_context
    def export(ctx: click.Context, name: str, output: str, fmt: str) -> int:
        """Write a stopped VM's disk (its base and its writes, flattened) to a file."""
        _out(_vms(ctx).export(name, output, fmt))
        return 0

    @vm.command("import")
    @click.argument("path")
    @click.option("--name", default="", help="The VM's name (default: the OVA's or the file's).")
    @click.option("-m", "--memory", default="", help="Memory (default: the OVA's, else 768M).")
    @click.option("--cpus", default=0, type=int, help="vCPUs (default: the OVA's, else 1).")
    @click.option("--firmware", default="bios", type=click.Choice(["bios", "uefi"]),
                  show_default=True, help="For disks that boot through firmware.")
    @click.option("--network", default="", help="none, user or an isle network.")
    @click.option("--user", default="", help="An isle OS disk: the user cloud-init provisions.")
    @click.option("--ssh-key", default="", help="An isle OS disk: a public key for the user.")
    @click.pass_context
    def import_(ctx: click.Context, path: str, name: str, memory: str, cpus: int, firmware: str,
                network: str, user: str, ssh_key: str) -> int:
        """Make a VM from a disk (qcow2, raw, vmdk, vdi, vhdx) or an OVA; print its name."""
        info = _vms(ctx).import_(path, name, memory_mib=_mib("--memory", memory) if memory
                                 else 0, vcpus=cpus, firmware=firmware, network=network,
                                 user=user, ssh_key=ssh_key)
        _out(info.spec.name)
        return 0

    @vm.group("snapshot")
    def snapshot() -> None:
        """Snapshots of a VM's disk (and, while it runs, its RAM and devices)."""

    @snapshot.command("create")
    @click.argument("name")
    @click.argument("tag")
    @click.pass_context
    def snap_create(ctx: click.Context, name: str, tag: str) -> int:
        """Snapshot VM NAME as TAG (a running VM pauses while its RAM is written)."""
        _vms(ctx).store.snapshot_create(name, tag)
        _out(tag)
        return 0

    @snapshot.command("restore")
    @click.argument("name")
    @click.argument("tag")
    @click.pass_context
    def snap_restore(ctx: click.Context, name: str, tag: str) -> int:
        """Go back to snapshot TAG (a running VM continues from the saved moment)."""
        _vms(ctx).store.snapshot_restore(name, tag)
        _out(tag)
        return 0

    @snapshot.command("rm")
    @click.argument("name")
    @click.argument("tags", nargs=-1, required=True)
    @click.pass_context
    def snap_rm(ctx: click.Context, name: str, tags: tuple[str, ...]) -> int:
        """Delete snapshots."""
        for t in tags:
            _vms(ctx).store.snapshot_rm(name, t)
            _out(t)
        return 0

    @snapshot.command("ls")
    @click.argument("name")
    @click.option("--format", "fmt", default="", help="json")
    @click.pass_context
    def snap_ls(ctx: click.Context, name: str, fmt: str) -> int:
        """List a VM's snapshots."""
        snaps = _vms(ctx).store.snapshots(name)
        if fmt == "json":
            _out(json.dumps(snaps))
            return 0
        _table([["TAG", "VM SIZE", "DATE"]] + [[x["name"], x["vm_size"], x["date"]]
                                                for x in snaps])
        return 0

    @vm.command("migrate")
    @click.argument("name")
    @click.option("--to", "to_root", required=True, help="The isle root (--root) to move to.")
    @click.option("--to-runroot", default="", help="That root's --runroot (default: "
                  "/run/isle-<hash of ROOT>).")
    @click.option("--timeout", default=600.0, type=float, show_default=True,
                  help="Give up after SECONDS.")
    @click.pass_context
    def migrate(ctx: click.Context, name: str, to_root: str, to_runroot: str,
                timeout: float) -> int:
        """Live-migrate a running VM to another isle root on this host (its RAM over a socket
        between the two QEMUs; disk and network attachment stay: TCP connections survive; on
        QEMU's user network the published and SSH ports follow, their connections do not)."""
        import hashlib

        to_runroot = to_runroot or "/run/isle-" + hashlib.sha256(
            os.path.abspath(to_root).encode()).hexdigest()[:8]
        r = _vms(ctx).migrate(name, to_root, to_runroot, timeout=timeout)
        for why in r.get("forwards_lost") or ():
            sys.stderr.write(f"warning: a port forward did not follow {name}: {why}\n")
        sys.stderr.write(f"migrated {name} to {r['to']}: downtime {r['downtime_ms']} ms, "
                         f"total {r['total_ms']} ms\n")
        _out(name)
        return 0

    @vm.command("push")
    @click.argument("name")
    @click.argument("ref")
    @click.option("--tls-verify/--no-tls-verify", default=True, show_default=True,
                  help="Require HTTPS with a verified certificate.")
    @click.option("--artifact", is_flag=True, help="Push an OCI artifact (oras's layout: the "
                  "qcow2 file as its one layer) instead of a containerDisk image.")
    @click.pass_context
    def push(ctx: click.Context, name: str, ref: str, tls_verify: bool, artifact: bool) -> int:
        """Push a stopped VM's disk to a registry (an OCI image with /disk/disk.qcow2, as
        KubeVirt's containerDisk, or an OCI artifact); print the manifest digest."""
        _out(_vms(ctx).push(name, ref, tls_verify=tls_verify, artifact=artifact))
        return 0

    @vm.command("pull")
    @click.argument("ref")
    @click.option("--name", default="", help="The VM's name (default: the repository's).")
    @click.option("--tls-verify/--no-tls-verify", default=True, show_default=True,
                  help="Require HTTPS with a verified certificate.")
    @click.option("--network", default="", help="none, user or an isle network.")
    @click.option("--user", default="", help="An isle OS disk: the user cloud-init provisions.")
    @click.pass_context
    def pull(ctx: click.Context, ref: str, name: str, tls_verify: bool, network: str,
             user: str) -> int:
        """Make a VM from a disk in a registry (isle vm push's, a containerDisk image, or an OCI
        artifact holding the disk file, as `oras push` makes)."""
        _out(_vms(ctx).pull(ref, name, tls_verify=tls_verify, network=network,
                            user=user).spec.name)
        return 0

    @vm.command("password")
    @click.argument("name")
    @click.pass_context
    def password_(ctx: click.Context, name: str) -> int:
        """The provisioned user's console password."""
        vms = _vms(ctx)
        vms.inspect(name)
        try:
            with open(os.path.join(vms.store._dir(name), "password")) as f:
                _out(f.read().strip())
        except FileNotFoundError:
            from isle.errors import NotFound

            raise NotFound(f"VM {name} was not provisioned: it has no password") from None
        return 0

    @vm.group("template")
    def template() -> None:
        """microVM templates, one per (image, kernel, size): `run --isolation vm` uses them."""

    @template.command("create")
    @click.argument("image")
    @click.option("-m", "--memory", default="128M", show_default=True, help="Guest RAM.")
    @click.option("--cpus", default=1, type=int, show_default=True, help="vCPUs.")
    @click.option("--network", default="", help="As `run --network`: a template serves runs whose "
                  "network kind (none, tap, user) matches.")
    @click.pass_context
    def tcreate(ctx: click.Context, image: str, memory: str, cpus: int, network: str) -> int:
        """Boot IMAGE in a microVM once and save it as a template."""
        t = _vms(ctx).template_create(ctx.obj.engine, image, memory_mib=_mib("--memory", memory),
                                      vcpus=cpus, network=network)
        _out(t.key)
        return 0

    @template.command("ls")
    @click.option("--format", "fmt", default="", help="json")
    @click.pass_context
    def tls(ctx: click.Context, fmt: str) -> int:
        """List templates."""
        ts = _vms(ctx).templates()
        if fmt == "json":
            _out(json.dumps([t.to_dict() for t in ts]))
            return 0
        _table([["KEY", "IMAGE", "MEMORY", "CPUS", "NET", "RAM", "CREATED"]]
               + [[t.key, t.image, f"{t.memory_mib}MiB", str(t.vcpus), t.net or "none",
                   f"{t.ram_bytes >> 20}MiB", t.created] for t in ts])
        return 0

    @template.command("rm")
    @click.argument("refs", nargs=-1, required=True)
    @click.pass_context
    def trm(ctx: click.Context, refs: tuple[str, ...]) -> int:
        """Remove templates (by key, key prefix or image) and their RAM files."""
        for r in refs:
            for k in _vms(ctx).template_rm(r):
                _out(k)
        return 0

    cli.add_command(vm)
