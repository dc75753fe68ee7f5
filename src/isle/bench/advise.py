"""`isle advise`: an isolation level for a workload, with this host's `isle bench` numbers as
reasons. The rules (docs/advise.md documents them; tests/unit/bench/test_advise.py is their
table) go from what only one level can do to what is cheapest:

    1. other-os or legacy full-OS                      -> os-vm (its own OS, init and services)
    2. own-kernel                                      -> microvm (a kernel per instance)
    3. trust = untrusted (multi-tenant):
         microVMs work here, start budget >= the template's warm start, the instances fit the
         memory budget, no high I/O or network       -> microvm
         sandbox works here, no high I/O or network  -> sandbox (gVisor: syscalls never reach
                                                        the host kernel directly)
         otherwise                                   -> container-in-vm (a VM per tenant around
                                                        hardened containers: the VM boundary paid
                                                        once, container I/O inside)
    4. trust = third-party                             -> hardened container (no caps, read-only,
                                                        no-new-privileges, non-root user, limits)
    5. rootless = true (no root on the host)           -> rootless container
    6. otherwise (own code)                            -> container
    A start budget below the chosen level's warm start moves down to the next level whose start
    fits, with a warning when isolation is lost.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Workload", "advise", "render_text", "load_workloads", "KEYS", "LEVEL_NAMES"]

KEYS = ("trust", "own-kernel", "other-os", "legacy", "start-budget-ms", "instances", "memory-mib",
        "io", "network", "lifetime", "rootless", "image")

LEVEL_NAMES = {"container": "container", "hardened": "hardened container",
               "rootless": "rootless container", "sandbox": "sandbox (gVisor)",
               "microvm": "microVM", "container-in-vm": "containers in a VM",
               "os-vm": "whole-OS VM"}

#: the bench level whose numbers stand for each recommendation
_MEASURED = {"container": "container", "hardened": "container", "rootless": "container",
             "sandbox": "sandbox", "microvm": "microvm-template", "container-in-vm": "microvm",
             "os-vm": "os-vm"}

_CHOICES = {"trust": ("own", "third-party", "untrusted"), "io": ("low", "high"),
            "network": ("low", "high"), "lifetime": ("long-running", "batch")}


@dataclass
class Workload:
    trust: str = "own"
    own_kernel: bool = False
    other_os: bool = False
    legacy: bool = False
    start_budget_ms: float = 0.0   # 0: no budget
    instances: int = 1
    memory_mib: float = 0.0        # 0: whatever the image needs
    io: str = "low"
    network: str = "low"
    lifetime: str = "long-running"
    rootless: bool = False
    image: str = "IMAGE"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        from isle.errors import ConfigError

        kw: dict[str, Any] = {}
        for k, v in d.items():
            key = k.replace("_", "-")
            if key not in KEYS:
                raise ConfigError("advise", f"unknown workload key {k!r} (keys: {', '.join(KEYS)})")
            if key in _CHOICES and v not in _CHOICES[key]:
                raise ConfigError("advise", f"{key} = {v!r}: one of {', '.join(_CHOICES[key])}")
            if key in ("own-kernel", "other-os", "legacy", "rootless") and not isinstance(v, bool):
                raise ConfigError("advise", f"{key} = {v!r}: true or false")
            if key in ("start-budget-ms", "memory-mib", "instances"):
                try:
                    v = int(v) if key == "instances" else float(v)
                except (TypeError, ValueError):
                    raise ConfigError("advise", f"{key} = {v!r}: a number") from None
                if v < 0:
                    raise ConfigError("advise", f"{key} = {v!r}: not negative")
            kw[key.replace("-", "_")] = v
        return cls(**kw)


def _lv(doc: dict[str, Any], level: str) -> dict[str, Any]:
    r = (doc.get("levels") or {}).get(level) or {}
    return r if r.get("ok") else {}


def _warm(doc: dict[str, Any], level: str) -> float | None:
    v = ((_lv(doc, level).get("start") or {}).get("exit_ms") or {}).get("warm")
    return float(v) if v is not None else None


def _pss_mib(doc: dict[str, Any], level: str) -> float | None:
    v = (_lv(doc, level).get("density") or {}).get("pss_bytes_per_instance")
    return v / 1048576 if v else None


def _fits(doc: dict[str, Any], level: str, w: Workload) -> int | None:
    d = _lv(doc, level).get("density") or {}
    if not d:
        return None
    slope = (d.get("fit") or {}).get("slope_bytes") or 0
    per = slope + w.memory_mib * 1048576
    a = (d.get("fit") or {}).get("intercept_bytes") or 0
    return int((d.get("memory_budget_bytes", 0) - a) // per) if per > 0 else None


def _works(doc: dict[str, Any], level: str) -> bool:
    return bool(_lv(doc, level))


def _why_not(doc: dict[str, Any], level: str) -> str:
    r = (doc.get("levels") or {}).get(level) or {}
    return r.get("reason") or "not measured"


def _choose(w: Workload, doc: dict[str, Any]) -> tuple[str, list[str], dict[str, str]]:
    """(level, rules fired, {rejected level: why})."""
    rejected: dict[str, str] = {}
    heavy = w.io == "high" or w.network == "high"
    if w.other_os or w.legacy:
        why = "needs another OS" if w.other_os else "a legacy full-OS workload (init, services)"
        for lv in ("container", "hardened", "rootless", "sandbox"):
            rejected[lv] = f"shares the host's Linux kernel: {why}"
        rejected["microvm"] = "boots one process on isle's guest kernel, not a whole OS"
        return "os-vm", [f"rule 1: {why} -> whole-OS VM"], rejected
    if w.own_kernel:
        for lv in ("container", "hardened", "rootless"):
            rejected[lv] = "shares the host kernel: cannot have a kernel of its own"
        rejected["sandbox"] = "gVisor's sentry is one fixed kernel personality, no modules"
        rejected["os-vm"] = "a whole OS is more than needed: a microVM boots a kernel per instance"
        return "microvm", ["rule 2: needs its own kernel -> microVM"], rejected
    if w.trust == "untrusted":
        for lv in ("container", "hardened", "rootless"):
            rejected[lv] = ("untrusted multi-tenant code next to the host kernel's whole syscall "
                            "surface: one kernel bug is an escape")
        rejected["os-vm"] = "a whole OS per tenant costs minutes of start and a full init"
        fired = ["rule 3: untrusted multi-tenant code needs a boundary other than namespaces"]
        tpl = "microvm-template" if _works(doc, "microvm-template") else "microvm"
        warm = _warm(doc, tpl)
        fits = _fits(doc, tpl, w)
        if _works(doc, tpl) and not heavy and (not w.start_budget_ms or (
                warm is not None and warm <= w.start_budget_ms)) and (fits is None or
                                                                       fits >= w.instances):
            rejected["sandbox"] = "works, but a microVM's own kernel is the stronger boundary " \
                                  "and fits this workload's start and density"
            rejected["container-in-vm"] = "one VM per instance fits here; no need to group"
            return "microvm", fired + ["microVM: start and density fit"], rejected
        if not _works(doc, tpl):
            rejected["microvm"] = f"not usable here: {_why_not(doc, tpl)}"
        elif heavy:
            tcg = (doc.get("host") or {}).get("accelerator") == "TCG"
            rejected["microvm"] = ("high I/O or network: every byte crosses emulated devices "
                                   f"({'TCG' if tcg else 'virtio'})")
        elif w.start_budget_ms and (warm is None or warm > w.start_budget_ms):
            rejected["microvm"] = f"warm start {warm:.0f} ms > budget {w.start_budget_ms:.0f} ms" \
                if warm is not None else "no start measured"
        else:
            rejected["microvm"] = (f"only {fits} instances fit the memory budget, "
                                   f"{w.instances} wanted")
        if _works(doc, "sandbox") and not heavy:
            rejected["container-in-vm"] = "the sandbox gives a per-instance boundary already"
            return "sandbox", fired + ["sandbox works here and the workload is not I/O heavy"], \
                rejected
        rejected["sandbox"] = ("high I/O or network: gVisor's gofer and netstack cost most there"
                               if heavy else f"not usable here: {_why_not(doc, 'sandbox')}")
        return "container-in-vm", fired + ["no per-instance boundary fits: one VM per tenant"], \
            rejected
    rejected["sandbox"] = rejected["microvm"] = "the code is not hostile: a kernel boundary " \
                                                "costs start and memory for nothing"
    rejected["os-vm"] = rejected["container-in-vm"] = "no need for a VM"
    if w.trust == "third-party":
        rejected["container"] = "third-party code gets the least privilege, not the defaults"
        rejected["rootless"] = "fine too; hardened flags matter more than who runs the engine"
        return "hardened", ["rule 4: third-party code -> hardened container"], rejected
    if w.rootless:
        rejected["container"] = rejected["hardened"] = "needs root on the host"
        return "rootless", ["rule 5: no root on the host -> rootless container"], rejected
    rejected["hardened"] = "fine too; your own code rarely needs it"
    rejected["rootless"] = "root is available; rootless costs network speed (slirp4netns)"
    return "container", ["rule 6: own code -> container"], rejected


def _command(level: str, w: Workload) -> str:
    mem = f" --memory {int(math.ceil(w.memory_mib))}m" if w.memory_mib else ""
    base = "isle run -d"
    if level == "container":
        return f"{base}{mem} {w.image}"
    if level == "hardened":
        return (f"{base} --cap-drop ALL --read-only --security-opt no-new-privileges "
                f"--user 65534:65534 --pids-limit 256{mem or ' --memory 256m'} {w.image}")
    if level == "rootless":
        return f"{base}{mem} {w.image}    # as your own unprivileged user"
    if level == "sandbox":
        return f"{base} --isolation sandbox --cap-drop ALL{mem} {w.image}"
    if level == "microvm":
        return (f"isle vm template create {w.image} && {base} --isolation vm{mem} {w.image}")
    if level == "container-in-vm":
        return (f"isle vm create tenant1 --image {w.image}    # then, inside it: "
                f"isle run -d --cap-drop ALL --read-only {w.image}")
    return f"isle vm create NAME --image {w.image} && isle vm start NAME"


def advise(w: Workload, doc: dict[str, Any]) -> dict[str, Any]:
    level, fired, rejected = _choose(w, doc)
    notes: list[str] = []
    measured = _MEASURED[level]
    # the start budget: a level whose warm start is over budget moves down (with a warning)
    if w.start_budget_ms and level in ("microvm", "sandbox", "container-in-vm"):
        warm = _warm(doc, measured)
        if warm is not None and warm > w.start_budget_ms:
            notes.append(f"warning: {LEVEL_NAMES[level]} starts in {warm:.0f} ms here, over the "
                         f"{w.start_budget_ms:.0f} ms budget")
    reasons: list[str] = []
    r = _lv(doc, measured)
    if r:
        st = (r.get("start") or {}).get("exit_ms") or {}
        reasons.append(f"start here ({measured}): cold {st.get('cold')} ms, "
                       f"warm {st.get('warm')} ms"
                       + (f" (from the {r['measured_in']})" if r.get("measured_in") else ""))
        pss = _pss_mib(doc, measured)
        if pss is not None:
            reasons.append(f"idle PSS {pss:.1f} MiB per instance; "
                           f"~{_fits(doc, measured, w)} instances fit the bench's memory budget"
                           + (f" at {w.memory_mib:.0f} MiB each" if w.memory_mib else ""))
        sur = r.get("surface") or {}
        if sur:
            reasons.append(f"kernel seen inside: {sur.get('kernel')} "
                           f"({'shared with the host' if sur.get('shared_kernel') else 'its own'})"
                           "; "
                           f"{sur.get('syscalls_reachable')}/{sur.get('syscalls_tried')} notable "
                           f"syscalls reachable, {sur.get('capabilities')} capabilities")
        c = _lv(doc, "container")
        if c and measured != "container" and _warm(doc, "container"):
            ratio = (_warm(doc, measured) or 0) / (_warm(doc, "container") or 1)
            reasons.append(f"vs container: start {ratio:.1f}x")
    else:
        reasons.append(f"{measured} was not measured here: {_why_not(doc, measured)}")
    if w.instances > 1 and r:
        fits = _fits(doc, measured, w)
        if fits is not None and fits < w.instances:
            notes.append(f"warning: only ~{fits} instances fit the memory budget, "
                         f"{w.instances} wanted")
    rej = {k: v for k, v in rejected.items() if k != level}
    return {"recommendation": level, "name": LEVEL_NAMES[level], "rules": fired,
            "reasons": reasons, "rejected": rej, "notes": notes,
            "command": _command(level, w), "workload": asdict(w),
            "bench": {"created": doc.get("created"), "mode": doc.get("mode"),
                      "accelerator": (doc.get("host") or {}).get("accelerator")}}


def render_text(r: dict[str, Any]) -> str:
    lines = []
    if r.get("name") and r["name"] != LEVEL_NAMES[r["recommendation"]]:
        lines.append(f"[{r['name']}]")
    lines.append(f"recommendation: {LEVEL_NAMES[r['recommendation']]}")
    lines += [f"  because: {x}" for x in r["rules"]]
    lines += [f"  measured: {x}" for x in r["reasons"]]
    lines += [f"  {x}" for x in r["notes"]]
    lines.append("  rejected:")
    lines += [f"    {LEVEL_NAMES[k]}: {v}" for k, v in r["rejected"].items()]
    b = r.get("bench") or {}
    lines.append(f"  (numbers from isle bench {b.get('mode')} of {b.get('created')}, "
                 f"{b.get('accelerator')})")
    lines.append(f"  run: {r['command']}")
    return "\n".join(lines)


def load_workloads(path: str) -> list[tuple[str, dict[str, Any]]]:
    """A workload TOML file (keys at the top or under [workload]) or a compose file (one
    workload per service: its image, and x-isle-advise keys when present)."""
    from isle.errors import ConfigError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError("advise", f"{path}: {exc.strerror}") from None
    compose = path.endswith((".yml", ".yaml"))
    if compose or (b"services:" in data[:4096] and not path.endswith(".toml")):
        return _compose(path, data.decode(errors="replace"))
    import tomllib

    try:
        d = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("advise", f"{path}: not TOML: {exc}") from None
    if "workload" in d and isinstance(d["workload"], dict):
        d = d["workload"]
    return [(os.path.basename(path), d)]


def _compose(path: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    from isle.errors import ConfigError

    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("advise", f"{path}: not YAML: {exc}") from None
    else:
        doc = {"services": _mini_services(text)}
    svcs = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(svcs, dict) or not svcs:
        raise ConfigError("advise", f"{path}: no services in this compose file")
    out = []
    for name, s in svcs.items():
        s = s or {}
        w = dict(s.get("x-isle-advise") or {})
        if s.get("image"):
            w.setdefault("image", s["image"])
        if s.get("privileged"):
            w.setdefault("trust", "own")
        out.append((str(name), w))
    return out


def _mini_services(text: str) -> dict[str, dict[str, Any]]:
    """Service names and images from a compose file without a YAML library (block style)."""
    svcs: dict[str, dict[str, Any]] = {}
    cur, inside, svc_ind, adv_ind = None, False, -1, -1
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        ind = len(raw) - len(raw.lstrip())
        line = raw.strip()
        if ind == 0:
            inside = line.startswith("services:")
            continue
        if not inside:
            continue
        if svc_ind < 0:
            svc_ind = ind
        if adv_ind >= 0 and ind <= adv_ind:
            adv_ind = -1
        if ind == svc_ind and line.endswith(":"):
            cur = line[:-1].strip().strip("'\"")
            svcs[cur] = {}
        elif cur and adv_ind >= 0 and ind > adv_ind and ":" in line:
            k, _, v = line.partition(":")
            svcs[cur].setdefault("x-isle-advise", {})[k.strip()] = _scalar(v.strip())
        elif cur and ind > svc_ind and line == "x-isle-advise:":
            adv_ind = ind
        elif cur and ind > svc_ind and line.startswith("image:"):
            svcs[cur]["image"] = line.split(":", 1)[1].strip().strip("'\"")
    return svcs


def _scalar(v: str) -> Any:
    v = v.split(" #", 1)[0].strip()
    if v in ("true", "false"):
        return v == "true"
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v.strip("'\"")
