"""`isle`: the engine CLI. One verb -> one Engine call; the only place errors become exit codes.

Exit codes are Docker's: the container's own from `run`, 125 when isle fails (and for every
`run`/`create`/`start` failure), 126 command cannot be invoked, 127 command not found.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

__all__ = ["main", "cli"]

#: verbs whose failures are Docker's 125 even when the error class says 1 (docker start says 1)
RUN_VERBS = {"run", "create"}


class Ctx:
    """Lazily-built engine for this invocation (the CLI imports the engine only when needed)."""

    def __init__(self, root: str | None, runroot: str | None, runtime: str | None) -> None:
        self.root, self.runroot, self.runtime = root, runroot, runtime
        self._engine: Any = None

    @property
    def settings(self) -> Any:
        from isle.config import Settings

        s = Settings()
        if self.root:
            s.root = os.path.abspath(self.root)
        if self.runroot:
            s.runroot = os.path.abspath(self.runroot)
        if self.runtime:
            s.runtime = self.runtime
        return s

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from isle.engine.engine import Engine

            self._engine = Engine(self.settings)
        return self._engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="ISLE_ROOT", help="Persistent state (images, volumes, db).")
@click.option("--runroot", envvar="ISLE_RUNROOT", help="Runtime state (monitor files, sockets).")
@click.option("--runtime-default", "runtime", envvar="ISLE_RUNTIME", hidden=True)
@click.version_option(package_name="isle", prog_name="isle")
@click.pass_context
def cli(ctx: click.Context, root: str | None, runroot: str | None, runtime: str | None) -> None:
    """isle: run OCI images as hardened containers (or, soon, VMs)."""
    ctx.obj = Ctx(root, runroot, runtime)


#: verbs served by container/volume/system alone: for them the image and network CLIs stay unimported
OWN_VERBS = {"run", "create", "start", "stop", "restart", "kill", "rm", "ps", "logs", "exec", "wait",
             "top", "stats", "cp", "pause", "unpause", "rename", "port", "diff", "commit", "export",
             "events", "volume", "info", "version", "demo", "system"}


def _register(verb: str = "") -> None:
    from isle.cli import container, system, volume

    container.register(cli)
    volume.register(cli)
    system.register(cli)
    if verb in OWN_VERBS:
        return
    try:
        from isle.cli import images
    except ImportError:
        images = None  # type: ignore[assignment]
    if images is not None and hasattr(images, "register"):
        images.register(cli)
    try:
        from isle.cli import network
    except ImportError:
        network = None  # type: ignore[assignment]
    if network is not None and hasattr(network, "register"):
        network.register(cli)


def _fail(msg: str, code: int) -> NoReturn:
    sys.stderr.write(f"isle: {msg}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _verb(args: list[str]) -> str:
    words, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--root", "--runroot", "--runtime-default"):
            skip = True
        elif not a.startswith("-"):
            words.append(a)
            if a != "container":
                break
    return words[-1] if words else ""


def main(argv: list[str] | None = None) -> None:
    from isle.errors import IsleError

    args = sys.argv[1:] if argv is None else argv
    verb = _verb(args)
    _register(verb)
    try:
        rv = cli.main(args=args, prog_name="isle", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(125) from None
    except IsleError as exc:
        code = exc.exit_code
        if verb in RUN_VERBS and code == 1:
            code = 125
        _fail(f"error: {exc}", code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        raise SystemExit(0) from None
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
