"""The Engine's parts without root: one Context shared by every part, and the supervisor's
bookkeeping that both start paths (conmon and direct.py's monitor-less run) go through."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from isle.engine.db import ContainerRecord
from isle.engine.engine import Engine
from isle.engine.options import MountSpec, RunOptions
from isle.errors import NotFound

from .fake_runtime import FakeRuntime, fake_engine

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path)  # type: ignore[no-any-return]


def _record(eng: Engine, name: str, **opts: object) -> ContainerRecord:
    o = RunOptions(image="busybox", command=["true"], network="none",
                   runtime="/nonexistent/fake-runtime", **opts)  # type: ignore[arg-type]
    rec = ContainerRecord(id=os.urandom(32).hex(), name=name, image="busybox",
                          image_id="sha256:" + "0" * 64, created=time.time(), state="exited",
                          opts=o.to_dict())
    eng.db.insert_container(rec)
    p = eng.paths(rec.id)
    for d in (p.run, p.bundle):
        os.makedirs(d, exist_ok=True)
    return rec


def test_every_part_shares_one_context(eng: Engine) -> None:
    ctx = eng.ctx
    assert eng.supervisor.ctx is ctx and eng.containers.ctx is ctx
    assert eng.queries.ctx is ctx and eng.transfer.ctx is ctx
    assert eng.containers.sup is eng.supervisor is eng.queries.sup is eng.transfer.sup
    assert eng.db is ctx.db and eng.db is eng.db  # opened once, on first use
    seen: list[str] = []
    eng.warn = seen.append  # the API silences warnings through the Engine
    eng.ctx.warn("x")
    assert seen == ["x"]


def test_discard_releases_drops_the_record_and_its_anonymous_volumes(eng: Engine) -> None:
    anon = eng.volumes.create(os.urandom(32).hex(), anonymous=True).name
    named = eng.volumes.create("keep").name
    rec = _record(eng, "gone", remove=True, mounts=[
        MountSpec(type="volume", source=anon, target="/a", anonymous=True),
        MountSpec(type="volume", source=named, target="/b")])
    fake = eng.ctx.oci(rec)
    assert isinstance(fake, FakeRuntime)
    with eng.ctx.locked(rec.id):
        eng.supervisor.discard(rec)
    with pytest.raises(NotFound):
        eng.db.get_container(rec.id)
    assert ("release", rec.id, False) in fake.calls
    assert [v.name for v in eng.volumes.list()] == ["keep"]
    p = eng.paths(rec.id)
    assert not os.path.exists(p.run) and not os.path.exists(p.bundle)
    assert not os.path.exists(p.lock)


def test_a_failed_start_keeps_a_never_started_record_created(eng: Engine) -> None:
    rec = _record(eng, "never")
    eng.db.update_container(rec.id, state="created")
    eng.supervisor.remove_after_failure(eng.db.get_container(rec.id), RunOptions(image="x"))
    got = eng.get(rec.id)
    assert (got.state, got.exit_code) == ("created", 128)  # Docker's "Created" with its code


def test_a_failed_rm_start_leaves_nothing(eng: Engine) -> None:
    rec = _record(eng, "rmme", remove=True)
    eng.supervisor.remove_after_failure(rec, RunOptions(image="x", remove=True))
    assert eng.list(all=True) == []
