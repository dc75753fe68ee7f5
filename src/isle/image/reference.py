"""Image references: ``[registry/]repo[:tag][@sha256:...]`` with Docker's defaults.

>>> r = Reference.parse("busybox")
>>> str(r), r.registry, r.repository, r.familiar
('docker.io/library/busybox:latest', 'docker.io', 'library/busybox', 'busybox:latest')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from isle.errors import ConfigError
from isle.oci.image_spec import is_digest

__all__ = ["Reference", "DEFAULT_REGISTRY"]

DEFAULT_REGISTRY = "docker.io"
# fullmatch and ASCII: `$` would also match before a trailing newline, `\w` any Unicode letter
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(
    rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?", re.ASCII
)


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, s: str, default_tag: str = "latest") -> Reference:
        orig = s
        if not s or s != s.strip():
            raise ConfigError("reference", f"invalid image reference {orig!r}")
        digest = ""
        if "@" in s:
            s, digest = s.split("@", 1)
            if not is_digest(digest):
                raise ConfigError("reference", f"invalid digest in {orig!r}")
        tag = ""
        slash = s.rfind("/")
        colon = s.rfind(":")
        if colon > slash:
            s, tag = s[:colon], s[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise ConfigError("reference", f"invalid tag {tag!r} in {orig!r}")
        parts = s.split("/")
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            registry, parts = parts[0], parts[1:]
        else:
            registry = DEFAULT_REGISTRY
        if not _REGISTRY.fullmatch(registry):
            raise ConfigError("reference", f"invalid registry {registry!r} in {orig!r}")
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and len(parts) == 1:
            parts = ["library", *parts]
        for p in parts:
            if not _COMPONENT.fullmatch(p):
                raise ConfigError(
                    "reference",
                    f"invalid repository name {orig!r} "
                    "(lowercase letters, digits and separators only)",
                )
        if not tag and not digest:
            tag = default_tag
        return cls(registry, "/".join(parts), tag, digest)

    @property
    def name(self) -> str:
        """registry/repository without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()

    @property
    def familiar_name(self) -> str:
        """Docker's short repository name (``busybox``, ``localhost:5000/x``)."""
        if self.registry == DEFAULT_REGISTRY:
            short = self.repository.removeprefix("library/")
            first = short.split("/", 1)[0]
            # docker.io/a.b/c must keep its registry: "a.b/c" would name the registry a.b
            if "/" not in short or not ("." in first or first == "localhost"):
                return short
        return self.name

    @property
    def familiar(self) -> str:
        """Docker's short display form (``busybox:latest``, ``localhost:5000/x:1``)."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, "")
