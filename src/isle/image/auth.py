"""Registry credentials in the containers/Docker ``auth.json`` format.

    {"auths": {"localhost:5000": {"auth": base64("user:password")}}}

Written to ``--authfile`` / ``$REGISTRY_AUTH_FILE`` / ``$XDG_RUNTIME_DIR/containers/auth.json``
(``/run/containers/<uid>/auth.json`` for root, like podman); ``~/.docker/config.json`` is also read.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from isle.errors import ConfigError
from isle.sys.fs import atomic_write, flock

__all__ = ["default_authfile", "get_credentials", "store_credentials", "remove_credentials"]


def default_authfile() -> str:
    if v := os.environ.get("REGISTRY_AUTH_FILE"):
        return v
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "containers", "auth.json")
    return f"/run/containers/{os.geteuid()}/auth.json"


def _key(registry: str) -> str:
    return "https://index.docker.io/v1/" if registry == "docker.io" else registry


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        return {"auths": {}}
    except ValueError as exc:
        raise ConfigError(path, f"not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ConfigError(path, "expected a JSON object")
    d.setdefault("auths", {})
    return d


def get_credentials(registry: str, authfile: str | None = None) -> tuple[str, str] | None:
    paths = [authfile or default_authfile(), os.path.expanduser("~/.docker/config.json")]
    for p in paths:
        entry = _load(p)["auths"].get(_key(registry)) or _load(p)["auths"].get(registry)
        if entry and entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise ConfigError(
                    f"{p}: auths.{registry}.auth", "not base64 user:password"
                ) from None
            return user, pw
    return None


def store_credentials(registry: str, user: str, password: str, authfile: str | None = None) -> str:
    path = authfile or default_authfile()
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    with flock(path + ".lock"):
        d = _load(path)
        d["auths"][_key(registry)] = {
            "auth": base64.b64encode(f"{user}:{password}".encode()).decode()
        }
        atomic_write(path, json.dumps(d, indent=1).encode(), mode=0o600)
    return path


def remove_credentials(registry: str, authfile: str | None = None) -> bool:
    path = authfile or default_authfile()
    with flock(path + ".lock"):
        d = _load(path)
        found = d["auths"].pop(_key(registry), None) is not None
        if found:
            atomic_write(path, json.dumps(d, indent=1).encode(), mode=0o600)
    return found
