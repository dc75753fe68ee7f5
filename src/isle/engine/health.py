"""Health checks (--health-cmd and friends): a small loop process per container that has one.

Only containers with a health check pay for it (~one idle Python process); the rest stay at one
conmon each. Results go to the record's extra["health"] in Docker's shape (Status, FailingStreak,
Log).
"""

from __future__ import annotations

import sys
import time

from isle.engine.options import Healthcheck, RunOptions
from isle.engine.quiet import suppress

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["healthcheck_of", "spawn_loop", "run_loop", "check_once"]


def healthcheck_of(opts: RunOptions, image_config: dict[str, Any]) -> Healthcheck | None:
    hc = opts.healthcheck
    if hc is None and image_config.get("Healthcheck"):
        h = image_config["Healthcheck"]
        hc = Healthcheck(test=list(h.get("Test") or []),
                         interval=(h.get("Interval") or 30e9) / 1e9,
                         timeout=(h.get("Timeout") or 30e9) / 1e9, retries=h.get("Retries") or 3,
                         start_period=(h.get("StartPeriod") or 0) / 1e9)
    if hc is None or not hc.test or hc.test[0] == "NONE":
        return None
    return hc


def spawn_loop(settings: Any, cid: str) -> None:
    from isle.sys import proc

    py = [sys.executable, "-m", "isle.cli.main"]
    if settings.rootless:  # the venv's python may not be the user's to run (see rootless.py)
        from isle.engine.rootless import python_argv

        py = python_argv("isle.cli.main")
    proc.spawn(py + ["--root", settings.root, "--runroot", settings.runroot, "container",
                     "healthcheck", "--loop", cid],
               stdin=proc.DEVNULL, stdout=proc.DEVNULL, stderr=proc.DEVNULL,
               start_new_session=True)


def _argv(hc: Healthcheck) -> list[str]:
    if hc.test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(hc.test[1:])]
    if hc.test[0] == "CMD":
        return list(hc.test[1:])
    return ["/bin/sh", "-c", " ".join(hc.test)]


def check_once(engine: Any, cid: str) -> str:
    """Run the check once, record the result; the new status (starting|healthy|unhealthy)."""
    rec = engine.get(cid)
    opts = RunOptions.from_dict(rec.opts)
    hc = healthcheck_of(opts, engine.image_config(rec))
    if hc is None:
        from isle.errors import ConfigError

        raise ConfigError("healthcheck", f"container {rec.name} has no health check")
    start = time.time()
    rc, out = engine.exec_capture(rec.id, _argv(hc), timeout=hc.timeout)
    end = time.time()
    rec = engine.get(cid)
    h = dict(rec.extra.get("health") or {"Status": "starting", "FailingStreak": 0, "Log": []})
    log = list(h.get("Log") or [])[-4:]
    log.append({"Start": _iso(start), "End": _iso(end), "ExitCode": rc, "Output": out[-4096:]})
    h["Log"] = log
    in_grace = time.time() - rec.started_at < hc.start_period
    if rc == 0:
        h["Status"], h["FailingStreak"] = "healthy", 0
    elif not in_grace:
        h["FailingStreak"] = int(h.get("FailingStreak", 0)) + 1
        if h["FailingStreak"] >= hc.retries:
            h["Status"] = "unhealthy"
    extra = dict(rec.extra)
    extra["health"] = h
    engine.db.update_container(rec.id, extra=extra, event=f"health_status: {h['Status']}")
    return str(h["Status"])


def run_loop(engine: Any, cid: str) -> None:
    rec = engine.get(cid)
    started = rec.started_at
    hc = healthcheck_of(RunOptions.from_dict(rec.opts), engine.image_config(rec))
    if hc is None:
        return
    while True:
        time.sleep(hc.interval)
        rec = engine.get(cid)
        if rec.state not in ("running", "paused") or rec.started_at != started:
            return
        if rec.state == "paused":
            continue
        with suppress(Exception):
            check_once(engine, cid)


def _iso(t: float) -> str:
    from isle.engine.views import iso

    return iso(t)
