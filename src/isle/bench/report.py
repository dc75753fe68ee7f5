"""`isle bench` results: the table, the comparison with the literature, plots and one HTML file.

The results document (JSON, saved as <root>/bench/latest.json):

    {"version": 1, "created", "mode": "quick"|"full", "image", "elapsed_s",
     "host": {cpu, ncpu, accelerator: KVM|TCG, accelerator_reason, kernel, os, cgroup_mode, ...},
     "plan": {rounds and sizes},
     "levels": {LEVEL: {"ok": bool, "reason": "" | why skipped/failed,
                        "start": {"first_output_ms": {"cold", "warm"}, "exit_ms": {...}, "rounds"},
                        "density": {"pss_bytes_per_instance", "fit": {...}, "instances_in_budget",
                                    "create_per_second", ...},
                        "size": {"image_bytes", "total_bytes", ...}, "cpu_ms",
                        "syscall_ns": {getpid, open_close, stat}, "fio": {...},
                        "network": {"rr_us", "iperf3_gbit_s"}, "surface": {...}}},
     "literature": [notes]}
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any

__all__ = ["literature", "rows", "render_table", "plots", "render_html", "save", "load"]

METHODS = (
    "start: `isle run --rm --network none IMAGE echo ready` (native: /bin/echo), time to its first "
    "byte of output and to its exit; cold = the first round, warm = median of the others. "
    "memory: PSS (smaps_rollup) of every process in an idle instance's cgroup (`sleep 3600`), "
    "instances started one by one up to a bound; total PSS(n) fitted by least squares "
    "a + b*n and extrapolated to the memory budget. CPU: the same static probe (an integer "
    "hash, 1000 steps x N; the fastest of 5 slices x 5) at every level. Syscalls: getpid, "
    "open+close, stat loops, median of 5. fio: randrw 4k psync on a host directory mounted "
    "into the instance. Network: a TCP 64-byte "
    "request/response loop (median) and iperf3 between two instances on one isle bridge.")


def _g(d: dict[str, Any], *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)  # type: ignore[assignment]
    return d


def literature(doc: dict[str, Any]) -> list[str]:
    """Felter et al. (ISPASS 2015): containers ~ native; VMs pay on I/O and latency. Where this
    host's numbers point the same way, and where (and why) they do not."""
    lv = doc.get("levels", {})
    notes = ["Felter et al., 'An Updated Performance Comparison of Virtual Machines and Linux "
             "Containers' (ISPASS 2015): containers perform about as native; KVM VMs add "
             "overhead to I/O and latency, little to CPU-bound work."]
    acc = _g(doc, "host", "accelerator")
    nat_cpu = _g(lv, "native", "cpu_ms")
    for name in ("container", "sandbox", "microvm"):
        c = _g(lv, name, "cpu_ms")
        if nat_cpu and c and isinstance(c, (int, float)) and not math.isnan(c):
            r = c / nat_cpu
            same = r < 1.3
            notes.append(f"CPU {name}/native = {r:.2f}x: " + (
                "faster than native: noise (this host was busy during one of the runs; the "
                "full mode's longer kernel evens it out)" if r < 0.8 else
                "as the paper (CPU-bound work pays little)" if same else
                "differs from the paper" + (": TCG emulates every guest instruction (no KVM "
                                            "here)" if name == "microvm" and acc == "TCG" else "")))
    nat = _g(lv, "native", "syscall_ns", "getpid")
    for name in ("container", "sandbox", "microvm"):
        s = _g(lv, name, "syscall_ns", "getpid")
        if nat and s and not math.isnan(s):
            r = s / nat
            why = {"container": "seccomp's filter runs on each call",
                   "sandbox": "gVisor's ptrace platform stops each syscall in the sentry",
                   "microvm": "TCG emulation" if acc == "TCG" else "guest kernel"}[name]
            notes.append(f"getpid {name}/native = {r:.1f}x ({why})")
    nat_io = _g(lv, "native", "fio", "read_iops")
    for name in ("container", "sandbox", "microvm"):
        io = _g(lv, name, "fio", "read_iops")
        if nat_io and io:
            r = io / nat_io
            notes.append(f"fio randrw on a host directory {name}/native = {r:.2f}x: " + (
                "as the paper (containers ~ native)" if name == "container" and r > 0.8 else
                "as the paper (a VM pays on I/O: virtiofs" + (" under TCG)" if acc == "TCG"
                                                              else ")")
                if name == "microvm" and r < 0.8 else
                "gVisor's gofer serves each file operation" if name == "sandbox" else
                "differs from the paper"))
    c_rr, v_rr = _g(lv, "container", "network", "rr_us"), _g(lv, "microvm", "network", "rr_us")
    if c_rr and v_rr and not math.isnan(c_rr) and not math.isnan(v_rr):
        notes.append(f"request/response latency microVM/container = {v_rr / c_rr:.1f}x: "
                     + ("the paper's direction (VMs pay on latency)" if v_rr > c_rr else
                        "differs from the paper"))
    if acc == "TCG":
        notes.append("This host has no usable KVM: VM numbers are TCG emulation and much worse "
                     "than the paper's KVM; sandbox uses gVisor's ptrace platform (slowest).")
    return notes


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _mib(v: Any) -> str:
    return "-" if not v else f"{v / 1048576:.1f}"


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


COLUMNS = ("level", "start cold ms", "start warm ms", "PSS MiB", "fit in budget", "create/s",
           "size MiB", "CPU ms", "getpid ns", "stat ns", "fio r IOPS", "RR us", "iperf Gb/s",
           "kernel", "caps", "syscalls")


def rows(doc: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, r in doc.get("levels", {}).items():
        if not r.get("ok"):
            out.append([name, f"skipped: {r.get('reason', '')}"[:90]] + [""] * (len(COLUMNS) - 2))
            continue
        s = r.get("surface") or {}
        out.append([
            name, _ms(_g(r, "start", "exit_ms", "cold")), _ms(_g(r, "start", "exit_ms", "warm")),
            _mib(_g(r, "density", "pss_bytes_per_instance")),
            _num(_g(r, "density", "instances_in_budget")),
            _num(_g(r, "density", "create_per_second"), "{:.1f}"),
            _mib(_g(r, "size", "total_bytes")), _num(r.get("cpu_ms"), "{:.1f}"),
            _num(_g(r, "syscall_ns", "getpid")), _num(_g(r, "syscall_ns", "stat")),
            _num(_g(r, "fio", "read_iops")), _num(_g(r, "network", "rr_us"), "{:.0f}"),
            _num(_g(r, "network", "iperf3_gbit_s"), "{:.2f}"),
            ("" if not s else
             ("shared " if s.get("shared_kernel") else "own ") + s.get("kernel", "")),
            _num(s.get("capabilities")) if s else "-",
            f"{s.get('syscalls_reachable')}/{s.get('syscalls_tried')}" if s else "-"])
    return out


def render_table(doc: dict[str, Any]) -> str:
    """The table as plain text (rich when on a terminal is the CLI's business)."""
    t = [list(COLUMNS)] + rows(doc)
    widths = [max(len(r[i]) for r in t if len(r) > i and not r[1].startswith("skipped")) for i in
              range(len(COLUMNS))]
    lines = []
    for r in t:
        if r[1].startswith("skipped"):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
    h = doc.get("host", {})
    head = (f"isle bench ({doc.get('mode')}, image {doc.get('image')}, "
            f"{doc.get('elapsed_s')} s) on {h.get('cpu')} x{h.get('ncpu')}, "
            f"{h.get('accelerator')} ({h.get('accelerator_reason')}), "
            f"kernel {h.get('kernel')}, cgroups {h.get('cgroup_mode')}")
    fit = []
    for name, lv in doc.get("levels", {}).items():
        f = _g(lv, "density", "fit")
        if lv.get("ok") and f:
            fit.append(f"  {name}: total PSS = {f['intercept_bytes'] / 1048576:.1f} MiB + "
                       f"{f['slope_bytes'] / 1048576:.2f} MiB x n (measured up to "
                       f"{lv['density']['instances_measured']}; budget "
                       f"{lv['density']['memory_budget_bytes'] / 1048576:.0f} MiB)")
    plan = doc.get("plan", {})
    took = [f"{name} " + ", ".join(f"{k} {v:.1f}" for k, v in lv["phase_s"].items())
            for name, lv in doc.get("levels", {}).items() if lv.get("phase_s")]
    return "\n".join([head, "", *lines, "", "density fit:", *fit, "",
                      f"methods: {METHODS}",
                      f"rounds: start {plan.get('start_rounds')}, density bound "
                      f"{plan.get('density_max')}",
                      f"sizes: CPU {plan.get('cpu_rounds')} x1000 steps, {plan.get('sys_calls')} "
                      f"calls per syscall loop, fio {plan.get('fio_seconds')} s on "
                      f"{plan.get('fio_size')}, iperf3 {plan.get('net_seconds')} s, "
                      f"{plan.get('rr_count')} request/response round trips",
                      *(["time per phase (s): " + "; ".join(took)] if took else []), "",
                      "compared with the literature:",
                      *("  " + n for n in doc.get("literature", []))])


def plots(doc: dict[str, Any], out_dir: str, fmt: str = "png") -> list[str]:
    """Bar charts (start, memory per instance, CPU, syscall latency) and the density fit; the
    files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    ok = {k: v for k, v in doc.get("levels", {}).items() if v.get("ok")}
    names = list(ok)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels = [
        ("start to exit, warm (ms, log)", [_g(ok[n], "start", "exit_ms", "warm")
                                           for n in names], True),
        ("start to exit, cold (ms, log)", [_g(ok[n], "start", "exit_ms", "cold")
                                           for n in names], True),
        ("PSS per idle instance (MiB)",
         [(_g(ok[n], "density", "pss_bytes_per_instance") or 0) / 1048576 for n in names], False),
        ("CPU kernel (ms)", [ok[n].get("cpu_ms") for n in names], False),
        ("getpid (ns, log)", [_g(ok[n], "syscall_ns", "getpid") for n in names], True),
    ]
    for ax, (title, vals, log) in zip(axes.flat, panels, strict=False):
        good = [(n, v) for n, v in zip(names, vals, strict=False) if v is not None
                and not (isinstance(v, float) and math.isnan(v))]
        xs, vs = [n for n, _ in good], [v for _, v in good]
        ax.bar(xs, vs, color="#4a7ab5")
        ax.set_title(title, fontsize=10)
        if log and vs and min(vs) > 0:
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax = axes.flat[5]
    for n in names:
        d = ok[n].get("density") or {}
        samples = d.get("pss_samples") or []
        if not samples:
            continue
        totals = [sum(samples[:i + 1]) / 1048576 for i in range(len(samples))]
        xs = list(range(1, len(totals) + 1))
        line = ax.plot(xs, totals, "o", label=n)[0]
        f = d.get("fit") or {}
        xe = max(len(totals) * 4, 8)
        ax.plot([1, xe], [(f.get("intercept_bytes", 0) + f.get("slope_bytes", 0) * x) / 1048576
                          for x in (1, xe)], "--", color=line.get_color())
    ax.set_title("total PSS vs instances (fit, extrapolated)", fontsize=10)
    ax.set_xlabel("instances")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=7)
    h = doc.get("host", {})
    fig.suptitle(f"isle bench ({doc.get('mode')}) - {h.get('accelerator')}, "
                 f"kernel {h.get('kernel')}", fontsize=11)
    fig.tight_layout()
    path = os.path.join(out_dir, f"bench.{fmt}")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [path]


def render_html(doc: dict[str, Any], png_path: str | None = None) -> str:
    """One self-contained HTML page: the plot (inline PNG), the table, methods, literature."""
    import base64

    img = ""
    if png_path and os.path.exists(png_path):
        with open(png_path, "rb") as f:
            b64 = base64.b64encode(f.read()).decode()
        img = f'<img alt="isle bench plots" src="data:image/png;base64,{b64}">'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows(doc))
    lit = "".join(f"<li>{html.escape(n)}</li>" for n in doc.get("literature", []))
    host = html.escape(json.dumps(doc.get("host", {}), indent=1))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>isle bench</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            f"td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style></head><body>"
            f"<h1>isle bench ({html.escape(str(doc.get('mode')))})</h1>{img}"
            f"<table><tr>{head}</tr>{body}</table><h2>Methods</h2><p>{html.escape(METHODS)}</p>"
            f"<h2>Compared with the literature</h2><ul>{lit}</ul><h2>Host</h2><pre>{host}</pre>"
            f"</body></html>")


def save(doc: dict[str, Any], root: str) -> str:
    """<root>/bench/latest.json (and a timestamped copy of this run alone); its path. A run of
    some levels (--level) keeps the other levels of the previous latest.json from the same host
    and image, each marked with the run that measured it ("measured_in"): `isle advise` reads
    every level's last numbers, not only the last run's."""
    from isle.sys.fs import atomic_write

    d = os.path.join(root, "bench")
    os.makedirs(d, exist_ok=True)
    stamp = doc.get("created", "").replace(":", "")
    atomic_write(os.path.join(d, f"bench-{stamp}.json"),
                 json.dumps(doc, indent=1, sort_keys=True).encode())
    path = os.path.join(d, "latest.json")
    atomic_write(path, json.dumps(merge_previous(load(root), doc), indent=1,
                                  sort_keys=True).encode())
    return path


def merge_previous(prev: dict[str, Any] | None, doc: dict[str, Any]) -> dict[str, Any]:
    """doc plus the levels of prev it did not measure (same host and image only)."""
    def key(x: dict[str, Any]) -> tuple[Any, ...]:
        h = x.get("host") or {}
        return (h.get("cpu"), h.get("kernel"), h.get("accelerator"), x.get("image"))

    if not prev or key(prev) != key(doc):
        return doc
    levels = dict(doc.get("levels") or {})
    for name, r in (prev.get("levels") or {}).items():
        if name not in levels and isinstance(r, dict):
            levels[name] = {**r, "measured_in": r.get("measured_in")
                            or f"{prev.get('mode', '?')} run of {prev.get('created', '?')}"}
    return {**doc, "levels": levels}


def load(root: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(root, "bench", "latest.json")) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None
