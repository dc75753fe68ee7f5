"""Parse `isle [--root R] [--runroot R] run|create FLAGS IMAGE [CMD...]` without click (~20 ms).

Same table as the click command (cli/runflags.py), same rules (options stop at the image, short
flags cluster, -oVALUE and --opt=VALUE); anything it does not understand returns None and the
click path parses it (and reports the error) instead.
"""

from __future__ import annotations

from isle.cli.runflags import RUN_FLAGS

__all__ = ["parse_globals", "parse_run"]

_BY_NAME = {n: (dest, kind) for names, dest, kind, _ in RUN_FLAGS for n in names}
GLOBALS = {"--root": "root", "--runroot": "runroot", "--runtime-default": "runtime"}


def parse_globals(argv: list[str]) -> tuple[dict[str, str], list[str]] | None:
    g: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name not in GLOBALS:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            val = argv[i + 1]
            i += 1
        g[GLOBALS[name]] = val
        i += 1
    return g, argv[i:]


def parse_run(args: list[str]) -> dict[str, object] | None:
    kw: dict[str, object] = {dest: (list(d) if kind == "multi" else d)  # type: ignore[call-overload]
                             for _, dest, kind, d in RUN_FLAGS}
    i = 0

    def put(dest: str, kind: str, val: str) -> bool:
        if kind == "multi":
            kw[dest].append(val)  # type: ignore[union-attr]
        elif kind == "int":
            try:
                kw[dest] = int(val)
            except ValueError:
                return False
        else:
            kw[dest] = val
        return True

    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            if name not in _BY_NAME:
                return None
            dest, kind = _BY_NAME[name]
            if kind == "flag":
                if eq:
                    return None
                kw[dest] = True
            else:
                if not eq:
                    if i + 1 >= len(args):
                        return None
                    i += 1
                    val = args[i]
                if not put(dest, kind, val):
                    return None
            i += 1
            continue
        j = 1
        while j < len(a):  # a cluster of short options: -it, -dit, -e K=V, -eK=V, -p80
            opt = "-" + a[j]
            if opt not in _BY_NAME:
                return None
            dest, kind = _BY_NAME[opt]
            if kind == "flag":
                kw[dest] = True
                j += 1
                continue
            val = a[j + 1:]
            if not val:
                if i + 1 >= len(args):
                    return None
                i += 1
                val = args[i]
            if not put(dest, kind, val):
                return None
            break
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    if i >= len(args):
        return None
    kw["image"] = args[i]
    kw["command"] = tuple(args[i + 1:])
    for _, dest, kind, _d in RUN_FLAGS:
        if kind == "multi":
            kw[dest] = tuple(kw[dest])  # type: ignore[arg-type]
    return kw
