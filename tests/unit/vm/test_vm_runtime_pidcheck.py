"""The VM runtime's state checks a pid together with its start time: a recycled pid (same number,
another process) is neither 'alive' as ours nor signalled by delete --force."""

from __future__ import annotations

import signal
import subprocess
import sys

from isle.runtime.vm import state as st


def test_pid_alive_checks_start_time() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = st.starttime(p.pid)
        assert start is not None
        assert st.pid_alive(p.pid, start)
        assert st.pid_alive(p.pid)  # no start time recorded (an old state.json): pid only
        assert not st.pid_alive(p.pid, start + 1)  # same number, another process
        assert not st.signal_if_same(p.pid, start + 1, signal.SIGKILL)
        assert p.poll() is None  # not signalled
        assert st.signal_if_same(p.pid, start, signal.SIGKILL)
        assert p.wait(5) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not st.pid_alive(p.pid, start)
    assert not st.pid_alive(0) and not st.pid_alive(-1)


def test_load_marks_a_recycled_monitor_stopped(tmp_path) -> None:
    root = str(tmp_path)
    st.create_dir(root, "c1")
    s = st.State(id="c1", bundle="/b", status="running", pid=1,
                 pid_start=(st.starttime(1) or 0) + 12345)
    st.save(root, s)
    assert st.load(root, "c1").status == "stopped"  # pid 1 runs, but it is not our monitor
    s.pid_start = st.starttime(1)
    st.save(root, s)
    assert st.load(root, "c1").status == "running"
