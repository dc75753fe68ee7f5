"""`isle`: the engine CLI. One verb -> one Engine call; the only place errors become exit codes.

Exit codes are Docker's: the container's own from `run`, 125 when isle fails (and for every
`run`/`create` failure), 126 command cannot be invoked, 127 command not found.
Plain `run`/`create` command lines are parsed without importing click (cli/run.py): it is
~20 ms of every container start.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["main"]

#: verbs whose failures are Docker's 125 even when the error class says 1 (docker start says 1)
RUN_VERBS = {"run", "create"}


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


def _fail(msg: str, code: int) -> NoReturn:
    sys.stderr.write(f"isle: {msg}\n")
    sys.stderr.flush()
    raise SystemExit(code)


_PS_FLAGS = {"-a": "all", "--all": "all", "-q": "quiet", "--quiet": "quiet", "-aq": "aq",
             "-qa": "aq", "--no-trunc": "no_trunc"}


def _fast_ps(g: dict[str, str], args: list[str]) -> int | None:
    """`ps [-a] [-q] [--no-trunc]` without click (it is timed against podman's and Docker's)."""
    if any(a not in _PS_FLAGS for a in args):
        return None
    flags = {_PS_FLAGS[a] for a in args}
    from isle.cli.ctx import Ctx
    from isle.cli.tables import _out, _print_rows

    env = os.environ
    ctx = Ctx(g.get("root") or env.get("ISLE_ROOT"), g.get("runroot") or env.get("ISLE_RUNROOT"),
              g.get("runtime") or env.get("ISLE_RUNTIME"))
    rows = ctx.engine.ps(all=bool(flags & {"all", "aq"}))
    from isle.engine import vmos  # whole-OS VMs too (cheap without any)

    rows = rows + vmos.ps_rows(ctx.settings, all=bool(flags & {"all", "aq"}))
    if flags & {"quiet", "aq"}:
        for r in rows:
            _out(r.full_id if "no_trunc" in flags else r.ID)
    else:
        _print_rows(rows, "", "no_trunc" in flags)
    return 0


def _fast(args: list[str]) -> int | None:
    """run/create/ps without click when the command line is plain; None: let click parse it."""
    from isle.cli import run

    g = run.parse_globals(args)
    if g is not None and g[1] and g[1][0] == "ps":
        return _fast_ps(g[0], g[1][1:])
    if g is None or not g[1] or g[1][0] not in RUN_VERBS:
        return None
    kw = run.parse_run(g[1][1:])
    if kw is None:
        return None
    from isle.cli.ctx import Ctx
    env = os.environ
    ctx = Ctx(g[0].get("root") or env.get("ISLE_ROOT"),
              g[0].get("runroot") or env.get("ISLE_RUNROOT"),
              g[0].get("runtime") or env.get("ISLE_RUNTIME"))
    return (run.do_run if g[1][0] == "run" else run.do_create)(ctx, kw)


def main(argv: list[str] | None = None) -> None:
    from isle.errors import IsleError

    args = sys.argv[1:] if argv is None else argv
    verb = _verb(args)
    if argv is None:
        from isle.cli.ctx import Ctx

        Ctx.own_process = True
    try:
        rv: object = _fast(args) if verb in RUN_VERBS | {"ps"} and "--help" not in args else None
        if rv is not None and argv is None:  # a process of its own, not a caller in-process
            _quick_exit(int(rv))  # type: ignore[call-overload]
        if rv is None:
            rv = _click(args, verb)
    except IsleError as exc:
        code = exc.exit_code
        if verb in RUN_VERBS and code == 1:
            code = 125
        _fail(f"error: {exc}", code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        raise SystemExit(0) from None
    except OSError as exc:  # the host said no (permissions, space, paths): isle failed
        _fail(f"error: {exc}", 125)
    except Exception as exc:  # a bug or an input nobody foresaw: one line, not a traceback
        if os.environ.get("ISLE_DEBUG"):
            raise
        _fail(f"error: internal error: {type(exc).__name__}: {exc} (ISLE_DEBUG=1 shows where)",
              125)
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)
    raise SystemExit(0)


def _quick_exit(code: int) -> NoReturn:
    """End a finished fast-path verb without tearing the interpreter down (~5 ms of every start):
    every record is committed (SQLite WAL), every file written and closed; only stdio may buffer."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _click(args: list[str], verb: str) -> object:
    import click

    from isle.cli.app import cli, register

    register(verb)
    from isle.cli.run import normalize_bools

    try:
        return cli.main(args=normalize_bools(args, verb), prog_name="isle",
                        standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(125) from None


if __name__ == "__main__":
    main()
