"""What Engine methods return (reports) and the two engine errors with Docker's own exit codes."""

from __future__ import annotations

from isle.errors import IsleError
from isle.record import field, record

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CommandNotFound", "CannotInvoke", "CreateReport", "RunReport", "ContainerSummary",
           "RmReport", "PruneReport"]


class CommandNotFound(IsleError):
    """The container's command does not exist (Docker: exit 127)."""

    exit_code = 127
    http_status = 400


class CannotInvoke(IsleError):
    """The container's command exists but cannot be run (Docker: exit 126)."""

    exit_code = 126
    http_status = 400


@record
class CreateReport:
    """What `create` made."""
    id: str
    name: str
    warnings: list[str] = field(default_factory=list)


@record
class RunReport:
    """What `run`/`start` did; exit_code in the foreground."""
    id: str
    name: str
    exit_code: int | None  # None when detached
    removed: bool = False
    warnings: list[str] = field(default_factory=list)


@record
class ContainerSummary:
    """One `ps` row; field names are Docker's template names ({{.ID}}, {{.Names}} ...)."""

    ID: str
    Names: str
    Image: str
    ImageID: str
    Command: str
    CreatedAt: str
    RunningFor: str
    Status: str
    State: str
    Ports: str
    Labels: str
    Mounts: str
    Networks: str
    Size: str = ""
    LocalVolumes: str = "0"
    created: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0
    full_id: str = ""
    Isolation: str = "container"  # container | sandbox | vm

    def template_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "ID", "Names", "Image", "ImageID", "Command", "CreatedAt", "RunningFor", "Status",
            "State", "Ports", "Labels", "Mounts", "Networks", "Size", "LocalVolumes", "Isolation")}


@record
class RmReport:
    """Which container a verb acted on."""
    id: str
    name: str


@record
class PruneReport:
    """What a prune removed."""
    deleted: list[str] = field(default_factory=list)
    reclaimed: int = 0
