"""Restart policies, health checks, cp/diff/commit/export, stats/top, rename/pause, events, prune."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

pytestmark = [pytest.mark.root]


def _until(fn, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_restart_on_failure_counts_and_stops(isle):
    cid = isle("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3").stdout.strip()

    def done():
        i = isle.inspect(cid)
        return i if i["RestartCount"] == 2 and i["State"]["Status"] == "exited" else None
    info = _until(done, 30)
    assert info["State"]["ExitCode"] == 3
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    time.sleep(0.5)  # no further restarts
    assert isle.inspect(cid)["RestartCount"] == 2


def test_restart_always_until_stopped(isle):
    cid = isle("run", "-d", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2").stdout.strip()
    _until(lambda: isle.inspect(cid)["RestartCount"] >= 2, 30)
    isle("stop", "-t", "1", cid)
    n = isle.inspect(cid)["RestartCount"]
    time.sleep(1.0)
    info = isle.inspect(cid)
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == n


def test_health_check(isle):
    isle("run", "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "0.2s",
         "--health-retries", "1", "busybox", "sh", "-c", "sleep 0.7; touch /tmp/ok; sleep 30")
    _until(lambda: isle.inspect("hc")["State"]["Health"]["Status"] == "unhealthy")
    _until(lambda: isle.inspect("hc")["State"]["Health"]["Status"] == "healthy")
    assert "(healthy)" in isle("ps", "--format", "{{.Status}}").stdout
    isle("rm", "-f", "hc")
    time.sleep(0.5)  # the loop notices and exits (the leak check counts our children)


def test_cp_diff_commit_export(isle, tmp_path):
    isle("run", "-d", "--name", "cc", "busybox", "sh", "-c",
         "echo made > /new.txt; rm /etc/group; sleep 30")
    time.sleep(0.3)
    (tmp_path / "h.txt").write_text("from host\n")
    isle("cp", str(tmp_path / "h.txt"), "cc:/root/")
    assert isle("exec", "cc", "cat", "/root/h.txt").stdout == "from host\n"
    isle("cp", "cc:/new.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "made\n"
    assert isle("cp", "cc:/nope", str(tmp_path), check=False).returncode == 1
    diff = isle("diff", "cc").stdout.splitlines()
    assert "A /new.txt" in diff and "D /etc/group" in diff and "A /root/h.txt" in diff
    assert not any("resolv.conf" in d for d in diff)
    img = isle("commit", "-c", 'CMD ["cat", "/new.txt"]', "cc", "mine:v1").stdout.strip()
    assert img.startswith("sha256:")
    assert isle("run", "--rm", "mine:v1").stdout == "made\n"
    data = isle.argv("export", "cc")
    import subprocess

    tar = subprocess.run(data, capture_output=True, env=isle.env, timeout=60).stdout
    names = tarfile.open(fileobj=io.BytesIO(tar)).getnames()
    assert any(n.endswith("new.txt") for n in names) and not any(n.endswith("etc/group") for n in names)
    isle("rm", "-f", "cc")
    isle("rmi", "mine:v1", check=False)


def test_stats_top_pause_rename_events_prune(isle):
    isle("run", "-d", "--name", "s1", "-m", "64m", "busybox", "sleep", "30")
    st = json.loads(isle("stats", "--no-stream", "--format", "json", "s1").stdout)
    assert st["Name"] == "s1" and st["MemLimit"] == 64 << 20 and st["PIDs"] == 1
    top = isle("top", "s1").stdout
    assert "sleep 30" in top
    isle("pause", "s1")
    assert isle.inspect("s1")["State"]["Status"] == "paused"
    assert isle("exec", "s1", "true", check=False).returncode == 1
    isle("unpause", "s1")
    isle("rename", "s1", "s2")
    assert isle.inspect("s2")["Name"] == "/s2"
    isle("create", "--name", "other", "busybox", "true")
    assert isle("rename", "s2", "other", check=False).returncode == 1
    ev = [json.loads(x) for x in isle("events", "--since", "1m", "--until", "0s", "--format",
                                       "json").stdout.splitlines()]
    assert {"create", "start", "pause", "unpause", "rename"} <= {e["Action"] for e in ev}
    out = isle("container", "prune", "-f").stdout
    assert "Deleted Containers" in out
    assert isle("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["s2"]
    isle("rm", "-f", "s2")


@pytest.mark.netns
def test_published_port_through_bridge(isle):
    import urllib.request

    isle("run", "-d", "--name", "web", "-p", "127.0.0.1::80", "busybox", "httpd", "-f", "-p", "80",
         "-h", "/etc")
    hostport = isle("port", "web", "80").stdout.strip()
    assert hostport.startswith("127.0.0.1:")
    info = isle.inspect("web")
    assert info["NetworkSettings"]["IPAddress"]
    body = _until(lambda: _get(f"http://{hostport}/hostname"))
    assert body.strip() == info["Id"][:12]
    isle("rm", "-f", "web")
    cp = isle("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert cp.returncode == 125 and "nosuchnet" in cp.stderr
    cp = isle("run", "--rm", "--network", "none", "-p", "80", "busybox", "true", check=False)
    assert cp.returncode == 125
    del urllib


def _get(url):
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None


def test_logs_follow_tail_since(isle):
    import subprocess

    isle("run", "-d", "--name", "lg", "busybox", "sh", "-c",
         "for i in 1 2 3; do echo line$i; done; sleep 1; echo late; echo err >&2")
    time.sleep(0.3)
    assert isle("logs", "--tail", "2", "lg").stdout == "line2\nline3\n"
    assert isle("logs", "--since", "1h", "lg").stdout.startswith("line1\n")
    assert isle("logs", "--since", "2099-01-01T00:00:00Z", "lg").stdout == ""
    ts = isle("logs", "-t", "--tail", "1", "lg").stdout
    assert ts.split(" ", 1)[1] == "line3\n" and ts[:4].isdigit()
    f = subprocess.run(isle.argv("logs", "-f", "lg"), capture_output=True, text=True, timeout=20,
                       env=isle.env)  # returns once the container has stopped
    assert f.stdout == "line1\nline2\nline3\nlate\n" and f.stderr == "err\n"
    assert isle.inspect("lg")["State"]["Status"] == "exited"
    isle("rm", "lg")


def test_exec_tty_detach_and_prunes(isle, tmp_path):
    import shlex
    import shutil
    import subprocess

    isle("run", "-d", "--name", "ex", "busybox", "sleep", "30")
    if shutil.which("script"):
        cmd = shlex.join(isle.argv("exec", "-t", "ex", "sh", "-c", "test -t 0 && echo tty"))
        out = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                             timeout=30, env=isle.env).stdout
        assert "tty" in out
    isle("exec", "-d", "ex", "sh", "-c", "echo bg > /tmp/bg")
    time.sleep(0.3)
    assert isle("exec", "ex", "cat", "/tmp/bg").stdout == "bg\n"
    isle("rm", "-f", "ex")
    isle("volume", "create", "keepme")
    isle("create", "-v", "/anon", "busybox", "true")
    out = isle("system", "prune", "-f", "--volumes").stdout
    assert "Deleted Containers" in out
    assert isle("ps", "-aq").stdout == ""
    assert isle("volume", "ls", "-q").stdout.split() == ["keepme"]  # named volumes stay
    assert isle("volume", "prune", "-f", "-a").stdout.count("keepme") == 1
    assert isle("volume", "ls", "-q").stdout == ""
