"""Rootless ``isle build`` (review issue 9), as a real unprivileged user made by the test: the
build runs as root in a user namespace over the user's /etc/subuid and /etc/subgid ranges
(engine/buildns.py), so COPY --chown and RUN's chown give files their owners, RUN's changes are
captured by an overlay, and the image lands in the user's own store. What the user must NOT get:
ids beyond its ranges, a host file through the build, anything left behind."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.security.test_rootless import ISLE, ruser, user  # noqa: F401 - the throwaway user

pytestmark = [pytest.mark.root]


def _ctx(user, name: str, files: dict[str, str]) -> str:
    ctx = user.home / name
    ctx.mkdir(exist_ok=True)
    for rel, text in files.items():
        (ctx / rel).write_text(text)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(ctx)], check=True)
    return str(ctx)


def _mounts_of(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f if path in ln]


CONTAINERFILE = """\
FROM busybox AS base
RUN mkdir -p /opt/base && echo from-base > /opt/base/b && chown -R 77:88 /opt/base

FROM busybox
COPY --chown=1000:1000 app.txt /app/app.txt
RUN echo 'alice:x:2000:2000::/home/alice:/bin/sh' >> /etc/passwd && \
    echo 'alice:x:2000:' >> /etc/group && echo made > /file && chown 123 /file
WORKDIR /srv/wdir
RUN touch here && chown alice:alice here
COPY --from=base /opt/base /copied
COPY --from=base --chown=alice /opt/base/b /owned-b
RUN rm /bin/true
"""


@pytest.mark.timeout(400)
def test_rootless_build_owners_run_and_nothing_left(user):
    ctx = _ctx(user, "ctx-owners", {"Containerfile": CONTAINERFILE, "app.txt": "app\n"})
    cp = user.isle("build", "-t", "mine:owners", ctx, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # the image is in the user's own store, every file of it the user's on the host
    state = user.data / "isle"
    listed = user.isle("images").stdout
    assert any(ln.split()[:2] == ["mine", "owners"] for ln in listed.splitlines()), listed
    # run it as the same user: the owners the build gave
    cp = user.isle("run", "--rm", "--network", "none", "mine:owners", "sh", "-c",
                   "pwd; stat -c '%n %u:%g' /app/app.txt /file /srv/wdir/here /copied/b /owned-b;"
                   " cat /app/app.txt /file /copied/b; id -u alice; ls /bin/true || echo gone",
                   timeout=120)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.splitlines()
    assert out[0] == "/srv/wdir"
    # COPY --from without --chown gives root, as Docker's (the stage's 77:88 is not kept)
    assert out[1:6] == ["/app/app.txt 1000:1000", "/file 123:0", "/srv/wdir/here 2000:2000",
                        "/copied/b 0:0", "/owned-b 2000:2000"], out
    assert out[6:9] == ["app", "made", "from-base"]
    assert out[9] == "2000"
    assert out[-1] == "gone"
    # the layer blobs carry the owners as the image says them (what push/save give)
    owners = {}
    for top, _dirs, files in os.walk(state):
        for n in files:
            p = os.path.join(top, n)
            try:
                with tarfile.open(p, "r:*") as t:
                    for m in t.getmembers():
                        owners[m.name.lstrip("./")] = (m.uid, m.gid)
            except (tarfile.TarError, OSError, EOFError):
                continue
    assert owners.get("app/app.txt") == (1000, 1000)
    assert owners.get("file") == (123, 0)
    # nothing of the build left: no step container, no process, no mount
    assert user.isle("ps", "-aq").stdout.split() == []
    assert not _mounts_of(str(user.home))
    # --rm removed the container's copy, files of subordinate ids too
    assert not os.listdir(state / "containers"), os.listdir(state / "containers")
    cp = user.isle("rmi", "mine:owners")
    assert cp.returncode == 0, cp.stderr
    cp = user.isle("image", "prune", "-a", "-f")
    assert cp.returncode == 0, cp.stderr
    # every layer the build made (its stage's too) is gone: none was left half-deleted
    layers = state / "images" / "layers"
    left = [h for h in os.listdir(layers) if (layers / h / "owners").exists()
            or not (layers / h / "diff").exists()] if layers.exists() else []
    assert not left, left


@pytest.mark.timeout(300)
def test_rootless_build_cannot_reach_beyond_its_ranges(user):
    """A RUN step is root only over the user's ranges: a chown to an id outside them fails,
    the ids it has are the user's 65537; a root-only host file stays unread through COPY of a
    context symlink, a root-owned host canary unwritten, and nothing is left."""
    secret = user.base / "secret"
    secret.write_text("host-secret\n")
    os.chmod(secret, 0o600)
    canary = user.home / "canary"
    canary.write_text("untouched\n")
    os.chown(canary, 0, 0)
    os.chmod(canary, 0o644)
    cf = ("FROM busybox\n"
          "RUN touch /x && ! chown 70000 /x && ! chown 65537 /x && chown 65536 /x\n"
          "RUN awk '{n += $3} END {print \"mapped\", n}' /proc/self/uid_map /proc/self/gid_map\n")
    ctx = _ctx(user, "ctx-range", {"Containerfile": cf})
    cp = user.isle("build", "-t", "range", ctx, timeout=240)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "mapped 131074" in cp.stderr + cp.stdout, cp.stderr  # 65537 uids + 65537 gids, no more
    # cgroup v1 here: no cgroup for RUN steps, said once, nothing made in the host's hierarchies
    assert (cp.stderr + cp.stdout).count("without a cgroup") == 1, cp.stderr
    assert not [p for p in Path("/sys/fs/cgroup").glob("*/isle-build-*")]
    ctx2 = _ctx(user, "ctx-secret", {"Containerfile": "FROM busybox\nCOPY secret /s\n"})
    os.symlink(str(secret), os.path.join(ctx2, "secret"))
    os.lchown(os.path.join(ctx2, "secret"), user.uid, user.gid)
    cp = user.isle("build", "-t", "leak", ctx2, timeout=240)
    assert cp.returncode != 0
    assert "host-secret" not in cp.stdout + cp.stderr
    for top, _dirs, files in os.walk(user.data / "isle"):
        for n in files:
            with open(os.path.join(top, n), "rb") as f:
                assert b"host-secret" not in f.read(), n
    cf3 = "FROM busybox\nCOPY canary /canary\nRUN echo pwned > /canary\n"
    ctx3 = _ctx(user, "ctx-canary", {"Containerfile": cf3})
    os.symlink(str(canary), os.path.join(ctx3, "canary"))
    user.isle("build", "-t", "canary", ctx3, timeout=240)
    assert canary.read_text() == "untouched\n" and os.stat(canary).st_uid == 0
    assert user.isle("ps", "-aq").stdout.split() == []
    assert not _mounts_of(str(user.home))
    for ref in ("range", "canary"):
        user.isle("rmi", ref)


@pytest.mark.timeout(200)
def test_rootless_build_failing_step_leaves_nothing(user):
    ctx = _ctx(user, "ctx-fail", {"Containerfile": "FROM busybox\nRUN echo x > /y && exit 3\n"})
    user.isle("run", "--rm", "--network", "none", "busybox", "true")  # made offline, first use
    before = user.isle("images", "-q").stdout.split()
    cp = user.isle("build", "-t", "bad", ctx, timeout=150)
    assert cp.returncode != 0
    assert "exit" in (cp.stderr + cp.stdout).lower() or "3" in cp.stderr, cp.stderr
    assert user.isle("images", "-q").stdout.split() == before
    assert user.isle("ps", "-aq").stdout.split() == []
    assert not _mounts_of(str(user.home))
    steps = user.xdg_run / "isle" / "build-steps"
    assert not [n for n in (os.listdir(steps) if steps.exists() else []) if n != ".lock"]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_rootless_build_killed_mid_run_leaves_nothing(user, sig):
    """isle killed (SIGTERM, or SIGKILL: its namespaced child gets SIGTERM from the kernel) while
    a RUN step runs: the step, the build's namespace and its overlay all go; the next build
    finds no stale step either."""
    import signal
    import time

    ctx = _ctx(user, "ctx-kill", {"Containerfile": "FROM busybox\nRUN touch /started; sleep 120\n"})
    env = user.env()
    p = subprocess.Popen(
        ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
         "--inh-caps=-all", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
         str(ISLE),
         "build", "-t", "killed", ctx], cwd=str(user.home), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any("sleep 120" in ln for ln in user.procs()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the RUN step never started: {user.procs()}")
        p.send_signal(getattr(signal, "SIG" + sig))
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    left: list[str] = []
    for _ in range(150):
        left = user.procs()
        if not left:
            break
        time.sleep(0.1)
    assert not left, left
    assert not _mounts_of(str(user.home))
    assert "killed" not in user.isle("images").stdout
    cp = user.isle("build", "-t", "after", _ctx(user, "ctx-after",
                                                  {"Containerfile": "FROM busybox\nRUN true\n"}))
    assert cp.returncode == 0, cp.stderr
    steps = user.xdg_run / "isle" / "build-steps"
    assert not [n for n in (os.listdir(steps) if steps.exists() else []) if n != ".lock"]
    user.isle("rmi", "after")


@pytest.mark.timeout(300)
def test_rootless_build_deletions_and_opaque_dirs(user):
    """RUN's deletions in a user namespace: a removed file, a directory removed and made again
    (opaque), over layers of the user's store, built on by a second build; run shows them."""
    cf = ("FROM busybox\n"
          "RUN mkdir -p /d/sub && echo 1 > /d/a && echo 2 > /d/sub/b && echo k > /keep "
          "&& chown -R 5:6 /d\n"
          "RUN rm -rf /d && mkdir /d && echo new > /d/n && rm /keep\n")
    ctx = _ctx(user, "ctx-opaque", {"Containerfile": cf})
    cp = user.isle("build", "-t", "opaque1", ctx, timeout=240)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cf2 = "FROM opaque1\nRUN ls -A /d > /list && ls /keep 2>/dev/null || echo nokeep >> /list\n"
    cp = user.isle("build", "-t", "opaque2", _ctx(user, "ctx-opaque2", {"Containerfile": cf2}),
                   timeout=240)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = user.isle("run", "--rm", "--network", "none", "opaque2", "cat", "/list", timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["n", "nokeep"], cp.stdout
    for ref in ("opaque2", "opaque1"):
        assert user.isle("rmi", ref).returncode == 0


@pytest.mark.timeout(300)
def test_rootless_build_networks(user):
    """RUN's network rootless: loopback only by default (and with --network none); the host's
    with --network host, as podman gives a rootless build."""
    cf = "FROM busybox\nRUN cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort\n"
    ctx = _ctx(user, "ctx-net", {"Containerfile": cf})
    with open("/proc/net/dev") as f:  # others' veths come and go: the host's own links stay
        host = [ln.split(":")[0].strip() for ln in f.read().splitlines()[2:]]
    phys = [n for n in host if n != "lo" and not n.startswith(("veth", "isle", "tap", "br"))]
    for net, want in (("default", ["lo"]), ("none", ["lo"]), ("host", None)):
        cp = user.isle("build", "--no-cache", "--network", net, "-t", "net", ctx, timeout=240)
        assert cp.returncode == 0, cp.stderr
        lines = cp.stderr.splitlines()
        i = next(n for n, ln in enumerate(lines) if ln.startswith("STEP 2/2"))
        got = [ln for ln in lines[i + 1:] if not ln.startswith(("-->", "COMMIT", "Successfully"))]
        if want is None:
            assert "lo" in got and set(phys) <= set(got), (net, got, phys)
        else:
            assert got == want, (net, got)
    user.isle("rmi", "net")


@pytest.mark.timeout(200)
def test_rootless_rm_removes_files_of_subordinate_ids(user):
    """A rootless container that gives a directory to a subordinate uid (0700, with files):
    its removal still deletes all of it (the user alone cannot), for run --rm and for rm."""
    state = user.data / "isle" / "containers"
    script = "mkdir -p /d/e && touch /d/e/f && chown -R 1000:1000 /d && chmod 700 /d /d/e"
    cp = user.isle("run", "--rm", "--network", "none", "busybox", "sh", "-c", script)
    assert cp.returncode == 0, cp.stderr
    assert not os.listdir(state), os.listdir(state)
    cp = user.isle("run", "--name", "keep", "--network", "none", "busybox", "sh", "-c", script)
    assert cp.returncode == 0, cp.stderr
    assert user.isle("rm", "keep").returncode == 0
    assert not os.listdir(state), os.listdir(state)
