"""Containerfile syntax -> instructions; variable expansion; config-only instructions as data.

Errors are ``ConfigError("Containerfile:LINE", message)`` so the bad line is named.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from isle.errors import ConfigError

__all__ = ["Instruction", "parse", "expand", "apply_changes", "apply_config", "KNOWN", "parse_kv"]

KNOWN = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}
_FLAG = re.compile(r"^--([a-z-]+)(?:=(.*))?$")


@dataclass(slots=True)
class Instruction:
    cmd: str  # upper-case keyword
    rest: str  # text after the keyword and flags
    line: int
    flags: dict[str, str] = field(default_factory=dict)
    json_args: list[str] | None = None  # exec (JSON) form
    where: str = "Containerfile"

    def error(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.where}:{self.line}", f"{self.cmd}: {msg}")

    @property
    def original(self) -> str:
        fl = " ".join(f"--{k}={v}" for k, v in self.flags.items())
        return f"{self.cmd} {fl + ' ' if fl else ''}{self.rest}".strip()


def parse(text: str, where: str = "Containerfile") -> list[Instruction]:
    escape = "\\"
    lines = text.splitlines()
    # parser directives: only at the very top
    for ln in lines:
        m = re.match(r"^#\s*(\w+)\s*=\s*(\S+)\s*$", ln)
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise ConfigError(
                    f"{where}:1", f"escape directive must be \\ or `, not {m.group(2)}"
                )
            escape = m.group(2)
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for i, raw in enumerate(lines, 1):
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and (s.startswith("#") or not s):
            continue  # comments and blank lines inside a continuation
        if not buf:
            start = i
        if s.endswith(escape):
            buf.append(s[:-1])
            continue
        buf.append(s)
        out.append(_instruction(" ".join(b.strip() for b in buf).strip(), start, where))
        buf = []
    if buf:
        raise ConfigError(f"{where}:{start}", "line continuation at end of file")
    if not out:
        raise ConfigError(where, "no instructions")
    if out[0].cmd not in ("FROM", "ARG"):
        raise out[0].error("the first instruction must be FROM (or ARG before FROM)")
    return out


def _instruction(text: str, line: int, where: str) -> Instruction:
    kw, _, rest = text.partition(" ")
    cmd = kw.upper()
    if cmd not in KNOWN:
        shown = kw if len(kw) <= 40 else kw[:40] + "..."  # one readable line for any garbage
        raise ConfigError(f"{where}:{line}", f"unknown instruction {shown!r}")
    rest = rest.strip()
    flags: dict[str, str] = {}
    if cmd in ("FROM", "COPY", "ADD", "RUN", "HEALTHCHECK"):
        while rest.startswith("--"):
            tok, _, after = rest.partition(" ")
            m = _FLAG.match(tok)
            if not m or (m.group(2) is None and m.group(1) != "link"):
                raise ConfigError(f"{where}:{line}", f"{cmd}: bad flag {tok!r} (use --name=value)")
            flags[m.group(1)] = m.group(2) if m.group(2) is not None else "true"
            rest = after.strip()
    ins = Instruction(cmd, rest, line, flags, None, where)
    if rest.startswith("[") and cmd in (
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "COPY",
        "ADD",
        "VOLUME",
        "HEALTHCHECK",
    ):
        try:
            v = json.loads(rest)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                ins.json_args = v
        except ValueError:
            if cmd == "SHELL":
                raise ins.error("expects a JSON array of strings") from None
    if cmd == "SHELL" and ins.json_args is None:
        raise ins.error("expects a JSON array of strings")
    needs_args = cmd not in ("CMD", "ENTRYPOINT") and not (cmd == "HEALTHCHECK")
    if needs_args and not rest:
        raise ins.error("missing arguments")
    return ins


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(s: str, env: dict[str, str]) -> str:
    """$VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt}; ``\\$`` stays a literal $."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        val = env.get(name, "")
        if m.group(2) == ":-":
            return val if val else expand(m.group(3), env)
        if m.group(2) == ":+":
            return expand(m.group(3), env) if val else ""
        return val

    parts = s.split("\\$")
    return "$".join(_VAR.sub(sub, p) for p in parts)


def parse_kv(ins: Instruction, text: str) -> list[tuple[str, str]]:
    """ENV/LABEL/ARG pairs: ``K=V K2="v 2"`` or the legacy ``K V`` form."""
    try:
        words = shlex.split(text, posix=True)
    except ValueError as e:
        raise ins.error(f"bad quoting: {e}") from None
    if not words:
        raise ins.error("missing arguments")
    if "=" not in words[0]:
        if ins.cmd == "ARG":
            return [(words[0], "\0")]  # declared without default
        key, _, val = text.strip().partition(" ")
        if not val.strip():
            raise ins.error(f"{key} needs a value (use {key}=VALUE)")
        return [(key, val.strip())]
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ins.error(f"expected KEY=VALUE, got {w!r}")
        out.append((k, v))
    return out


def _cmd_form(ins: Instruction, shell: list[str]) -> list[str]:
    if ins.json_args is not None:
        return ins.json_args
    return [*shell, ins.rest] if ins.rest else []


def apply_config(cfg: dict[str, Any], ins: Instruction, env: dict[str, str]) -> str:
    """Apply a config-only instruction to an OCI ``config`` object; returns history text."""
    c, r = ins.cmd, ins.rest
    shell = cfg.get("Shell") or ["/bin/sh", "-c"]
    if c == "ENV":
        e = dict(x.split("=", 1) for x in cfg.get("Env") or [] if "=" in x)
        for k, v in parse_kv(ins, r):
            v = expand(v, {**env, **e})
            e[k] = v
            env[k] = v
        cfg["Env"] = [f"{k}={v}" for k, v in e.items()]
    elif c == "LABEL":
        labels = dict(cfg.get("Labels") or {})
        for k, v in parse_kv(ins, r):
            labels[expand(k, env)] = expand(v, env)
        cfg["Labels"] = labels
    elif c == "MAINTAINER":
        cfg.setdefault("Labels", {})["maintainer"] = r
    elif c == "CMD":
        cfg["Cmd"] = _cmd_form(ins, shell)
    elif c == "ENTRYPOINT":
        cfg["Entrypoint"] = _cmd_form(ins, shell)
        if "Cmd" in cfg and ins.json_args is None:
            cfg["Cmd"] = None
    elif c == "EXPOSE":
        ports = dict(cfg.get("ExposedPorts") or {})
        for p in expand(r, env).split():
            if not re.match(r"^\d+(-\d+)?(/(tcp|udp|sctp))?$", p):
                raise ins.error(f"bad port {p!r}")
            ports[p if "/" in p else p + "/tcp"] = {}
        cfg["ExposedPorts"] = ports
    elif c == "VOLUME":
        vols = dict(cfg.get("Volumes") or {})
        for v in ins.json_args if ins.json_args is not None else expand(r, env).split():
            vols[v] = {}
        cfg["Volumes"] = vols
    elif c == "USER":
        cfg["User"] = expand(r, env)
    elif c == "WORKDIR":
        import posixpath

        w = expand(r, env)
        cfg["WorkingDir"] = posixpath.normpath(posixpath.join(cfg.get("WorkingDir") or "/", w))
    elif c == "STOPSIGNAL":
        cfg["StopSignal"] = expand(r, env)
    elif c == "SHELL":
        cfg["Shell"] = ins.json_args
    elif c == "ONBUILD":
        cfg.setdefault("OnBuild", []).append(r)
    elif c == "HEALTHCHECK":
        cfg["Healthcheck"] = _healthcheck(ins, shell)
    else:
        raise ins.error("not a config instruction")
    for k in [k for k, v in cfg.items() if v is None]:
        cfg.pop(k)
    return f"/bin/sh -c #(nop) {ins.original}"


def _duration_ns(ins: Instruction, s: str) -> int:
    m = re.match(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$", s)
    if not m:
        raise ins.error(f"bad duration {s!r}")
    return int(float(m.group(1)) * {"ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[m.group(2)])


def _healthcheck(ins: Instruction, shell: list[str]) -> dict[str, Any]:
    if ins.rest.upper() == "NONE":
        return {"Test": ["NONE"]}
    kw, _, rest = ins.rest.partition(" ")
    if kw.upper() != "CMD":
        raise ins.error("expects CMD or NONE")
    rest = rest.strip()
    try:
        args = json.loads(rest) if rest.startswith("[") else None
    except ValueError:
        args = None
    hc: dict[str, Any] = {"Test": ["CMD", *args] if args else ["CMD-SHELL", rest]}
    for k, v in ins.flags.items():
        key = {
            "interval": "Interval",
            "timeout": "Timeout",
            "start-period": "StartPeriod",
            "start-interval": "StartInterval",
            "retries": "Retries",
        }.get(k)
        if key is None:
            raise ins.error(f"unknown flag --{k}")
        hc[key] = int(v) if key == "Retries" else _duration_ns(ins, v)
    return hc


def apply_changes(cfg: dict[str, Any], changes: list[str]) -> None:
    """``--change`` lines (import/commit): config instructions only."""
    for i, ch in enumerate(changes):
        ins = _instruction(ch.strip(), i + 1, "--change")
        if ins.cmd in ("FROM", "RUN", "COPY", "ADD", "ARG"):
            raise ins.error("not allowed in --change")
        env = dict(x.split("=", 1) for x in cfg.get("Env") or [] if "=" in x)
        apply_config(cfg, ins, env)
