"""Image reference parsing: Docker's defaults and errors that name the bad part."""

import pytest

from isle.errors import ConfigError
from isle.image.reference import Reference


@pytest.mark.parametrize(
    "s,full,familiar",
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
        ("quay.io/podman/hello", "quay.io/podman/hello:latest", "quay.io/podman/hello:latest"),
        ("index.docker.io/library/debian:12", "docker.io/library/debian:12", "debian:12"),
    ],
)
def test_parse_defaults(s: str, full: str, familiar: str) -> None:
    r = Reference.parse(s)
    assert str(r) == full
    assert r.familiar == familiar


def test_digest_reference_has_no_default_tag() -> None:
    d = "sha256:" + "a" * 64
    r = Reference.parse(f"busybox@{d}")
    assert (r.tag, r.digest) == ("", d)
    assert str(r) == f"docker.io/library/busybox@{d}"
    assert r.familiar_name == "busybox"


@pytest.mark.parametrize(
    "bad",
    ["", "UPPER/case", "busybox@sha256:xyz", "a:b:c", "x:bad tag", "repo//double", " busybox"],
)
def test_bad_references_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="reference"):
        Reference.parse(bad)
