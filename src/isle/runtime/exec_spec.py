"""Build the process of ``exec`` from --process FILE, or from args and flags over config.json's."""

from __future__ import annotations

from isle.errors import ConfigError
from isle.oci import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["build_process"]


def _user(s: str) -> dict[str, int]:
    uid, _, gid = s.partition(":")
    try:
        return {"uid": int(uid), "gid": int(gid or 0)}
    except ValueError:
        raise ConfigError("--user", f"must be UID[:GID] in numbers, got {s!r}") from None


def build_process(root: str, cid: str, f: dict[str, Any], args: list[str]) -> dict[str, Any]:
    from isle.oci.runtime_spec import _process
    from isle.runtime.state import Container

    if f.get("process"):
        try:
            with open(f["process"], "rb") as fh:
                proc: dict[str, Any] = json.loads(fh.read())
        except OSError as exc:
            raise ConfigError("--process", f"{f['process']}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError("--process", f"malformed JSON: {exc}") from None
        if not isinstance(proc, dict):
            raise ConfigError("--process", "must be a JSON object")
        proc.setdefault("cwd", "/")
        _process(proc, "process")
        return proc
    if not args:
        raise ConfigError("exec", "needs a command (args) or --process FILE")
    base = Container(root, cid).load().data.get("config", {}).get("process") or {}
    proc = {k: v for k, v in base.items() if k in (
        "env", "cwd", "user", "capabilities", "noNewPrivileges", "apparmorProfile",
        "selinuxLabel")}
    proc["args"] = args
    proc["terminal"] = bool(f.get("tty"))
    env = list(proc.get("env") or [])
    for e in f.get("env") or []:
        k = e.split("=", 1)[0]
        env = [x for x in env if x.split("=", 1)[0] != k] + [e]
    proc["env"] = env
    if f.get("cwd"):
        proc["cwd"] = f["cwd"]
    proc.setdefault("cwd", "/")
    if f.get("user"):
        proc["user"] = _user(f["user"])
    if f.get("additional_gids"):
        proc.setdefault("user", {})["additionalGids"] = [int(g) for g in f["additional_gids"]]
    if f.get("cap"):
        caps = {k: list(v) for k, v in (proc.get("capabilities") or {}).items()}
        for c in f["cap"]:
            for k in ("bounding", "effective", "permitted", "ambient", "inheritable"):
                if c not in caps.setdefault(k, []):
                    caps[k].append(c)
        proc["capabilities"] = caps
    if f.get("no_new_privs"):
        proc["noNewPrivileges"] = True
    if f.get("apparmor"):
        proc["apparmorProfile"] = f["apparmor"]
    _process(proc, "process")
    return proc
