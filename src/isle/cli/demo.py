"""`isle demo`: run busybox through the engine, printing each step (what ./quickstart shows)."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["run_demo"]


def _say(s: str) -> None:
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def run_demo(ctx: Any) -> int:
    from isle.engine.options import RunOptions

    eng = ctx.engine
    _say(f"isle demo: root={eng.s.root} runroot={eng.s.runroot}")
    img = eng.store.resolve("busybox")
    _say(f"1. image busybox:latest -> {img.id[:19]} ({len(img.layer_dirs)} layer(s), made offline)")
    t = time.monotonic()
    _say("2. isle run --rm busybox sh -c 'echo hello from $(hostname); id; show /proc/1/cmdline'")
    rep = eng.run(RunOptions(image="busybox", remove=True,
                             command=["sh", "-c", "echo hello from $(hostname); id; "
                                      "tr '\\0' ' ' </proc/1/cmdline; echo"]),
                  stdin_fd=None)
    _say(f"   exit code {rep.exit_code}, removed={rep.removed}, "
         f"{(time.monotonic() - t) * 1000:.0f} ms")
    _say("3. isle run -d busybox sleep 30; ps; stop; logs; rm")
    d = eng.run(RunOptions(image="busybox", detach=True, name="isle-demo-" + str(int(time.time())),
                           command=["sh", "-c", "trap 'echo got SIGTERM; exit 0' TERM; "
                                    "echo started; sleep 30 & wait"]))
    for r in eng.ps(all=False):
        if r.full_id == d.id:
            _say(f"   ps: {r.ID}  {r.Names}  {r.Status}")
    eng.stop(d.id, 1)
    rec = eng.get(d.id)
    _say(f"   stopped: state={rec.state} exit={rec.exit_code}")
    for stream, data in eng.logs(d.id):
        _say(f"   logs[{stream}]: {data.decode(errors='replace').rstrip()}")
    eng.rm(d.id)
    _say(f"   removed {d.id[:12]}; runtime: {rec.opts.get('runtime')}")
    _levels(eng)
    return 0


def _levels(eng: Any) -> None:
    """The same image at every isolation level that works here: start time and kernel seen."""
    import os
    import tempfile

    from isle.engine.options import RunOptions

    info = eng.info()
    levels = info.get("Isolation") or ["container"]
    _say(f"4. the same image at every level that works here: {', '.join(levels)}")
    for lv, why in (info.get("IsolationUnavailable") or {}).items():
        _say(f"   {lv}: not here ({why})")
    for lv in levels:
        t = time.monotonic()
        with tempfile.TemporaryFile() as out:
            rep = eng.run(RunOptions(image="busybox", remove=True, isolation=lv, network="none",
                                     command=["uname", "-r"]),
                          stdin_fd=None, stdout_fd=out.fileno(), stderr_fd=out.fileno())
            out.seek(0)
            kernel = out.read().decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        ms = (time.monotonic() - t) * 1000
        shared = "the host's" if kernel[0] == os.uname().release else "its own"
        _say(f"   {lv:<10} exit {rep.exit_code}  {ms:6.0f} ms  kernel {kernel[0]} ({shared})")
    _say("   (isle bench measures these levels properly; isle advise picks one)")
