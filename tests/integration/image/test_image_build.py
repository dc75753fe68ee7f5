"""isle build through a real OCI runtime (runc): stages, COPY/ADD, cache, errors naming the line."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from isle.image.store import ImageStore

pytestmark = pytest.mark.root

CONTAINERFILE = """\
# syntax check: comments and continuations
ARG BASE=busybox
FROM $BASE AS base
ARG MSG=hi
ENV GREETING="hello world" \\
    OTHER=x
RUN echo "$MSG $GREETING" > /greet \\
 && echo app:x:1234:1234::/app:/bin/sh >> /etc/passwd && echo app:x:1234: >> /etc/group
WORKDIR /app
COPY --chown=app:app a.txt sub ./
ADD t.tgz /extract/
RUN ["/bin/sh", "-c", "rm /etc/hostname; id -u > /who"]
USER app
RUN id -u > /app/who-user

FROM scratch AS final
COPY --from=base /greet /bin/busybox /app/who-user /
COPY --from=base /app/ /copied/
CMD ["/busybox", "cat", "/greet"]
ENTRYPOINT []
LABEL org.example=yes
EXPOSE 8080/tcp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD ["/busybox", "true"]

FROM base AS other
RUN echo never > /never
"""


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("hello\n")
    (ctx / "sub" / "keep.txt").write_text("keep\n")
    (ctx / "sub" / "skip.log").write_text("ignored\n")
    (ctx / ".dockerignore").write_text("*.log\n**/*.log\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ti = tarfile.TarInfo("inner/file")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    (ctx / "t.tgz").write_bytes(buf.getvalue())
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    return ctx


def _files(img_dirs: list[str]) -> dict[str, Path]:
    out = {}
    for d in img_dirs:
        for top, _, files in os.walk(d):
            for f in files:
                p = Path(top) / f
                out["/" + str(p.relative_to(d))] = p
    return out


def test_multistage_build_and_cache(tmp_path: Path, context: Path, isle_at) -> None:
    root = tmp_path / "root"
    args = [
        "build",
        "-t",
        "built:1",
        "--runtime",
        "runc",
        "--target",
        "final",
        "--build-arg",
        "MSG=yo",
        str(context),
    ]
    cp = isle_at(root, *args)
    log = cp.stderr.decode()
    assert "STEP 1/" in log and "--> Using cache" not in log and "never" not in log
    store = ImageStore(str(root / "images"))
    img = store.resolve("built:1")
    assert cp.stdout.decode().strip() == img.id
    files = _files(img.layer_dirs)
    assert files["/greet"].read_text() == "yo hello world\n"
    assert files["/who-user"].read_text() == "1234\n"
    assert set(files) == {
        "/greet",
        "/busybox",
        "/who-user",
        "/copied/a.txt",
        "/copied/keep.txt",
        "/copied/who-user",
    }  # skip.log ignored
    c = img.config["config"]
    assert (
        c["Cmd"] == ["/busybox", "cat", "/greet"]
        and "Entrypoint" not in c
        or c.get("Entrypoint") == []
    )
    assert c["Labels"] == {"org.example": "yes"} and c["ExposedPorts"] == {"8080/tcp": {}}
    assert c["Volumes"] == {"/data": {}} and c["StopSignal"] == "SIGTERM"
    assert c["Healthcheck"]["Test"] == ["CMD", "/busybox", "true"]
    assert [h.get("empty_layer", False) for h in img.config["history"]].count(False) == 2
    # the base stage: ownership from --chown, ADD extracted, deletion recorded as a whiteout
    base_layers = store.resolve("busybox").layer_dirs
    assert len(img.layer_dirs) == 2 and img.layer_dirs[0] not in base_layers
    # rebuild: every layer step is a cache hit and the image is the same content
    cp2 = isle_at(root, *args)
    assert cp2.stderr.decode().count("--> Using cache") == 7
    assert store.resolve("built:1").diff_ids == img.diff_ids
    # a changed file in the context invalidates from its COPY on
    (context / "a.txt").write_text("changed\n")
    cp3 = isle_at(root, *args)
    # hits: the first RUN, and the final stage's first COPY --from (same bytes in, same key)
    assert cp3.stderr.decode().count("--> Using cache") == 2
    # --no-cache runs everything again
    cp4 = isle_at(root, *args, "--no-cache")
    assert "Using cache" not in cp4.stderr.decode()


def test_base_stage_contents(tmp_path: Path, context: Path, isle_at) -> None:
    root = tmp_path / "root"
    isle_at(root, "build", "-t", "base:1", "--runtime", "runc", "--target", "base", str(context))
    store = ImageStore(str(root / "images"))
    img = store.resolve("base:1")
    work = tmp_path / "w"
    rootfs = Path(store.mount_rootfs(img, str(work)))
    try:
        st = os.stat(rootfs / "app" / "a.txt")
        assert (st.st_uid, st.st_gid) == (1234, 1234)
        assert (rootfs / "app" / "keep.txt").exists() and not (rootfs / "app" / "skip.log").exists()
        assert (rootfs / "extract" / "inner" / "file").read_text() == "abc"
        assert not (rootfs / "etc" / "hostname").exists()
        assert (rootfs / "who").read_text() == "0\n"
        assert img.config["config"]["User"] == "app"
        assert img.config["config"]["WorkingDir"] == "/app"
        assert "GREETING=hello world" in img.config["config"]["Env"]
    finally:
        store.unmount_rootfs(str(work))
    hist = isle_at(root, "history", "--format", "json", "base:1").stdout.decode().splitlines()
    assert any("id -u" in json.loads(h)["CreatedBy"] for h in hist)


@pytest.mark.parametrize(
    "text,where",
    [
        ("FROM busybox\nRUN true\nBOGUS x\n", "Containerfile:3"),
        ("FROM busybox\nCOPY missing.txt /\n", "Containerfile:2"),
        ("FROM busybox\nRUN exit 3\n", "Containerfile:2"),
        ("FROM nosuchimage:1\n", "Containerfile:1"),
        ("FROM busybox\nCOPY ../outside /\n", "Containerfile:2"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, isle_at, text: str, where: str) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(text)
    cp = isle_at(tmp_path / "r", "build", "--runtime", "runc", "-t", "x:1", str(ctx), check=False)
    assert cp.returncode != 0
    assert where in cp.stderr.decode(), cp.stderr.decode()
    assert not ImageStore(str(tmp_path / "r" / "images")).exists("x:1")
    leftovers = [p for p in os.listdir(tmp_path / "r" / "images" / "tmp")]
    assert leftovers == []


def test_run_through_isle_runtime_by_default(tmp_path: Path, isle_at) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        'FROM busybox\nSHELL ["/bin/sh", "-eu", "-c"]\nRUN echo "$0 via isle-runtime" > /r\n'
        "ONBUILD RUN echo later\n"
    )
    cp = isle_at(tmp_path / "r", "--runroot", str(tmp_path / "run"), "build", "-t", "ir:1", str(ctx))
    store = ImageStore(str(tmp_path / "r" / "images"))
    img = store.resolve("ir:1")
    assert (Path(img.layer_dirs[-1]) / "r").read_text() == "/bin/sh via isle-runtime\n"
    assert img.config["config"]["Shell"] == ["/bin/sh", "-eu", "-c"]
    assert img.config["config"]["OnBuild"] == ["RUN echo later"]
    assert b"isle-runtime" not in cp.stderr or b"error" not in cp.stderr


def test_copy_globs_chmod_and_destinations(tmp_path: Path, isle_at) -> None:
    ctx = tmp_path / "c"
    (ctx / "d").mkdir(parents=True)
    for n in ("one.txt", "two.txt", "three.md", "d/inner.txt"):
        (ctx / n).write_text(n)
    (ctx / "Containerfile").write_text(
        "FROM busybox\nWORKDIR /w\n"
        "COPY --chmod=0600 *.txt globbed/\n"
        'COPY ["three.md", "renamed.md"]\n'
        "COPY d /abs/d2\n"
        "COPY one.txt two.txt notadir\n"
    )
    cp = isle_at(tmp_path / "r", "build", "--runtime", "runc", "-t", "g:1", str(ctx), check=False)
    assert (
        cp.returncode != 0 and b"Containerfile:6" in cp.stderr and b"must end with /" in cp.stderr
    )
    (ctx / "Containerfile").write_text((ctx / "Containerfile").read_text().rsplit("COPY one", 1)[0])
    isle_at(tmp_path / "r", "build", "--runtime", "runc", "-t", "g:1", str(ctx))
    img = ImageStore(str(tmp_path / "r" / "images")).resolve("g:1")
    files = _files(img.layer_dirs)
    assert {
        "/w/globbed/one.txt",
        "/w/globbed/two.txt",
        "/w/renamed.md",
        "/abs/d2/inner.txt",
    } <= set(files)
    assert "/w/globbed/three.md" not in files
    assert os.stat(files["/w/globbed/one.txt"]).st_mode & 0o777 == 0o600
    assert os.stat(files["/w/globbed/one.txt"]).st_uid == 0
