"""`isle lint`: the "container as a mini-VM" mistake and its neighbours, as findings with reasons.

A container is one process (or one service) with its state in volumes; a VM is a machine that
runs many. Images built like small VMs (sshd, an init system, a supervisor, cron, upgrades at start,
state in the writable layer, everything as root) lose what containers are for: fast replaceable
instances, one concern each, logs and health through the runtime. Each rule has an id, a severity,
where it was found (Containerfile line, image config key or layer, container), why it matters and
the fix. The rule set follows the ideas of hadolint and Docker's best-practice guide; the code and
wording are isle's own.

Targets: a Containerfile (its instructions), an image (its config, history and layer contents) or
a container (its image, plus what runs in it and what it wrote outside volumes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "RULES", "SEVERITIES", "lint_containerfile", "lint_image_config",
           "lint_layers", "lint_processes", "lint_writes", "render_text", "render_json",
           "render_sarif", "exit_code"]

SEVERITIES = ("error", "warning", "info", "style")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    title: str
    why: str
    fix: str


@dataclass(slots=True)
class Finding:
    rule: str
    severity: str
    message: str
    where: str  # "Containerfile:12", "config:Entrypoint", "layer 3 (sha256:...)", "container"
    line: int = 0
    why: str = ""
    fix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d


_RULES = [
    Rule("IL001", "error", "sshd in a container",
         "an SSH daemon makes the container a small server to log into: keys and a second way in, "
         "a process the runtime does not supervise, and drift from the image",
         "use `isle exec` (or `kubectl exec`) to get a shell; remove openssh-server"),
    Rule("IL002", "error", "an init system as the entrypoint",
         "systemd or another init makes the container a whole machine: it needs privileges, hides "
         "the service's exit code and logs from the runtime, and runs services nobody asked for",
         "run the service itself as the entrypoint; for a whole OS choose a VM (`isle vm`)"),
    Rule("IL003", "warning", "several long-running services in one container",
         "a supervisor or `a & b` in the command runs several services: they cannot be scaled, "
         "restarted or health-checked apart, and one dying goes unnoticed",
         "one service per container; connect them with a network (`isle network create`)"),
    Rule("IL004", "warning", "cron inside the container",
         "cron is a second service with its own schedule, logs and failures hidden from the "
         "runtime",
         "run scheduled jobs as their own short-lived containers (a host timer, a Kubernetes "
         "CronJob)"),
    Rule("IL005", "error", "packages installed or upgraded at start",
         "installing or upgrading packages when the container starts makes every start slow, "
         "network-dependent and different from the tested image",
         "install and upgrade in the Containerfile (RUN) and rebuild the image instead"),
    Rule("IL006", "warning", "package upgrade in the image build",
         "`apt-get upgrade`/`dist-upgrade` pulls whatever is newest at build time: builds are not "
         "reproducible and base-image updates are hidden",
         "rebuild on a newer, pinned base image; install only named packages"),
    Rule("IL007", "warning", "state written outside volumes",
         "data in the container's writable layer is lost when the container is replaced and makes "
         "the container a pet that must be kept, like a VM",
         "declare a VOLUME (or mount one with -v) for every path the service writes"),
    Rule("IL008", "warning", "runs as root",
         "root in the container is root on the host kernel's attack surface; one escape is host "
         "root",
         "add a USER with a non-zero uid (or run rootless)"),
    Rule("IL009", "warning", "base image not pinned",
         "`:latest` or no tag moves under you: two builds of one Containerfile differ",
         "pin the base to a version tag and, better, a digest (FROM image:1.2@sha256:...)"),
    Rule("IL010", "error", "secret in the image",
         "ENV, ARG and files in layers are readable by anyone who can pull the image, forever, "
         "even if a later layer deletes them",
         "pass secrets at run time (env from a file, a mounted secret) or use build secrets"),
    Rule("IL011", "warning", "large image or many layers",
         "big images pull, start and scan slowly and carry more to attack; many layers slow every "
         "pull and overlay lookup",
         "use a smaller base, multi-stage builds, and join related RUN steps"),
    Rule("IL012", "info", "service without a HEALTHCHECK",
         "without a health check the runtime only knows the process exists, not that it serves",
         "add HEALTHCHECK CMD ... that checks the service's port or endpoint"),
    Rule("IL013", "style", "MAINTAINER is deprecated", "MAINTAINER is not kept by every tool",
         "use LABEL org.opencontainers.image.authors=..."),
    Rule("IL014", "warning", "shell-form entrypoint or command",
         "the shell-form runs under /bin/sh -c, which does not forward SIGTERM: stops wait for the "
         "timeout and the service is killed",
         'use the exec form: CMD ["prog", "arg"]'),
    Rule("IL015", "warning", "more than one CMD or ENTRYPOINT",
         "only the last one takes effect; the others mislead readers", "keep one"),
    Rule("IL016", "info", "cd in RUN",
         "`cd` in RUN does not persist and hides the working directory", "use WORKDIR"),
    Rule("IL017", "warning", "sudo in the image",
         "sudo in a container is an unnecessary setuid path to root",
         "run the step as root in the build and switch USER afterwards"),
    Rule("IL018", "info", "apt-get install keeps caches or recommends",
         "package lists and recommended packages grow the image",
         "apt-get install --no-install-recommends ... && rm -rf /var/lib/apt/lists/*"),
    Rule("IL019", "info", "ADD where COPY will do",
         "ADD also fetches URLs and unpacks archives, which surprises; COPY says what it does",
         "use COPY for local files; download with a checked step"),
]
RULES = {r.id: r for r in _RULES}

#: images over this size (uncompressed) or with more layers than this get IL011
MAX_SIZE = 1 << 30
MAX_LAYERS = 40

_SECRET_NAME = re.compile(r"(PASSW(OR)?D|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL"
                          r"|AUTH)", re.I)
_NOT_SECRET = re.compile(r"(_FILE|_PATH|_DIR|_URL|_HOST|_PORT|_USER(NAME)?)$", re.I)
#: file names that are secrets wherever they are (private keys, cloud and registry credentials)
_SECRET_FILES = re.compile(r"(^|/)(id_(rsa|dsa|ecdsa|ed25519)|\.env|\.netrc|\.npmrc|\.pypirc|"
                           r"\.git-credentials|credentials|\.docker/config\.json|[^/]+\.(pem|key|p12|"
                           r"pfx))$")
_SECRET_FILE_OK = re.compile(r"(^|/)(etc/ssl/certs/|usr/share/|usr/lib/python[^/]*/|"
                             r"usr/lib/ssl/|etc/ca-certificates)")
_SSHD = re.compile(r"(^|[\s/;&|])(sshd|dropbear)(\s|$|;|&)|openssh-server")
_INIT = re.compile(r"(^|[\s/])(systemd|init|/sbin/init|runit|s6-svscan|openrc-init|upstart)"
                   r"(\s|$)")
_SUPERVISOR = re.compile(r"(supervisord|supervisorctl|s6-svscan|runsvdir|monit\b|pm2\b|circusd|"
                         r"forever\b)")
_CRON = re.compile(r"(^|[\s/;&|])(cron|crond|anacron)(\s|$|;|&)|\bcrontab\b")
_PKG_INSTALL = re.compile(r"\b(apt-get|apt|yum|dnf|apk|zypper|pip3?|npm)\s+(-\S+\s+)*(install|"
                          r"upgrade|dist-upgrade|update|add)\b")
_UPGRADE = re.compile(r"\b(apt-get|apt)\s+(-\S+\s+)*(dist-)?upgrade\b|\b(yum|dnf)\s+(-\S+\s+)*"
                      r"(upgrade|update)(\s|$)|\bapk\s+(-\S+\s+)*upgrade\b")
_BACKGROUND = re.compile(r"(?<![&|])&(?![&>])")
#: long-running services seen in a container's process list that make it a mini-VM
_SERVICES = {"sshd": "IL001", "dropbear": "IL001", "systemd": "IL002", "init": "IL002",
             "cron": "IL004", "crond": "IL004", "anacron": "IL004", "supervisord": "IL003",
             "runsvdir": "IL003", "s6-svscan": "IL003"}
#: paths a service legitimately writes without a volume (temporary, runtime)
_SCRATCH = ("/tmp", "/var/tmp", "/run", "/var/run", "/dev", "/proc", "/sys", "/etc/hosts",
            "/etc/hostname", "/etc/resolv.conf", "/root/.ash_history", "/root/.bash_history")


def _f(rule: str, message: str, where: str, line: int = 0, **extra: Any) -> Finding:
    r = RULES[rule]
    return Finding(rule, r.severity, message, where, line, r.why, r.fix, dict(extra))


def _cmd_text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value or "")


def _cmd_checks(text: str, where: str, line: int = 0) -> list[Finding]:
    """Rules on what a container runs at start (ENTRYPOINT + CMD)."""
    out: list[Finding] = []
    if not text.strip():
        return out
    if _SSHD.search(text):
        out.append(_f("IL001", f"the container starts an SSH daemon: {text!r}", where, line))
    first = text.strip().split()[0] if text.strip() else ""
    if _INIT.search(" " + first) or first.endswith(("/systemd", "/init")):
        out.append(_f("IL002", f"the entrypoint is an init system: {first}", where, line))
    if _SUPERVISOR.search(text):
        out.append(_f("IL003", f"a process supervisor runs several services: {text!r}", where,
                      line))
    elif _BACKGROUND.search(text) and not re.search(r"\bexec\b", text.split("&")[-1]):
        out.append(_f("IL003", f"the command starts background services with '&': {text!r}", where,
                      line))
    if _CRON.search(text):
        out.append(_f("IL004", f"the container runs cron: {text!r}", where, line))
    if _PKG_INSTALL.search(text):
        out.append(_f("IL005", f"the command installs or upgrades packages at start: {text!r}",
                      where, line))
    return out


def _env_secrets(pairs: Iterable[tuple[str, str]], where: str, line: int = 0,
                 kind: str = "ENV") -> list[Finding]:
    out = []
    for k, v in pairs:
        if _SECRET_NAME.search(k) and not _NOT_SECRET.search(k) and v:
            out.append(_f("IL010", f"{kind} {k} holds a secret in the image", where, line, key=k))
    return out


def _base_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    return ":" in name and not name.endswith(":latest")


# -- Containerfile ---------------------------------------------------------------------------
def lint_containerfile(text: str, where: str = "Containerfile") -> list[Finding]:
    """Findings for a Containerfile's text (parse errors raise ConfigError naming the line)."""
    from isle.image.build.parser import parse, parse_kv

    ins = parse(text, where)
    out: list[Finding] = []
    stages: list[str] = []
    last_stage_start = 0
    for i, x in enumerate(ins):
        if x.cmd == "FROM":
            stages.append(x.rest.split()[0] if x.rest.split() else "")
            last_stage_start = i
    names = {x.rest.split()[2].lower() for x in ins if x.cmd == "FROM" and len(x.rest.split()) >= 3
             and x.rest.split()[1].upper() == "AS"}
    final = ins[last_stage_start:]
    for x in ins:
        loc = f"{where}:{x.line}"
        if x.cmd == "FROM":
            base = x.rest.split()[0] if x.rest.split() else ""
            if base.lower() not in names and base != "scratch" and "$" not in base \
                    and not _base_pinned(base):
                out.append(_f("IL009", f"FROM {base}: not pinned to a version or digest", loc,
                              x.line))
        elif x.cmd == "RUN":
            cmd = " ".join(x.json_args) if x.json_args else x.rest
            if _UPGRADE.search(cmd):
                out.append(_f("IL006", "RUN upgrades every package", loc, x.line))
            if re.search(r"(^|[;&|]\s*)sudo\s", cmd):
                out.append(_f("IL017", "RUN uses sudo", loc, x.line))
            if re.search(r"(^|&&|;)\s*cd\s", cmd):
                out.append(_f("IL016", "RUN changes directory with cd", loc, x.line))
            if re.search(r"\bapt-get\s+(-\S+\s+)*install\b", cmd) and (
                    "--no-install-recommends" not in cmd or "/var/lib/apt/lists" not in cmd):
                out.append(_f("IL018", "apt-get install without --no-install-recommends and a "
                                       "cleanup of /var/lib/apt/lists", loc, x.line))
            if _SSHD.search(cmd):
                out.append(_f("IL001", "the image installs an SSH server", loc, x.line))
            if re.search(r"\b(cron|cronie|anacron)\b", cmd) and re.search(r"install|add\b", cmd):
                out.append(_f("IL004", "the image installs cron", loc, x.line))
            if re.search(r"\b(systemd-sysv|systemd)\b", cmd) and re.search(r"install|add\b", cmd):
                out.append(_f("IL002", "the image installs an init system", loc, x.line))
            if re.search(r"\bsupervisor\b", cmd) and re.search(r"install|add\b", cmd):
                out.append(_f("IL003", "the image installs a process supervisor", loc, x.line))
            if re.search(r"\bsudo\b", cmd) and re.search(r"install|add\b", cmd):
                out.append(_f("IL017", "the image installs sudo", loc, x.line))
        elif x.cmd in ("ENV", "ARG"):
            try:
                pairs = parse_kv(x, x.rest) if x.cmd == "ENV" else [
                    (a.partition("=")[0], a.partition("=")[2]) for a in x.rest.split()]
            except Exception:  # noqa: BLE001 -- a malformed line is the parser's to report
                pairs = []
            if x.cmd == "ARG":  # an ARG named like a secret leaks through history even unset
                out.extend(_f("IL010", f"ARG {k} passes a secret through the build (it stays in "
                                       "the image history)", loc, x.line, key=k)
                           for k, _ in pairs
                           if _SECRET_NAME.search(k) and not _NOT_SECRET.search(k))
            else:
                out.extend(_env_secrets(pairs, loc, x.line))
        elif x.cmd == "MAINTAINER":
            out.append(_f("IL013", "MAINTAINER is deprecated", loc, x.line))
        elif x.cmd == "ADD":
            srcs = (x.json_args or x.rest.split())[:-1]
            if srcs and not any(s.startswith(("http://", "https://", "git@")) or
                                re.search(r"\.(tar|tgz|tar\.\w+|txz|tbz2?)$", s) for s in srcs):
                out.append(_f("IL019", "ADD copies plain files", loc, x.line))
    # the final stage decides what runs
    entry = [x for x in final if x.cmd == "ENTRYPOINT"]
    cmds = [x for x in final if x.cmd == "CMD"]
    for group, name in ((entry, "ENTRYPOINT"), (cmds, "CMD")):
        if len(group) > 1:
            out.append(_f("IL015", f"{len(group)} {name} instructions; only line {group[-1].line} "
                                   "counts", f"{where}:{group[0].line}", group[0].line))
        if group:
            x = group[-1]
            loc = f"{where}:{x.line}"
            if x.json_args is None and x.rest.strip():
                out.append(_f("IL014", f"{name} in shell form: {x.rest.strip()!r}", loc, x.line))
            text = " ".join(x.json_args) if x.json_args is not None else x.rest
            out.extend(_cmd_checks(text, loc, x.line))
    users = [x for x in final if x.cmd == "USER"]
    if final and (not users or users[-1].rest.split(":")[0].strip() in ("root", "0")):
        line = users[-1].line if users else final[0].line
        out.append(_f("IL008", "the final stage runs as root (no USER, or USER root)",
                      f"{where}:{line}", line))
    if any(x.cmd == "EXPOSE" for x in final) and not any(x.cmd == "HEALTHCHECK" for x in final):
        line = next(x.line for x in final if x.cmd == "EXPOSE")
        out.append(_f("IL012", "the image exposes a port but has no HEALTHCHECK",
                      f"{where}:{line}", line))
    runs = sum(1 for x in final if x.cmd in ("RUN", "COPY", "ADD"))
    if runs > MAX_LAYERS:
        out.append(_f("IL011", f"{runs} layer-making instructions in the final stage",
                      f"{where}:{final[0].line}", final[0].line))
    return _sorted(out)


# -- images ----------------------------------------------------------------------------------
def lint_image_config(config: dict[str, Any], *, size: int = 0, layers: int = 0,
                      names: Iterable[str] = ()) -> list[Finding]:
    """Findings from an OCI image config (and its size and layer count)."""
    c = config.get("config") or {}
    out: list[Finding] = []
    start = " ".join([_cmd_text(c.get("Entrypoint")), _cmd_text(c.get("Cmd"))]).strip()
    out.extend(_cmd_checks(start, "config:Entrypoint/Cmd"))
    user = str(c.get("User") or "").split(":")[0]
    if user in ("", "root", "0"):
        out.append(_f("IL008", "the image's User is root (unset)" if not user else
                      f"the image's User is {user}", "config:User"))
    env = [tuple(e.split("=", 1)) for e in c.get("Env") or [] if "=" in e]
    out.extend(_env_secrets(env, "config:Env"))
    if c.get("ExposedPorts") and not c.get("Healthcheck"):
        out.append(_f("IL012", "the image exposes "
                      f"{', '.join(sorted(c['ExposedPorts']))} but has no Healthcheck",
                      "config:Healthcheck"))
    for n in names:
        if n.endswith(":latest"):
            out.append(_f("IL009",
                          f"{n} is tagged latest: users of it get whatever was pushed last",
                          "image name"))
    if size > MAX_SIZE:
        out.append(_f("IL011", f"the image is {size / (1 << 30):.1f} GiB", "image size",
                      size=size))
    if layers > MAX_LAYERS:
        out.append(_f("IL011", f"the image has {layers} layers", "image layers", layers=layers))
    for h in config.get("history") or []:
        by = str(h.get("created_by") or "")
        if "#(nop)" in by:
            continue
        if _UPGRADE.search(by):
            out.append(_f("IL006", f"a layer was built with a package upgrade: {by[:120]!r}",
                          "history"))
    return _sorted(out)


def lint_layers(layers: Iterable[tuple[str, str]], limit: int = 200_000) -> list[Finding]:
    """Secret files in unpacked layers: (label, directory) pairs, lowest layer first.

    Walked without following symlinks; a file deleted by a later layer still counts (it is in the
    image, only hidden)."""
    out: list[Finding] = []
    seen = 0
    for label, top in layers:
        for dirpath, _dirs, files in os.walk(top, followlinks=False):
            rel_dir = os.path.relpath(dirpath, top)
            for name in files:
                seen += 1
                if seen > limit:
                    return _sorted(out)
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if _SECRET_FILES.search(rel) and not _SECRET_FILE_OK.search(rel):
                    out.append(_f("IL010", f"/{rel} looks like a secret", label, path="/" + rel))
                if rel in ("usr/sbin/sshd", "usr/sbin/dropbear"):
                    out.append(_f("IL001", f"/{rel} (an SSH daemon) is in the image", label))
                if rel in ("usr/bin/sudo",):
                    out.append(_f("IL017", "/usr/bin/sudo is in the image", label))
    return _sorted(out)


# -- containers ------------------------------------------------------------------------------
def lint_processes(commands: Iterable[str], where: str = "container") -> list[Finding]:
    """Findings from what runs in a container (command lines, e.g. from `isle top`)."""
    out: list[Finding] = []
    seen: set[str] = set()
    long_running = 0
    for cmd in commands:
        prog = os.path.basename(cmd.split()[0]) if cmd.split() else ""
        prog = prog.strip("[]:")
        rule = _SERVICES.get(prog)
        if rule and prog not in seen:
            seen.add(prog)
            out.append(_f(rule, f"{prog} is running in the container", where))
        if prog and prog not in ("sh", "bash", "ash", "sleep", "tini", "dumb-init", "ps", "top"):
            long_running += 1
    if long_running > 2 and not any(f.rule == "IL003" for f in out):
        out.append(_f("IL003", f"{long_running} programs are running in the container", where))
    return _sorted(out)


def lint_writes(changes: Iterable[tuple[str, str]], volumes: Iterable[str],
                where: str = "container") -> list[Finding]:
    """IL007 from `isle diff` (kind, path) pairs: writes outside volumes and scratch paths."""
    vols = [v.rstrip("/") for v in volumes]
    kinds = {path: kind for kind, path in changes if kind in ("A", "C")}

    def under(p: str, roots: Iterable[str]) -> bool:
        return any(p == r or p.startswith(r + "/") for r in roots)

    # leaves: what was written (a changed directory is only the parent of what was written in it)
    parents = {p.rsplit("/", 1)[0] for p in kinds}
    leaves = [p for p in kinds if p not in parents and not under(p, _SCRATCH) and not under(p, vols)
              # a changed directory that only holds runtime-made files (/etc for /etc/hosts)
              and not (kinds[p] == "C" and any(s.startswith(p + "/") for s in _SCRATCH))]
    top_set: set[str] = set()
    for p in leaves:  # name the top-most directory the container added, not every file in it
        top, q = p, p
        while "/" in q.strip("/"):
            q = q.rsplit("/", 1)[0]
            if kinds.get(q) == "A":
                top = q
        top_set.add(top)
    tops = sorted(top_set)
    shown = ", ".join(tops[:8]) + (" ..." if len(tops) > 8 else "")
    return [_f("IL007", f"the container wrote outside its volumes: {shown}", where,
               paths=tops)]


# -- output ----------------------------------------------------------------------------------
def _sorted(fs: list[Finding]) -> list[Finding]:
    order = {s: i for i, s in enumerate(SEVERITIES)}
    uniq: dict[tuple[str, str, str], Finding] = {}
    for f in fs:
        uniq.setdefault((f.rule, f.where, f.message), f)
    return sorted(uniq.values(), key=lambda f: (f.line, order[f.severity], f.rule))


def exit_code(findings: list[Finding], threshold: str = "info", no_fail: bool = False) -> int:
    """As hadolint: 1 when a finding is at or above the threshold, else 0 ("none" never fails)."""
    if no_fail or threshold == "none":
        return 0
    limit = SEVERITIES.index(threshold)
    return 1 if any(SEVERITIES.index(f.severity) <= limit for f in findings) else 0


def render_text(target: str, findings: list[Finding], verbose: bool = False) -> str:
    if not findings:
        return f"{target}: no findings"
    lines = []
    for f in findings:
        lines.append(f"{f.where} {f.rule} {f.severity}: {f.message}")
        if verbose:
            lines.append(f"    why: {f.why}")
            lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)


def render_json(target: str, kind: str, findings: list[Finding]) -> str:
    return json.dumps({"target": target, "kind": kind,
                       "findings": [f.to_dict() for f in findings]}, indent=2)


def render_sarif(target: str, findings: list[Finding], version: str = "") -> str:
    """SARIF 2.1.0, as code-scanning services read it."""
    level = {"error": "error", "warning": "warning", "info": "note", "style": "note"}
    used = sorted({f.rule for f in findings})
    results = []
    for f in findings:
        loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": target}}}
        if f.line:
            loc["physicalLocation"]["region"] = {"startLine": f.line}
        else:
            loc = {"logicalLocations": [{"name": f.where, "fullyQualifiedName": f"{target}:"
                                         f"{f.where}"}]}
        results.append({"ruleId": f.rule, "level": level[f.severity],
                        "message": {"text": f.message}, "locations": [loc]})
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "isle lint", "version": version or "0",
                "rules": [{"id": r, "name": RULES[r].title.replace(" ", "-"),
                           "shortDescription": {"text": RULES[r].title},
                           "fullDescription": {"text": RULES[r].why},
                           "help": {"text": RULES[r].fix},
                           "defaultConfiguration": {"level": level[RULES[r].severity]}}
                          for r in used]}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2)
