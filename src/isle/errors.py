"""The isle exception tree: every layer raises these; only the CLI and the API map them.

    IsleError                      exit 125 / HTTP 500  (isle itself failed)
    ├── ConfigError                exit 1   / 400  a bad config.json / flag value; names the field
    ├── NotFound                   exit 1   / 404  no such container, image, network, volume, VM
    ├── AlreadyExists              exit 1   / 409  a name or id is taken
    ├── InvalidState               exit 1   / 409  e.g. start of a running container
    ├── Unsupported                exit 1   / 501  valid, but this host/kernel cannot do it
    ├── CommandError               exit 125 / 500  an external program failed (argv, rc, stderr)
    ├── ImageError                 exit 125 / 500  bad blob, digest mismatch, corrupt layer
    │   └── RegistryError          exit 125 / 502  the registry said no, or could not be reached
    └── VMError                    exit 125 / 500  QEMU or the guest failed

The runtime CLI (runc-compatible) exits 1 on any error, like runc; the engine CLI uses
Docker's codes (125 isle failed, 126 cannot invoke, 127 not found) via ``exit_code``.
"""

from __future__ import annotations

__all__ = [
    "IsleError",
    "ConfigError",
    "NotFound",
    "AlreadyExists",
    "InvalidState",
    "Unsupported",
    "CommandError",
    "ImageError",
    "RegistryError",
    "VMError",
]


class IsleError(Exception):
    """Base of everything isle raises on purpose."""

    exit_code = 125
    http_status = 500


class _Refused(IsleError):
    """The request was wrong or cannot be met here (isle worked): exit 1."""

    exit_code = 1


class ConfigError(_Refused):
    """A configuration value is wrong; the message names the field
    (e.g. ``linux.namespaces[2].type``)."""

    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class NotFound(_Refused):
    """No such container, image, network, volume or VM."""

    http_status = 404


class AlreadyExists(_Refused):
    """A name or id is taken."""

    http_status = 409


class InvalidState(_Refused):
    """Not now: e.g. start of a running container."""

    http_status = 409


class Unsupported(_Refused):
    """Valid, but this host or kernel cannot do it."""

    http_status = 501


class CommandError(IsleError):
    """An external program exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-3:] if stderr else []
        msg = f"{argv[0]} exited {returncode}"
        if tail:
            msg += ": " + " | ".join(tail)
        super().__init__(msg)


class ImageError(IsleError):
    pass


class RegistryError(ImageError):
    http_status = 502


class VMError(IsleError):
    pass
