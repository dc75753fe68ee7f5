"""Go text/template, as Docker's `--format` uses it: one engine for ps, images, inspect, info,
version, stats, events and the network/volume listings.

Supported: `{{.A.B}}`, `{{.}}`, `$` and `$var` (`:=`/`=`), pipelines (`{{.X | upper}}`),
parentheses, `{{- -}}` trimming, `if`/`else if`/`else`, `range` (with `$i, $v :=` and `else`),
`with`, `define`-less `template` is not supported; Go's builtins `and or not len index slice
print printf println eq ne lt le gt ge` and Docker's `json split join title lower upper pad
truncate`. A `table` prefix is handled by `format_rows` (a header line, tab-aligned columns).

Missing keys of a map print `<no value>` (Go's map semantics, as `docker inspect` shows); with
`strict=True` (listing rows, which Docker keeps in structs) they are an error naming the field.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from isle.errors import ConfigError

__all__ = ["render", "compile_template", "format_rows", "format_one", "tabwrite", "go_str",
           "TemplateError"]


class TemplateError(ConfigError):
    def __init__(self, msg: str) -> None:
        super().__init__("--format", f"template: {msg}")


_MISSING = object()
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOK = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*") | (?P<raw>`[^`]*`) | (?P<chr>'(?:[^'\\]|\\.)')
  | (?P<decl>:=) | (?P<assign>=) | (?P<pipe>\|) | (?P<lp>\() | (?P<rp>\)(?:\.[\w]+)*) | (?P<comma>,)
  | (?P<var>\$[\w]*(?:\.[\w]+)*) | (?P<field>(?:\.[\w]+)+|\.)
  | (?P<num>-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_]\w*)
  )""", re.X)


# -- values as Go prints them ---------------------------------------------------------------------
def go_str(v: Any) -> str:
    """fmt's %v of a JSON-ish value (maps with sorted keys, slices in brackets)."""
    if v is None or v is _MISSING:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v)) if abs(v) < 1e6 else f"{v:g}".replace("e+0", "e+")
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(v[k])}" for k in sorted(v, key=str)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if hasattr(v, "template_fields"):
        return go_str(v.template_fields())
    return str(v)


def _truth(v: Any) -> bool:
    if v is None or v is _MISSING:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _json(v: Any) -> str:
    if v is _MISSING:
        v = None
    if hasattr(v, "template_fields"):
        v = v.template_fields()
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=str)


def _printf(fmt: str, *args: Any) -> str:
    out, i = [], 0
    it = iter(args)
    for m in re.finditer(r"%([-+ #0]*\d*(?:\.\d+)?)([vsdqfgextT%])", fmt):
        out.append(fmt[i:m.start()])
        i = m.end()
        flags, verb = m.group(1), m.group(2)
        if verb == "%":
            out.append("%")
            continue
        a = next(it, _MISSING)
        if a is _MISSING:
            out.append(f"%!{verb}(MISSING)")
        elif verb in "vs":
            out.append(("%" + flags + "s") % go_str(a))
        elif verb == "q":
            out.append(json.dumps(go_str(a), ensure_ascii=False))
        elif verb == "T":
            out.append(type(a).__name__)
        else:
            try:
                out.append(("%" + flags + verb) % a)
            except (TypeError, ValueError):
                out.append(f"%!{verb}({go_str(a)})")
    out.append(fmt[i:])
    return "".join(out)


def _print(*args: Any) -> str:
    # Go's fmt.Sprint: a space between operands when neither side is a string
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a)
    return out


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, dict):
            item = item.get(k, _MISSING)
        elif isinstance(item, (list, tuple, str)):
            try:
                item = item[int(k)]
            except (IndexError, ValueError) as exc:
                raise TemplateError(f"index: index out of range: {k}") from exc
        elif item is None or item is _MISSING:
            raise TemplateError("index of untyped nil")
        else:
            raise TemplateError(f"can't index item of type {type(item).__name__}")
    return item


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        try:
            return all(op(a, b) for b in bs) if bs else op(a, None)
        except TypeError as exc:
            raise TemplateError(f"incompatible types for comparison: {a!r}") from exc
    return f


def _len(v: Any) -> int:
    try:
        return len(v)
    except TypeError as exc:
        raise TemplateError(f"len of type {type(v).__name__}") from exc


def _slice(v: Any, *ix: Any) -> Any:
    if not ix:
        return v
    return v[int(ix[0]):(int(ix[1]) if len(ix) > 1 else None)]


def _pad(s: Any, before: int, after: int) -> str:
    return " " * int(before) + go_str(s) + " " * int(after)


def _truncate(s: Any, n: int) -> str:
    return go_str(s)[:int(n)]


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json, "upper": lambda s: go_str(s).upper(), "lower": lambda s: go_str(s).lower(),
    "title": lambda s: go_str(s).title(), "split": lambda s, sep: go_str(s).split(sep),
    "join": lambda xs, sep: sep.join(go_str(x) for x in (xs or [])), "pad": _pad,
    "truncate": _truncate, "len": _len, "index": _index, "slice": _slice, "print": _print,
    "printf": _printf, "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "not": lambda a: not _truth(a), "eq": _cmp(lambda a, b: a == b),
    "ne": _cmp(lambda a, b: a != b), "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b), "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
}


# -- parsing --------------------------------------------------------------------------------------
class _Node:
    pass


class _Text(_Node):
    def __init__(self, s: str) -> None:
        self.s = s


class _Action(_Node):
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe


class _Block(_Node):
    def __init__(self, kind: str, pipe: _Pipe) -> None:
        self.kind, self.pipe = kind, pipe
        self.body: list[_Node] = []
        self.other: list[_Node] = []


class _Pipe:
    def __init__(self, decl: list[str], assign: bool, cmds: list[list[Any]]) -> None:
        self.decl, self.assign, self.cmds = decl, assign, cmds


def _lex(src: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    src = src.strip()
    while pos < len(src):
        m = _TOK.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unexpected {src[pos:].strip()[:20]!r} in command")
        kind = m.lastgroup or ""
        toks.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return toks


def _parse_pipe(src: str) -> _Pipe:
    toks = _lex(src)
    decl: list[str] = []
    assign = False
    for i, (k, _) in enumerate(toks):
        if k in ("decl", "assign"):
            decl = [v for kk, v in toks[:i] if kk == "var"]
            assign = k == "assign"
            toks = toks[i + 1:]
            break
    pos = 0

    def operand() -> Any:
        nonlocal pos
        k, v = toks[pos]
        pos += 1
        if k == "lp":
            depth, j = 1, pos
            while j < len(toks) and depth:
                depth += {"lp": 1, "rp": -1}.get(toks[j][0], 0)
                j += 1
            if depth:
                raise TemplateError("unclosed left paren")
            inner = " ".join(t[1] if t[0] != "rp" else ")" for t in toks[pos:j - 1])
            close = toks[j - 1][1]
            pos = j
            return ("sub", _parse_pipe(inner), close[1:].split(".")[1:] if "." in close else [])
        if k == "rp":
            raise TemplateError("unexpected right paren")
        if k == "str":
            return ("lit", json.loads(v))
        if k == "raw":
            return ("lit", v[1:-1])
        if k == "chr":
            return ("lit", ord(json.loads('"' + v[1:-1] + '"')))
        if k == "num":
            return ("lit", float(v) if any(c in v for c in ".eE") and not v.startswith("0x")
                    else int(v, 0))
        if k == "field":
            return ("field", [p for p in v.split(".") if p])
        if k == "var":
            name, *path = v.split(".")
            return ("var", name, path)
        if k == "ident":
            if v in ("true", "false"):
                return ("lit", v == "true")
            if v == "nil":
                return ("lit", None)
            if v in ("and", "or") or v in FUNCS:
                return ("fn", v)
            raise TemplateError(f'function "{v}" not defined')
        raise TemplateError(f"unexpected {v!r} in operand")

    cmds: list[list[Any]] = [[]]
    while pos < len(toks):
        if toks[pos][0] == "pipe":
            pos += 1
            cmds.append([])
            continue
        if toks[pos][0] == "comma":
            pos += 1
            continue
        cmds[-1].append(operand())
    if any(not c for c in cmds):
        raise TemplateError("missing value for command")
    return _Pipe(decl, assign, cmds)


def compile_template(tmpl: str) -> list[_Node]:
    """Parse a template (Docker's `\\t`/`\\n` escapes in a shell argument included)."""
    tmpl = tmpl.replace("\\t", "\t").replace("\\n", "\n")
    root: list[_Node] = []
    stack: list[tuple[_Block | None, list[_Node]]] = [(None, root)]
    pos = 0
    for m in _ACTION.finditer(tmpl):
        text = tmpl[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if text:
            stack[-1][1].append(_Text(text))
        pos = m.end()
        if m.group(3):
            while pos < len(tmpl) and tmpl[pos].isspace():
                pos += 1
        body = m.group(2).strip()
        if body.startswith("/*"):
            continue
        word, _, rest = body.partition(" ")
        if word in ("if", "range", "with"):
            blk = _Block(word, _parse_pipe(rest))
            stack[-1][1].append(blk)
            stack.append((blk, blk.body))
        elif word == "else":
            top = stack[-1][0]
            if top is None:
                raise TemplateError("unexpected {{else}}")
            if rest.startswith("if ") or rest.startswith("with "):
                w2, _, r2 = rest.partition(" ")
                inner = _Block(w2, _parse_pipe(r2))
                top.other.append(inner)
                # the chain shares the outer {{end}}: mark it so `end` pops both
                stack.append((inner, inner.body))
                inner.kind = w2 + "+"
            else:
                stack[-1] = (top, top.other)
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("unexpected {{end}}")
            while True:
                done = stack.pop()[0]
                if done is None or not done.kind.endswith("+"):
                    break
                done.kind = done.kind[:-1]
        elif word in ("define", "template", "block"):
            raise TemplateError(f"{{{{{word}}}}} is not supported")
        else:
            stack[-1][1].append(_Action(_parse_pipe(body)))
    if "{{" in tmpl[pos:]:
        raise TemplateError("unclosed action (a '{{' without its '}}')")
    if len(stack) > 1:
        raise TemplateError("unexpected EOF (an {{if}}, {{range}} or {{with}} has no {{end}})")
    if pos < len(tmpl):
        root.append(_Text(tmpl[pos:]))
    return root


# -- execution ------------------------------------------------------------------------------------
class _Exec:
    def __init__(self, root: Any, strict: bool) -> None:
        self.vars: list[tuple[str, Any]] = [("$", root)]
        self.strict = strict

    def var(self, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise TemplateError(f'undefined variable "{name}"')

    def field(self, cur: Any, path: list[str]) -> Any:
        for p in path:
            if hasattr(cur, "template_fields"):
                cur = cur.template_fields()
            if isinstance(cur, dict):
                if p in cur:
                    cur = cur[p]
                elif self.strict:
                    raise TemplateError(f"can't evaluate field {p}")
                else:
                    cur = _MISSING
            elif cur is None or cur is _MISSING:
                if self.strict:
                    raise TemplateError(f"nil pointer evaluating .{p}")
                return _MISSING
            else:
                try:
                    cur = getattr(cur, p)
                except AttributeError:
                    raise TemplateError(f"can't evaluate field {p} in type "
                                        f"{type(cur).__name__}") from None
        return cur

    def operand(self, op: Any, dot: Any) -> Any:
        k = op[0]
        if k == "lit":
            return op[1]
        if k == "field":
            return self.field(dot, op[1])
        if k == "var":
            return self.field(self.var(op[1]), op[2])
        if k == "sub":
            return self.field(self.pipe(op[1], dot), op[2])
        raise TemplateError(f"can't give argument to non-function {op[1]}")

    def command(self, cmd: list[Any], dot: Any, prev: Any) -> Any:
        head = cmd[0]
        if head[0] == "fn":
            name = head[1]
            args = cmd[1:]
            if name in ("and", "or"):  # short-circuit, as Go's
                if not args and prev is _MISSING:
                    raise TemplateError(f"wrong number of args for {name}")
                v: Any = None
                for a in args + ([("lit", prev)] if prev is not _MISSING else []):
                    v = self.operand(a, dot)
                    if _truth(v) != (name == "and"):
                        return v
                return v
            vs = [self.operand(a, dot) for a in args]
            if prev is not _MISSING:
                vs.append(prev)
            try:
                return FUNCS[name](*vs)
            except TypeError as exc:
                raise TemplateError(f"wrong number of args for {name}") from exc
        if len(cmd) > 1 or prev is not _MISSING:
            raise TemplateError(f"can't give argument to non-function {_desc(head)}")
        return self.operand(head, dot)

    def pipe(self, p: _Pipe, dot: Any) -> Any:
        v: Any = _MISSING
        for c in p.cmds:
            v = self.command(c, dot, v)
        if p.decl and not p.assign:
            self.vars.append((p.decl[0], v))
        elif p.decl:
            for i in range(len(self.vars) - 1, -1, -1):
                if self.vars[i][0] == p.decl[0]:
                    self.vars[i] = (p.decl[0], v)
                    break
            else:
                raise TemplateError(f'undefined variable "{p.decl[0]}"')
        return v

    def run(self, nodes: list[_Node], dot: Any, out: list[str]) -> None:
        mark = len(self.vars)
        for n in nodes:
            if isinstance(n, _Text):
                out.append(n.s)
            elif isinstance(n, _Action):
                v = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    out.append(v if isinstance(v, str) else go_str(v))
            elif isinstance(n, _Block):
                self.block(n, dot, out)
        del self.vars[mark:]

    def block(self, b: _Block, dot: Any, out: list[str]) -> None:
        if b.kind == "range":
            decl = b.pipe.decl
            pipe = _Pipe([], False, b.pipe.cmds)
            coll = self.pipe(pipe, dot)
            if hasattr(coll, "template_fields"):
                coll = coll.template_fields()
            if isinstance(coll, dict):
                items: Iterable[tuple[Any, Any]] = [(k, coll[k]) for k in sorted(coll, key=str)]
            elif isinstance(coll, (list, tuple)):
                items = list(enumerate(coll))
            elif isinstance(coll, int) and not isinstance(coll, bool):
                items = [(i, i) for i in range(coll)]
            elif coll is None or coll is _MISSING:
                items = []
            else:
                raise TemplateError(f"range can't iterate over {go_str(coll)}")
            items = list(items)
            if not items:
                self.run(b.other, dot, out)
                return
            for k, v in items:
                mark = len(self.vars)
                if len(decl) == 1:
                    self.vars.append((decl[0], v))
                elif len(decl) >= 2:
                    self.vars += [(decl[0], k), (decl[1], v)]
                self.run(b.body, v, out)
                del self.vars[mark:]
            return
        mark = len(self.vars)
        v = self.pipe(b.pipe, dot)
        if _truth(v):
            self.run(b.body, v if b.kind == "with" else dot, out)
        else:
            self.run(b.other, dot, out)
        del self.vars[mark:]


def _desc(op: Any) -> str:
    if op[0] == "field":
        return "." + ".".join(op[1])
    if op[0] == "lit":
        return go_str(op[1])
    return str(op[1])


def render(tmpl: str | list[_Node], obj: Any, strict: bool = False) -> str:
    nodes = compile_template(tmpl) if isinstance(tmpl, str) else tmpl
    out: list[str] = []
    _Exec(obj, strict).run(nodes, obj, out)
    return "".join(out)


# -- listings -------------------------------------------------------------------------------------
def tabwrite(lines: Iterable[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's tabwriter as Docker sets it up (minwidth 10, padding 3): tab-separated cells aligned."""
    rows = [ln.split("\t") for ln in lines]
    widths: dict[int, int] = {}
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths.get(i, 0), len(c) + padding, minwidth)
    return ["".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + r[-1] for r in rows]


class _Header(dict):  # type: ignore[type-arg]
    """What a `table` template is rendered on to make its header line: every field is its name."""

    def __init__(self, heads: dict[str, str]) -> None:
        super().__init__()
        self.heads = heads

    def __contains__(self, k: object) -> bool:
        return True

    def __getitem__(self, k: str) -> str:
        return self.heads.get(k) or _upper_words(k)


def _upper_words(k: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", k).upper()


def format_rows(fmt: str, rows: list[Any], default: Callable[[], None],
                heads: dict[str, str] | None = None, strict: bool = True,
                out: Callable[[str], None] | None = None) -> None:
    """Print listing rows as Docker does for `--format`: "" or "table": the default table;
    "json": one JSON object per line; "table TEMPLATE": a header, then tab-aligned rows;
    anything else: the template per row."""
    write = out or (lambda s: sys.stdout.write(s + "\n"))
    if fmt in ("", "table"):
        default()
        return
    if fmt == "json":
        for r in rows:
            write(_json(r))
        return
    table = fmt.startswith("table")
    body = fmt[5:].lstrip() if table else fmt
    nodes = compile_template(body)
    lines = [render(nodes, r, strict) for r in rows]
    if table:
        hdr = render(nodes, _Header(heads or {}), False)
        for ln in tabwrite([hdr] + lines):
            write(ln.rstrip())
    else:
        for ln in lines:
            write(ln)


def format_one(fmt: str, obj: Any, strict: bool = False) -> str:
    """One object (inspect, info, version): "json" is its JSON, else the template."""
    if fmt == "json":
        return _json(obj)
    return render(fmt, obj, strict)
