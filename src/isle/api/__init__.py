"""The Docker Engine API over isle's engine (`isle system service`).

`server` is the transport (HTTP/1.1 on a unix socket, streams, hijacking, errors as Docker's JSON
bodies); `routes` are the handlers, one engine call each; `convert` maps Docker's JSON shapes to
isle's options and records and back.
"""

from __future__ import annotations

__all__ = ["service"]


def service(settings: object, path: str, *, idle_timeout: float = 0, verbose: bool = False,
            group: int | None = None, listen_fd: int | None = None) -> None:
    """Serve the Docker Engine API for `settings`' root on the unix socket at path."""
    from isle.api.routes import Api
    from isle.api.server import serve

    api = Api(settings)
    serve(path, api.routes(), idle_timeout=idle_timeout, verbose=verbose, group=group,
          isle_version=api.version, listen_fd=listen_fd)
