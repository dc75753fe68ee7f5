"""A recording fake of the engine's runtime seam (engine/runtimes.py), as youki's syscall fake.

It records every verb the engine calls and acts on real processes where a runtime would (kill
signals the pid it was told about), so the engine's lifecycle, refresh, restart and error paths
run without root, a monitor or an image. Capabilities are data, as in the real seam:

    fake = FakeRuntime(caps=Caps(signals_host_pid=False))
    eng = Engine(settings, runtime_for=fake.factory)
    ...
    assert ("kill", cid, 15, False) in fake.calls
"""

from __future__ import annotations

import os
import signal
from typing import Any

from isle.engine.runtimes import Caps, OciCli


class FakeRuntime(OciCli):
    name = "fake"

    def __init__(self, caps: Caps | None = None, *, states: dict[str, str] | None = None,
                 fail: dict[str, Exception] | None = None) -> None:
        super().__init__("/nonexistent/fake-runtime", "/nonexistent/root")
        self.caps = caps or Caps(signals_host_pid=True)
        self.calls: list[tuple[Any, ...]] = []
        #: what `state` answers per container id ("running", "created"...); absent: None
        self.states = dict(states or {})
        #: verb -> the exception that verb raises (after recording the call)
        self.fail = dict(fail or {})
        #: container id -> host pid that `kill` signals (a runtime knows its container's init)
        self.pids: dict[str, int] = {}

    def factory(self, settings: Any, opts: dict[str, Any]) -> FakeRuntime:
        self.calls.append(("for_record", opts.get("runtime", "")))
        return self

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls if c[0] != "for_record"]

    def _rec(self, *call: Any) -> None:
        self.calls.append(call)
        exc = self.fail.get(call[0])
        if exc is not None:
            raise exc

    def run(self, *args: str, timeout: float = 60, check: bool = True) -> Any:
        raise AssertionError(f"the fake runtime has no CLI: run{args}")

    def start(self, cid: str) -> None:
        self._rec("start", cid)

    def state(self, cid: str) -> dict[str, Any] | None:
        self._rec("state", cid)
        st = self.states.get(cid)
        return {"id": cid, "status": st} if st else None

    def kill(self, cid: str, sig: int, *, all_procs: bool = False) -> bool:
        self._rec("kill", cid, sig, all_procs)
        pid = self.pids.get(cid)
        if not pid:
            return False
        try:
            os.kill(pid, sig)
        except OSError:
            return False
        return True

    def delete(self, cid: str, *, force: bool = False) -> None:
        self._rec("delete", cid, force)

    def release(self, cid: str, *, running: bool) -> None:
        self._rec("release", cid, running)

    def pause(self, cid: str) -> None:
        self._rec("pause", cid)
        if cid in self.pids:
            os.kill(self.pids[cid], signal.SIGSTOP)

    def resume(self, cid: str) -> None:
        self._rec("resume", cid)
        if cid in self.pids:
            os.kill(self.pids[cid], signal.SIGCONT)

    def ps(self, cid: str) -> list[int]:
        self._rec("ps", cid)
        return [self.pids[cid]] if cid in self.pids else []

    def prepare_spec(self, settings: Any, spec: dict[str, Any], bundle: str,
                     image_id: str) -> None:
        self._rec("prepare_spec", bundle)


def fake_engine(tmp: Any, fake: FakeRuntime | None = None) -> Any:
    """An Engine over a private root under tmp whose every runtime is fake (a FakeRuntime)."""
    from isle.config import Settings
    from isle.engine.engine import Engine

    s = Settings(root=str(tmp / "root"), runroot=str(tmp / "run"), cache=str(tmp / "cache"),
                 runtime="isle-runtime", rootless=False)
    return Engine(s, runtime_for=(fake or FakeRuntime()).factory)
