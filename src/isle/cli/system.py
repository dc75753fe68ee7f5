"""`isle info`, `isle version`, `isle system df/prune/info`, and `isle demo`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from isle.cli.tables import human_size

__all__ = ["register"]


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


_INFO_LABELS = {"Containers": "Containers", "Images": "Images", "Volumes": "Volumes",
                "NCPU": "CPUs", "MemTotal": "Total Memory", "KernelVersion": "Kernel Version",
                "OperatingSystem": "Operating System", "CgroupDriver": "Cgroup Driver",
                "CgroupVersion": "Cgroup Version", "DefaultRuntime": "Default Runtime",
                "RuntimePath": "Default Runtime Path", "Root": "Isle Root Dir",
                "RunRoot": "Isle Run Dir", "VMAccelerator": "VM Accelerator",
                "IsolationNotes": "Isolation Notes",
                "IsolationUnavailable": "Isolation Unavailable", "VM": "VM",
                "ServerVersion": "Server Version", "OSType": "OSType", "accel": "Accelerator",
                "accel_reason": "Accelerator reason", "qemu": "QEMU",
                "guest_kernel": "Guest kernel", "templates": "Templates", "version": "Version",
                "image": "Image"}


def _label(k: str) -> str:
    import re

    if k in _INFO_LABELS:
        return _INFO_LABELS[k]
    if k.islower():  # data (an isolation level, a runtime name), not a field name
        return k
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", k)


def _plain(v: Any) -> str:
    """A scalar or a list of scalars as text: never a Python repr."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v) if v else "(none)"
    return str(v)


def _tree(d: dict[str, Any], indent: int, skip: frozenset[str] = frozenset()) -> list[str]:
    """Docker's `info` layout: `Key: value`, a nested map as its own indented block."""
    out = []
    pad = " " * indent
    for k, v in d.items():
        if k in skip:
            continue
        if isinstance(v, dict):
            if not v:
                out.append(f"{pad}{_label(k)}: (none)")
                continue
            out.append(f"{pad}{_label(k)}:")
            out += _tree(v, indent + 1)
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], dict):
            out.append(f"{pad}{_label(k)}:")
            for x in v:
                out += _tree(x, indent + 1)
        else:
            out.append(f"{pad}{_label(k)}: {_plain(v)}")
    return out


def _info_dict(ctx: click.Context) -> dict[str, Any]:
    import platform

    from isle.engine.versions import components

    d: dict[str, Any] = dict(ctx.obj.engine.info())
    # Docker's names for what isle has too (templates written for `docker info` work)
    d.setdefault("ServerVersion", _isle_version())
    d.setdefault("Driver", "overlay2")  # as the API's /info says
    d.setdefault("OSType", "linux")
    d.setdefault("Architecture", platform.machine())
    d.setdefault("Name", platform.node())
    d.setdefault("DockerRootDir", d.get("Root", ""))
    d["Components"] = components(str(d.get("RuntimePath") or ""))
    d.setdefault("Runtimes", {c["Name"]: {"path": c["Details"]["Path"]} for c in d["Components"]
                              if c["Name"] in ("isle-runtime", "runc", "crun", "runsc")
                              and c["Details"].get("Path")})
    return d


def _hi(n: float) -> str:
    return human_size(n, binary=True)


@click.command("info")
@click.option("-f", "--format", "fmt", default="",
              help="json, or a Go template (e.g. '{{.NCPU}}', '{{json .Isolation}}').")
@click.pass_context
def info(ctx: click.Context, fmt: str) -> int:
    """Facts about this host and isle's state: containers, images, isolation levels, runtimes,
    the programs isle drives and their versions."""
    from isle.cli.templates import format_one

    d = _info_dict(ctx)
    if fmt:
        _out(format_one(fmt, d))
        return 0
    _out("Client:")
    _out(f" Version: {_isle_version()}")
    _out(" Context: default")
    _out("")
    _out("Server:")
    _out(f" Containers: {d.get('Containers', 0)}")
    for k, label in (("ContainersRunning", "Running"), ("ContainersPaused", "Paused"),
                     ("ContainersStopped", "Stopped")):
        if k in d:
            _out(f"  {label}: {d[k]}")
    skip = frozenset({"Containers", "ContainersRunning", "ContainersPaused",
                      "ContainersStopped", "Components", "DockerRootDir", "Runtimes"})
    if isinstance(d.get("MemTotal"), int):  # bytes in templates and JSON, as Docker's
        d = {**d, "MemTotal": _hi(d["MemTotal"])}
    for line in _tree(d, 1, skip):
        _out(line)
    _out(" Runtimes: " + " ".join(d.get("Runtimes") or {}))
    _out(" Components:")
    for c in d["Components"]:
        path = c.get("Details", {}).get("Path", "")
        _out(f"  {c['Name']}: {c['Version']}" + (f" ({path})" if path else ""))
    return 0


def _isle_version() -> str:
    from isle.engine.versions import isle_version

    return isle_version()


def _version_dict() -> dict[str, Any]:
    import platform

    from isle.api.server import API_VERSION, MIN_API_VERSION
    from isle.engine.versions import components

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    me = _isle_version()
    comps = components()
    return {
        "Client": {"Version": me, "ApiVersion": API_VERSION, "PythonVersion":
                   platform.python_version(), "Os": "linux", "Arch": arch},
        "Server": {"Version": me, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                   "Os": "linux", "Arch": arch, "KernelVersion": os.uname().release,
                   "PythonVersion": platform.python_version(), "Components": comps},
    }


@click.command("version")
@click.option("-f", "--format", "fmt", default="",
              help="json, or a Go template (e.g. '{{.Server.Version}}', "
                   "'{{range .Server.Components}}{{.Name}} {{.Version}}{{println}}{{end}}').")
def version(fmt: str) -> int:
    """isle's version and the versions of what it drives (conmon, runc, crun, runsc, QEMU,
    netavark, aardvark-dns)."""
    from isle.cli.templates import format_one

    d = _version_dict()
    if fmt:
        _out(format_one(fmt, d))
        return 0
    c, s = d["Client"], d["Server"]
    rows = [("Client:", None), (" Version:", c["Version"]), (" API version:", c["ApiVersion"]),
            (" Python version:", c["PythonVersion"]), (" OS/Arch:", f"{c['Os']}/{c['Arch']}"),
            ("", None), ("Server:", None)]
    for comp in s["Components"]:
        rows.append((f" {comp['Name']}:", None))
        rows.append(("  Version:", comp["Version"]))
        det = comp.get("Details", {})
        if comp["Name"] == "Engine":
            api = f"{s['ApiVersion']} (minimum version {s['MinAPIVersion']})"
            rows += [("  API version:", api),
                     ("  Python version:", s["PythonVersion"]),
                     ("  OS/Arch:", f"{s['Os']}/{s['Arch']}"),
                     ("  Kernel version:", s["KernelVersion"])]
        for k in ("GitCommit", "Path"):
            if det.get(k):
                rows.append((f"  {k}:", det[k]))
    for label, val in rows:
        _out(label if val is None else f"{label:<19}{val}")
    return 0


@click.command("demo")
@click.pass_context
def demo(ctx: click.Context) -> int:
    """Run busybox through the engine and say what happened."""
    from isle.cli.demo import run_demo

    return run_demo(ctx.obj)

@click.group("system")
def system() -> None:
    """Manage isle itself: disk use, prune, the Docker API service, info."""

@system.command("df")
@click.option("-v", "--verbose", is_flag=True, help="(accepted) per-object detail.")
@click.option("--format", "fmt", default="",
              help="table (default), json, a Go template ({{.Type}} {{.Size}}), or "
                   "'table TEMPLATE'.")
@click.pass_context
def df(ctx: click.Context, verbose: bool, fmt: str) -> int:
    """Disk usage of images, containers and volumes."""
    from isle.cli.templates import format_rows

    rows = ctx.obj.engine.system_df()

    def table() -> None:
        _out(f"{'TYPE':<16}{'TOTAL':<8}{'ACTIVE':<8}{'SIZE':<12}RECLAIMABLE")
        for r in rows:
            _out(f"{r['Type']:<16}{r['Total']:<8}{r['Active']:<8}{_h(r['Size']):<12}"
                 f"{_h(r['Reclaimable'])}")

    shaped = [{**r, "TotalCount": r["Total"], "Size": _h(r["Size"]),  # Docker's field shapes
               "Reclaimable": _h(r["Reclaimable"])} for r in rows]
    format_rows(fmt, shaped, table, {"TotalCount": "TOTAL"})
    return 0

@system.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask (isle never asks).")
@click.option("-a", "--all", "all_", is_flag=True, help="Every unused image, not only dangling.")
@click.option("--volumes", is_flag=True, help="Unused volumes too.")
@click.pass_context
def prune(ctx: click.Context, force: bool, all_: bool, volumes: bool) -> int:
    """Remove stopped containers, unused images (dangling; -a all) and, with --volumes, volumes."""
    rep: dict[str, Any] = ctx.obj.engine.system_prune(all_images=all_, volumes=volumes)
    for k, v in rep.items():
        if v:
            _out(f"Deleted {k}:")
            for x in v:
                _out(x)
    return 0

@system.command("check")
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed: set a corrupt database aside and rebuild the records "
                   "from disk, adopt or remove orphaned containers, drop temporary blobs.")
@click.pass_context
def check(ctx: click.Context, repair: bool) -> int:
    """Check the engine database against what is on disk (exit 1: problems left)."""
    from isle.engine.check import check as run_check
    from isle.engine.check import report_lines

    rep = run_check(ctx.obj.settings, repair=repair)
    for line in report_lines(rep, repair):
        _out(line)
    return 0 if (not rep.findings or repair) else 1

@system.command("service")
@click.option("-H", "--host", "host", default="", metavar="URI",
              help="Where to listen: unix:///PATH (default unix://<runroot>/docker.sock as "
                   "root: /run/isle/docker.sock).")
@click.option("-t", "--time", "idle", type=int, default=5, show_default=True,
              help="Exit after this many idle seconds with no request; 0 serves forever.")
@click.option("--tlsverify", is_flag=True,
              help="Required for a tcp:// host (client certificates); not supported yet.")
@click.option("--debug", is_flag=True, help="Log each request to stderr.")
@click.argument("uri", required=False, default="")
@click.pass_context
def service(ctx: click.Context, host: str, idle: int, tlsverify: bool, debug: bool,
            uri: str) -> int:
    """Serve the Docker Engine API, so docker, docker-py and compose drive isle.

    Point clients at it with DOCKER_HOST=unix:///run/isle/docker.sock. The socket is 0660,
    group `isle` when that group exists (membership is root-equivalent, as Docker's group).
    Under systemd socket activation (LISTEN_FDS) the inherited socket is used."""
    import grp

    from isle.api import service as serve_api
    from isle.errors import ConfigError

    where = uri or host
    s = ctx.obj.settings
    if not where:
        where = "unix://" + os.path.join(s.runroot, "docker.sock")
    if where.startswith("tcp://") or where.startswith("http"):
        raise ConfigError("--host", f"{where}: isle serves the API on a unix socket only; a "
                          "TCP listener needs TLS with client certificates (--tlsverify), "
                          "which this isle does not offer yet")
    if not where.startswith("unix://"):
        raise ConfigError("--host", f"{where}: want unix:///PATH")
    path = where[len("unix://"):]
    listen_fd = None
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        listen_fd = 3
    try:
        gid: int | None = grp.getgrnam("isle").gr_gid
    except KeyError:
        gid = None
    serve_api(s, path, idle_timeout=idle, verbose=debug, group=gid, listen_fd=listen_fd)
    return 0


def register(cli: click.Group) -> None:
    """info, version, demo and the `system` group."""
    system.add_command(info, "info")
    for c in (info, version, demo, system):
        cli.add_command(c)


def _h(n: int) -> str:
    return human_size(n)
