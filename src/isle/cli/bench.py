"""`isle bench` (measure each isolation level here) and `isle advise` (pick one with numbers)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

__all__ = ["register"]


def _isle_argv(ctx: click.Context) -> list[str]:
    s = ctx.obj.settings
    exe = os.path.join(os.path.dirname(sys.executable), "isle")
    if not os.access(exe, os.X_OK):
        exe = "isle"
    return [exe, "--root", s.root, "--runroot", s.runroot]


def run_bench(ctx: click.Context, *, quick: bool, levels: list[str], image: str,
              budget: int, show_progress: bool, explicit: bool = False) -> dict[str, Any]:
    from isle.bench import measure, report

    s = ctx.obj.settings
    work = os.path.join(s.runroot, "bench")
    os.makedirs(work, mode=0o700, exist_ok=True)
    if not show_progress:
        doc = measure.run_bench(_isle_argv(ctx), image, quick=quick, levels=levels,
                                workdir=work, memory_budget=budget, explicit=explicit)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<40}"), BarColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=False) as prog:
            tasks: dict[str, Any] = {}

            def cb(msg: str, frac: float) -> None:
                lv = msg.split(":", 1)[0]
                if lv not in tasks:
                    tasks[lv] = prog.add_task(lv, total=5.0)
                prog.update(tasks[lv], description=msg, advance=frac)

            doc = measure.run_bench(_isle_argv(ctx), image, quick=quick, levels=levels,
                                    workdir=work, progress=cb, memory_budget=budget,
                                    explicit=explicit)
            for t in tasks.values():
                prog.update(t, completed=5.0)
    report.save(doc, s.root)
    return doc


def _size(v: str) -> int:
    from isle.errors import ConfigError

    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    v = v.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if v and v[-1] in units:
            return int(float(v[:-1]) * units[v[-1]])
        return int(v)
    except ValueError:
        raise ConfigError("--memory-budget", f"not a size: {v!r} (e.g. 2g, 512m)") from None


def register(cli: click.Group) -> None:
    from isle.bench.measure import LEVELS

    @cli.command("bench")
    @click.option("--quick", is_flag=True, help="Few rounds and small bounds (about a minute).")
    @click.option("--level", "levels", multiple=True, type=click.Choice(LEVELS),
                  help="Only these levels (repeatable); default: every level.")
    @click.option("--image", default="busybox", show_default=True,
                  help="The image run at every level (needs sh, echo, sleep).")
    @click.option("--memory-budget", default="", help="Budget for the density extrapolation "
                  "(default: MemAvailable now), e.g. 4g.")
    @click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                  show_default=True, help="json prints the results document on stdout.")
    @click.option("--plot", "plot_dir", default="", metavar="DIR",
                  help="Write bench.png and bench.svg into DIR.")
    @click.option("--html", "html_path", default="", metavar="FILE",
                  help="Write one self-contained HTML report (plots and table).")
    @click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
    @click.pass_context
    def bench_cmd(ctx: click.Context, quick: bool, levels: tuple[str, ...], image: str,
                  memory_budget: str, fmt: str, plot_dir: str, html_path: str,
                  no_progress: bool) -> None:
        """Run the same image at each isolation level and measure it on this host.

        Levels: native (baseline), container, sandbox (gVisor), microvm (cold), microvm-template
        (restored from `isle vm template`), os-vm. Start (first output, exit; cold, warm), PSS per
        idle instance and density (fit shown), size on disk, CPU, syscall latency, fio, network
        (iperf3, TCP request/response between two instances), isolation surface. Results are
        saved as <root>/bench/latest.json (`isle advise` reads them). The microvm-template
        level makes a template of the image once (`isle vm template create --network none
        IMAGE`) and keeps it; os-vm runs in --quick only when named with --level."""
        from isle.bench import report

        lv = list(levels) or [x for x in LEVELS]
        doc = run_bench(ctx, quick=quick, levels=lv, image=image,
                        budget=_size(memory_budget) if memory_budget else 0,
                        # on stderr: with --format json too when a person watches it
                        show_progress=not no_progress and (fmt == "table"
                                                           or sys.stderr.isatty()),
                        explicit=bool(levels))
        png = None
        if plot_dir or html_path:
            import tempfile

            d = plot_dir or tempfile.mkdtemp(prefix="isle-bench-")
            png = report.plots(doc, d, "png")[0]
            if plot_dir:
                report.plots(doc, d, "svg")
        if html_path:
            with open(html_path, "w") as f:
                f.write(report.render_html(doc, png))
            if not plot_dir and png:
                import shutil

                shutil.rmtree(os.path.dirname(png), ignore_errors=True)
        if fmt == "json":
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        else:
            sys.stdout.write(report.render_table(doc) + "\n")

    @cli.command("advise")
    @click.argument("workload", required=False)
    @click.option("--trust", type=click.Choice(["own", "third-party", "untrusted"]),
                  help="Whose code it runs: your own, third-party, or untrusted multi-tenant.")
    @click.option("--own-kernel", is_flag=True, default=None,
                  help="Needs its own kernel (modules, a kernel version, sysctls of its own).")
    @click.option("--other-os", is_flag=True, default=None, help="Needs another OS.")
    @click.option("--legacy", is_flag=True, default=None,
                  help="A legacy full-OS workload (init, many services).")
    @click.option("--start-budget-ms", type=float, help="Start must take at most this.")
    @click.option("--instances", type=int, help="How many instances at once.")
    @click.option("--memory-mib", type=float, help="Memory per instance (MiB).")
    @click.option("--io", type=click.Choice(["low", "high"]), help="File I/O intensity.")
    @click.option("--network", "net", type=click.Choice(["low", "high"]),
                  help="Network intensity.")
    @click.option("--lifetime", type=click.Choice(["long-running", "batch"]),
                  help="A long-running service or a batch job that exits.")
    @click.option("--image", default="", help="The image the command line runs.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                  show_default=True, help="json prints the advice as JSON on stdout.")
    @click.pass_context
    def advise_cmd(ctx: click.Context, /, workload: str | None, fmt: str, image: str,
                   **flags: Any) -> None:
        """Recommend an isolation level for a workload, with this host's measured numbers.

        WORKLOAD is a TOML file (keys in docs/advise.md) or a compose file (each service is
        advised); flags set or override the same keys. Without a saved `isle bench`, a quick one
        runs first."""
        from isle.bench import advise, report

        workloads = advise.load_workloads(workload) if workload else [("workload", {})]
        over = {k.replace("_", "-"): v for k, v in flags.items() if v is not None}
        if "net" in flags and flags["net"] is not None:
            over["network"] = over.pop("net")
        doc = report.load(ctx.obj.settings.root)
        if doc is None:
            click.echo("no saved `isle bench` here: running `isle bench --quick` first",
                       err=True)
            doc = run_bench(ctx, quick=True, levels=list(LEVELS), image="busybox", budget=0,
                            show_progress=fmt == "text")
        out = []
        for name, w in workloads:
            w = {**w, **over}
            if image:
                w["image"] = image
            out.append({"name": name, **advise.advise(advise.Workload.from_dict(w), doc)})
        if fmt == "json":
            sys.stdout.write(json.dumps(out if workload and len(out) > 1 else out[0], indent=1)
                             + "\n")
        else:
            sys.stdout.write("\n\n".join(advise.render_text(r) for r in out) + "\n")
