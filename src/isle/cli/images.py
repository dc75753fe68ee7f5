"""Image verbs for the ``isle`` CLI: ``register(group)`` adds them to the main click group.

Settings come from ``ctx.obj`` (a Settings, or an object/dict with ``settings``), else from the
``--root`` of the group. ``python -m isle.cli.images --root R ...`` runs them standalone.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from isle.cli.tables import human_size
from isle.config import Settings
from isle.errors import IsleError

__all__ = ["register", "main"]

TLS = click.option(  # podman's --tls-verify=false reaches click as --no-tls-verify (cli/main.py)
    "--tls-verify/--no-tls-verify",
    default=True,
    show_default=True,
    help="verify TLS certificates (--tls-verify=false: also allow plain HTTP)",
)
AUTHFILE = click.option(
    "--authfile",
    default=None,
    envvar="REGISTRY_AUTH_FILE",
    help="auth.json with registry credentials",
)
CREDS = click.option("--creds", default=None, help="USER:PASSWORD for this registry")
CERT = click.option("--ca-file", default=None, help="a CA bundle to trust for this registry")


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    if isinstance(obj, Settings):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("settings"), Settings):
        s: Settings = obj["settings"]
        return s
    if isinstance(getattr(obj, "settings", None), Settings):
        return obj.settings  # type: ignore[no-any-return]
    root = ctx.find_root().params.get("root")
    return Settings(root=root) if root else Settings()


def _images(ctx: click.Context) -> Any:
    """The Images facade; on the engine's own store (so rmi knows which images are in use)."""
    from isle.engine.images import Images

    obj = ctx.find_root().obj
    imgs = getattr(obj, "images", None)
    if imgs is not None and hasattr(imgs, "pull"):
        return imgs
    store = None
    if hasattr(type(obj), "engine"):
        try:
            store = obj.engine.store  # the engine's store knows which images are in use
        except Exception:  # an engine that cannot start must not take image verbs down
            store = None
    return Images(_settings(ctx), store=store)


def _creds(s: str | None) -> tuple[str, str] | None:
    if not s:
        return None
    u, sep, p = s.partition(":")
    if not sep:
        p = click.prompt("Password", hide_input=True, err=True)
    return u, p


class Progress:
    """A rich bar per layer on stderr when it is a TTY; plain lines otherwise.

    ``verb`` says what moves: "downloading" (pull) or "uploading" (push)."""

    def __init__(self, quiet: bool = False, verb: str = "downloading") -> None:
        self.quiet = quiet
        self.verb = verb
        self.tty = sys.stderr.isatty() and not quiet
        self.tasks: dict[str, Any] = {}
        self.bar: Any = None
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
            )
            self.bar.start()

    def _say(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)

    def start(self, key: str, total: int) -> None:
        if self.bar:
            self.tasks[key] = self.bar.add_task(key[7:19], total=total)
        else:
            self._say(f"{key[7:19]}: {self.verb} {total} bytes")

    def advance(self, key: str, n: int) -> None:
        if self.bar and key in self.tasks:
            self.bar.advance(self.tasks[key], n)

    def done(self, key: str, status: str) -> None:
        if self.bar:
            if key in self.tasks:
                self.bar.update(self.tasks[key], description=f"{key[7:19]} {status}")
            else:
                self.bar.console.print(f"{key[7:19]}: {status}")
        else:
            self._say(f"{key[7:19]}: {status}")

    def message(self, text: str) -> None:
        if text:
            if self.bar:
                self.bar.console.print(text)
            else:
                self._say(text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def _human(n: float) -> str:
    return human_size(n, precision=3)


_IMAGE_HEAD = {"ID": "IMAGE ID", "Id": "IMAGE ID", "CreatedSince": "CREATED",
               "CreatedAt": "CREATED AT", "VirtualSize": "SIZE", "SharedSize": "SHARED SIZE",
               "UniqueSize": "UNIQUE SIZE"}


# -- commands -----------------------------------------------------------------------------------
@click.command("images")
@click.option("-q", "--quiet", is_flag=True, help="only image ids")
@click.option("--digests", is_flag=True, help="show digests")
@click.option("--no-trunc", is_flag=True, help="Full image ids.")
@click.option("-a", "--all", "all_", is_flag=True, help="(accepted) intermediate images too.")
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    help="dangling=true|false, reference=PATTERN, label=K[=V], before=IMG, since=IMG",
)
@click.option("--format", "fmt", default="table",
              help="table (default), json, a Go template ({{.Repository}}:{{.Tag}}), or "
                   "'table TEMPLATE'")
@click.argument("reference", required=False)
@click.pass_context
def images_cmd(
    ctx: click.Context,
    quiet: bool,
    digests: bool,
    no_trunc: bool,
    all_: bool,
    filters: tuple[str, ...],
    fmt: str,
    reference: str | None,
) -> None:
    """List images."""
    from isle.engine.images import list_row, ref_matches

    flt = list(filters) + ([f"reference={reference}"] if reference else [])
    imgs = _images(ctx).list(flt)
    if quiet:
        seen = []
        for i in imgs:
            s = i.id if no_trunc else i.short_id
            if s not in seen:
                seen.append(s)
        click.echo("\n".join(seen)) if seen else None
        return
    rows = [r for i in imgs for r in list_row(i)]
    pats = [f.split("=", 1)[1] for f in flt if f.startswith("reference=")]
    if pats:
        rows = [r for r in rows if r["Name"] and all(ref_matches(r["Name"], p) for p in pats)]
    if fmt not in ("table", ""):
        from isle.cli.templates import format_rows

        for r in rows:  # Docker's shapes: sizes are human strings in rows and templates
            r["Size"] = r["VirtualSize"] = _human(r["Size"])
            r.setdefault("SharedSize", "N/A")
            r.setdefault("UniqueSize", "N/A")
        format_rows(fmt, rows, lambda: None, _IMAGE_HEAD)
        return
    cols = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = [cols]
    for r in rows:
        table.append(
            [r["Repository"], r["Tag"]]
            + ([r["Digest"]] if digests else [])
            + [r["Id"] if no_trunc else r["ID"], r["CreatedSince"], _human(r["Size"])]
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(cols))]
    for row in table:
        click.echo("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@click.command("inspect")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template per image.")
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def inspect_cmd(ctx: click.Context, fmt: str, refs: tuple[str, ...]) -> None:
    """Docker-compatible image JSON."""
    imgs = _images(ctx)
    found = [imgs.inspect(r) for r in refs]
    if fmt:
        from isle.cli.templates import format_one

        for d in found:
            click.echo(format_one(fmt, d))
        return
    click.echo(json.dumps(found, indent=4))


@click.command("history")
@click.option("--no-trunc", is_flag=True, help="Full ids and steps.")
@click.option("-q", "--quiet", is_flag=True, help="Only layer ids.")
@click.option("--format", "fmt", default="table",
              help="table (default), json, a Go template ({{.CreatedBy}}), or 'table TEMPLATE'.")
@click.argument("ref")
@click.pass_context
def history_cmd(ctx: click.Context, no_trunc: bool, quiet: bool, fmt: str, ref: str) -> None:
    """Show the layers and steps that made an image."""
    rows = _images(ctx).history(ref)
    if quiet:
        click.echo("\n".join(r["Id"] for r in rows))
        return
    if fmt not in ("table", ""):
        from isle.cli.templates import format_rows

        for r in rows:  # Docker's template fields beside isle's JSON ones
            short = r["Id"] if no_trunc or r["Id"] == "<missing>" else r["Id"][7:19]
            r.setdefault("ID", short)
            r.setdefault("CreatedAt", r.get("Created", ""))
            if fmt != "json":
                r["Size"] = _human(r["Size"])
        format_rows(fmt, rows, lambda: None, {"ID": "IMAGE", "CreatedBy": "CREATED BY",
                                               "CreatedAt": "CREATED AT"}, strict=False)
        return
    click.echo(f"{'IMAGE':<14}{'CREATED':<28}{'CREATED BY':<50}{'SIZE':<10}COMMENT")
    for r in rows:
        iid = r["Id"] if no_trunc or r["Id"] == "<missing>" else r["Id"][7:19]
        by = (
            r["CreatedBy"]
            if no_trunc
            else (r["CreatedBy"][:45] + "…" if len(r["CreatedBy"]) > 46 else r["CreatedBy"])
        )
        click.echo(f"{iid:<14}{r['Created'][:26]:<28}{by:<50}{_human(r['Size']):<10}{r['Comment']}")


@click.command("tag")
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
def tag_cmd(ctx: click.Context, source: str, targets: tuple[str, ...]) -> None:
    """Give an image another name."""
    imgs = _images(ctx)
    for t in targets:
        imgs.tag(source, t)


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="remove even if containers use it")
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def rmi_cmd(ctx: click.Context, force: bool, refs: tuple[str, ...]) -> None:
    """Remove images (a name untags; the last name or the id removes)."""
    for line in _images(ctx).remove(list(refs), force):
        click.echo(line)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="every image no container uses")
@click.option("-f", "--force", is_flag=True, help="do not ask (always the case)")
@click.pass_context
def prune_cmd(ctx: click.Context, all_: bool, force: bool) -> None:
    """Remove dangling images (and with -a, unused ones)."""
    for i in _images(ctx).prune(all_):
        click.echo(f"Deleted: {i}")


@click.command("df")
@click.pass_context
def df_cmd(ctx: click.Context) -> None:
    """Disk used by images."""
    du = _images(ctx).disk_usage()
    click.echo(
        f"images: {du['images']}  blobs: {_human(du['blobs_bytes'])}  "
        f"layers: {_human(du['layers_bytes'])}"
    )


@click.command("pull")
@click.argument("ref")
@click.option("--platform", default=None, help="os/arch[/variant]")
@click.option("-q", "--quiet", is_flag=True, help="No progress; only the image id.")
@TLS
@AUTHFILE
@CREDS
@CERT
@click.pass_context
def pull_cmd(
    ctx: click.Context,
    ref: str,
    platform: str | None,
    quiet: bool,
    tls_verify: bool,
    authfile: str | None,
    creds: str | None,
    ca_file: str | None,
) -> None:
    """Pull an image from a registry."""
    prog = Progress(quiet)
    try:
        img = _images(ctx).pull(
            ref,
            tls_verify=tls_verify,
            authfile=authfile,
            creds=_creds(creds),
            platform=platform,
            progress=prog,
            ca_file=ca_file,
        )
    finally:
        prog.close()
    click.echo(img.id)


@click.command("push")
@click.argument("source")
@click.argument("dest", required=False)
@click.option("-q", "--quiet", is_flag=True, help="No progress; only the digest.")
@TLS
@AUTHFILE
@CREDS
@CERT
@click.pass_context
def push_cmd(
    ctx: click.Context,
    source: str,
    dest: str | None,
    quiet: bool,
    tls_verify: bool,
    authfile: str | None,
    creds: str | None,
    ca_file: str | None,
) -> None:
    """Push an image to a registry (DEST defaults to SOURCE)."""
    prog = Progress(quiet, verb="uploading")
    try:
        digest = _images(ctx).push(
            source,
            dest,
            tls_verify=tls_verify,
            authfile=authfile,
            creds=_creds(creds),
            progress=prog,
            ca_file=ca_file,
        )
    finally:
        prog.close()
    click.echo(digest)


@click.command("login")
@click.argument("registry")
@click.option("-u", "--username", default=None, help="User name (asked for when missing).")
@click.option("-p", "--password", default=None, help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@TLS
@AUTHFILE
@CERT
@click.pass_context
def login_cmd(
    ctx: click.Context,
    registry: str,
    username: str | None,
    password: str | None,
    password_stdin: bool,
    tls_verify: bool,
    authfile: str | None,
    ca_file: str | None,
) -> None:
    """Log in to a registry; credentials go to auth.json."""
    username = username or click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    password = password or click.prompt("Password", hide_input=True, err=True)
    path = _images(ctx).login(
        registry, username, password, tls_verify=tls_verify, authfile=authfile, ca_file=ca_file
    )
    click.echo(f"Login Succeeded! (credentials in {path})")


@click.command("logout")
@click.argument("registry")
@AUTHFILE
@click.pass_context
def logout_cmd(ctx: click.Context, registry: str, authfile: str | None) -> None:
    """Forget the credentials for a registry."""
    if not _images(ctx).logout(registry, authfile):
        raise click.ClickException(f"not logged in to {registry}")
    click.echo(f"Removed login credentials for {registry}")


@click.command("save")
@click.option("-o", "--output", default=None, help="file (default: stdout)")
@click.option(
    "--format",
    "fmt",
    default="docker-archive",
    type=click.Choice(["docker-archive", "oci-archive", "oci-dir"]),
    help="docker-archive (default, docker load reads it), oci-archive or oci-dir (needs -o DIR).",
)
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def save_cmd(ctx: click.Context, output: str | None, fmt: str, refs: tuple[str, ...]) -> None:
    """Write images to a docker-archive or OCI archive/layout."""
    imgs = _images(ctx)
    if fmt == "oci-dir":
        if not output:
            raise click.UsageError("--format oci-dir needs -o DIR")
        imgs.save(list(refs), output, fmt)
        return
    if output is None:
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write an archive to a terminal; use -o")
        imgs.save(list(refs), sys.stdout.buffer, fmt)
        return
    tmp = output + ".tmp"
    try:
        with open(tmp, "wb") as f:
            imgs.save(list(refs), f, fmt)
        os.rename(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@click.command("load")
@click.option("-i", "--input", "input_", default=None, help="archive file (default: stdin)")
@click.option("-q", "--quiet", is_flag=True, help="Only the loaded image names.")
@click.pass_context
def load_cmd(ctx: click.Context, input_: str | None, quiet: bool) -> None:
    """Load images from a docker-archive, OCI archive or OCI layout directory."""
    loaded = _images(ctx).load(input_ if input_ else sys.stdin.buffer)
    from isle.engine.images import familiar_name

    for img in loaded:
        names = [familiar_name(n) for n in img.names]
        click.echo("Loaded image: " + (", ".join(names) if names else img.id))


@click.command("import")
@click.argument("source")
@click.argument("ref", required=False)
@click.option("-c", "--change", "changes", multiple=True, help="Containerfile instruction")
@click.option("-m", "--message", default="", help="Commit message of the new image.")
@click.pass_context
def import_cmd(
    ctx: click.Context, source: str, ref: str | None, changes: tuple[str, ...], message: str
) -> None:
    """Make an image from a rootfs tarball (file or - for stdin)."""
    src: Any = sys.stdin.buffer if source == "-" else source
    img = _images(ctx).import_(src, ref, list(changes), message)
    click.echo(img.id)


@click.command("build")
@click.argument("context", default=".")
@click.option("-t", "--tag", "tags", multiple=True, help="Name the image NAME[:TAG] (repeatable).")
@click.option(
    "-f",
    "--file",
    "file",
    default=None,
    help="Containerfile (default CONTEXT/Containerfile or Dockerfile)",
)
@click.option("--build-arg", "build_args", multiple=True, help="K=V")
@click.option("--target", default=None, help="Build up to this stage (FROM ... AS NAME).")
@click.option("--no-cache", is_flag=True, help="Run every step again (no cached steps).")
@click.option("--runtime", default=None, help="OCI runtime for RUN (default: isle-runtime)")
@click.option(
    "--network",
    default="default",
    metavar="MODE",
    help="network of RUN steps: default (a private network namespace on isle's default bridge "
    "network, outbound like a container on it; none when rootless), none (loopback only) or "
    "host (the host's network, its 127.0.0.1 services included)",
)
@click.option("-q", "--quiet", is_flag=True, help="No step output; only the image id.")
@click.pass_context
def build_cmd(
    ctx: click.Context,
    context: str,
    tags: tuple[str, ...],
    file: str | None,
    build_args: tuple[str, ...],
    target: str | None,
    no_cache: bool,
    runtime: str | None,
    network: str,
    quiet: bool,
) -> None:
    """Build an image from a Containerfile.

    RUN steps get the sandbox of `isle run`: Docker's default capabilities and seccomp profile,
    masked /proc paths, the device cgroup allow-list, their own network namespace."""
    args = {}
    for kv in build_args:
        k, eq, v = kv.partition("=")
        args[k] = v if eq else os.environ.get(k, "")
    kw: dict[str, Any] = {
        "tags": list(tags),
        "file": file,
        "build_args": args,
        "target": target,
        "no_cache": no_cache,
        "network": network,
        "out": (lambda s: None) if quiet else (lambda s: click.echo(s, err=True)),
    }
    if runtime:
        kw["runtime"] = runtime
    img = _images(ctx).build(context, **kw)
    click.echo(img.id)


@click.command("bootstrap")
@click.argument("ref", default="")
@click.option("--variant", default="minbase", help="debootstrap variant")
@click.option("--mirror", default=None, help="apt mirror (default: the host's)")
@click.option("--os", "os_ref", default="", help="DIST[:SUITE]: a bootable OS image for `isle vm "
              "create --from-image` (kernel, systemd, cloud-init, sshd, qemu-guest-agent); "
              "REF defaults to DIST:SUITE-os")
@click.pass_context
def bootstrap_cmd(ctx: click.Context, ref: str, variant: str, mirror: str | None,
                  os_ref: str) -> None:
    """Make a Debian base image with debootstrap (takes minutes)."""
    if os_ref:
        from isle.engine.vms import bootstrap_os

        def progress(line: str) -> None:
            click.echo(line, err=True)

        click.echo(bootstrap_os(ctx.obj.settings, os_ref, ref, mirror=mirror,
                                progress=progress).id)
        return
    click.echo(_images(ctx).bootstrap(ref or "debian:bookworm", variant=variant,
                                      mirror=mirror).id)


def register(cli: click.Group) -> None:
    """Add the image verbs (top level and the ``image`` group) to cli."""
    for cmd in (
        images_cmd,
        pull_cmd,
        push_cmd,
        login_cmd,
        logout_cmd,
        save_cmd,
        load_cmd,
        import_cmd,
        tag_cmd,
        rmi_cmd,
        history_cmd,
        build_cmd,
    ):
        cli.add_command(cmd)

    @cli.group("image")
    def image_group() -> None:
        """Manage images."""

    for name, cmd in (
        ("inspect", inspect_cmd),
        ("history", history_cmd),
        ("tag", tag_cmd),
        ("rm", rmi_cmd),
        ("prune", prune_cmd),
        ("bootstrap", bootstrap_cmd),
        ("ls", images_cmd),
        ("df", df_cmd),
        ("pull", pull_cmd),
        ("push", push_cmd),
        ("save", save_cmd),
        ("load", load_cmd),
        ("import", import_cmd),
        ("build", build_cmd),
    ):
        image_group.add_command(cmd, name)


@click.group()
@click.option("--root", default=None, envvar="ISLE_ROOT", help="isle's state directory")
@click.pass_context
def _standalone(ctx: click.Context, root: str | None) -> None:
    ctx.obj = Settings(root=root) if root else Settings()


register(_standalone)


def main() -> None:
    """Run the image verbs on their own (tests, or before the main CLI exists)."""
    from isle.cli.run import normalize_bools

    try:
        _standalone.main(args=normalize_bools(sys.argv[1:], ""), standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    except IsleError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
