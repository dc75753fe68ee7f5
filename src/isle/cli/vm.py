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
        _out("   ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())


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
    @click.option("-m", "--memory", default="512M", show_default=True)
    @click.option("--cpus", default=1, type=int, show_default=True)
    @click.option("--firmware", default="bios", type=click.Choice(["bios", "uefi"]),
                  show_default=True)
    @click.option("--network", default="none", type=click.Choice(["none", "user"]),
                  show_default=True)
    @click.pass_context
    def create(ctx: click.Context, name: str, disk: str, image: str, memory: str, cpus: int,
               firmware: str, network: str) -> int:
        """Create a VM from a disk (or from an image)."""
        from isle.errors import ConfigError

        if bool(disk) == bool(image):
            raise ConfigError("--disk", "a VM needs one boot disk: --disk PATH or --from-image REF")
        if image:
            info = _vms(ctx).create_from_image(name, image, memory_mib=_mib("--memory", memory),
                                               vcpus=cpus, network=network)
        else:
            info = _vms(ctx).create(name, disk=disk, memory_mib=_mib("--memory", memory),
                                    vcpus=cpus, firmware=firmware, network=network)
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
    @click.option("-q", "--quiet", is_flag=True)
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
        _out(json.dumps([_vms(ctx).inspect(n).to_dict() for n in names], indent=2))
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

    @vm.group("template")
    def template() -> None:
        """microVM templates, one per (image, kernel, size): `run --isolation vm` uses them."""

    @template.command("create")
    @click.argument("image")
    @click.option("-m", "--memory", default="128M", show_default=True)
    @click.option("--cpus", default=1, type=int, show_default=True)
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
