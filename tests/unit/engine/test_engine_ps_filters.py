"""`ps --filter`: every key Docker users pass (and isle's isolation), checked before any row is
looked at: a bad filter is an error with no containers too, as Docker's."""

from __future__ import annotations

import pytest

from isle.engine.queries import _check_filter, _match
from isle.engine.reports import ContainerSummary
from isle.errors import ConfigError


def _row(**kw: object) -> ContainerSummary:
    base: dict[str, object] = dict(
        ID="abc", Names="web", Image="busybox", ImageID="sha256:ff", Command="", CreatedAt="",
        RunningFor="", Status="", State="running", Ports="", Labels="a=1", Mounts="data,/srv",
        Networks="front,back", labels={"a": "1"}, full_id="abcdef", Isolation="sandbox")
    base.update(kw)
    return ContainerSummary(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("f,want", [
    ("id=abc", True), ("name=^we", True), ("status=running", True), ("status=exited", False),
    ("label=a", True), ("label=a=2", False), ("ancestor=busybox", True),
    ("isolation=sandbox", True), ("isolation=vm", False), ("isolation=vm-os", False),
    ("network=back", True), ("network=ba", False), ("volume=data", True), ("volume=/srv", True),
])
def test_match(f: str, want: bool) -> None:
    _check_filter(f)
    assert _match(_row(), f) is want


@pytest.mark.parametrize("f,msg", [
    ("isolation=bogus", "invalid filter 'isolation=bogus'"),
    ("status=sleeping", "invalid filter 'status=sleeping'"),
    ("colour=red", "invalid filter 'colour'"), ("name", "bad format of filter 'name'"),
])
def test_bad_filters_are_refused(f: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        _check_filter(f)
