"""Docker-shaped views of container records: `inspect` JSON and `ps` rows (Go templates over
them: cli/templates.py)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from isle.engine.db import ContainerRecord
from isle.engine.options import RunOptions
from isle.engine.reports import ContainerSummary
from isle.errors import ConfigError

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["inspect_json", "summary", "human_duration", "iso"]


def iso(t: float) -> str:
    if not t:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def _status(rec: ContainerRecord, now: float) -> str:
    if rec.state == "running":
        h = (rec.extra.get("health") or {}).get("Status")
        hs = {"starting": " (health: starting)", "healthy": " (healthy)",
              "unhealthy": " (unhealthy)"}.get(h or "", "")
        return f"Up {human_duration(now - rec.started_at)}{hs}"
    if rec.state == "paused":
        return f"Up {human_duration(now - rec.started_at)} (Paused)"
    if rec.state == "created":
        return "Created"
    if rec.state == "exited":
        return f"Exited ({rec.exit_code}) {human_duration(now - rec.finished_at)} ago"
    return rec.state.capitalize()


def _command(rec: ContainerRecord, image_config: dict[str, Any]) -> list[str]:
    from isle.engine.spec import command_line

    try:
        return command_line(RunOptions.from_dict(rec.opts), image_config)
    except ConfigError:
        return []


def summary(rec: ContainerRecord, image_config: dict[str, Any],
            now: float | None = None) -> ContainerSummary:
    now = time.time() if now is None else now
    opts = rec.opts
    cmd = " ".join(_command(rec, image_config))
    labels = dict(opts.get("labels") or {})
    mounts = [m.get("source") or m.get("target") for m in opts.get("mounts", [])]
    return ContainerSummary(
        ID=rec.id[:12], Names=rec.name, Image=rec.image, ImageID=rec.image_id,
        Command=json.dumps(cmd if len(cmd) <= 20 else cmd[:19] + "…"),
        CreatedAt=datetime.fromtimestamp(rec.created).astimezone()
        .strftime("%Y-%m-%d %H:%M:%S %z %Z"),
        RunningFor=f"{human_duration(now - rec.created)} ago", Status=_status(rec, now),
        State=rec.state, Ports=", ".join(rec.extra.get("ports_display", [])),
        Labels=",".join(f"{k}={v}" for k, v in labels.items()), Mounts=",".join(mounts),
        Networks=opts.get("network") or "bridge", created=rec.created, labels=labels,
        exit_code=rec.exit_code, full_id=rec.id, Isolation=isolation_of(opts))


def isolation_of(opts: dict[str, Any]) -> str:
    """container | sandbox | vm: the level a record runs at (older records: container)."""
    iso = opts.get("isolation") or "container"
    return "container" if iso == "default" else iso


def inspect_json(rec: ContainerRecord, image_config: dict[str, Any], *, bundle: str,
                 log_path: str, rootfs: str, upper: str) -> dict[str, Any]:
    o = RunOptions.from_dict(rec.opts)
    argv = _command(rec, image_config)
    env = list(image_config.get("Env") or []) + o.env
    health = rec.extra.get("health")
    state: dict[str, Any] = {
        "Status": rec.state, "Running": rec.state in ("running", "paused"),
        "Paused": rec.state == "paused", "Restarting": False, "OOMKilled": rec.oom_killed,
        "Dead": rec.state == "dead", "Pid": rec.pid if rec.state in ("running", "paused") else 0,
        "ExitCode": rec.exit_code, "Error": rec.error, "StartedAt": iso(rec.started_at),
        "FinishedAt": iso(rec.finished_at),
    }
    if health:
        state["Health"] = health
    mounts = []
    for m in o.mounts:
        mounts.append({"Type": m.type, "Name": m.source if m.type == "volume" else "",
                       "Source": m.source, "Destination": m.target,
                       "Mode": "ro" if m.readonly else "",
                       "RW": not m.readonly, "Propagation": "rprivate" if m.type == "bind" else ""})
    restart = {"Name": o.restart.name, "MaximumRetryCount": o.restart.max_retries}
    hc = None
    if o.healthcheck:
        hc = {"Test": o.healthcheck.test, "Interval": int(o.healthcheck.interval * 1e9),
              "Timeout": int(o.healthcheck.timeout * 1e9), "Retries": o.healthcheck.retries,
              "StartPeriod": int(o.healthcheck.start_period * 1e9)}
    return {
        "Id": rec.id,
        "Created": iso(rec.created),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": state,
        "Image": rec.image_id,
        "ResolvConfPath": f"{bundle}/resolv.conf",
        "HostnamePath": f"{bundle}/hostname",
        "HostsPath": f"{bundle}/hosts",
        "LogPath": log_path,
        "Name": "/" + rec.name,
        "RestartCount": rec.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {
            "Binds": [f"{m.source}:{m.target}" + (":ro" if m.readonly else "")
                      for m in o.mounts
                      if m.type in ("bind", "volume") and not m.anonymous] or None,
            "NetworkMode": o.network or "bridge",
            "PortBindings": {},
            "RestartPolicy": restart,
            "AutoRemove": o.remove,
            "CapAdd": o.cap_add or None, "CapDrop": o.cap_drop or None,
            "Privileged": o.privileged, "ReadonlyRootfs": o.read_only,
            "SecurityOpt": ([f"seccomp={o.seccomp}"] if o.seccomp else [])
            + (["no-new-privileges"] if o.no_new_privileges else []) or None,
            "Memory": o.memory, "MemorySwap": o.memory_swap if o.memory_swap else
            (o.memory * 2 if o.memory else 0),
            "NanoCpus": int(o.cpus * 1e9), "CpuShares": o.cpu_shares, "CpusetCpus": o.cpuset_cpus,
            "PidsLimit": o.pids_limit or None,
            "MemoryReservation": getattr(o, "memory_reservation", 0),
            "BlkioWeight": getattr(o, "blkio_weight", 0),
            "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard}
                        for u in o.ulimits] or None,
            "GroupAdd": o.group_add or None, "Init": o.init, "Runtime": o.runtime,
            "Isolation": o.isolation, "Dns": o.dns, "ExtraHosts": o.extra_hosts or None,
            "Tmpfs": {m.target: ",".join(m.options) for m in o.mounts if m.type == "tmpfs"} or None,
        },
        "GraphDriver": {"Name": "overlay", "Data": {"MergedDir": rootfs, "UpperDir": upper}},
        "Mounts": mounts,
        "Config": {
            "Hostname": o.hostname or rec.id[:12], "Domainname": "", "User": o.user or
            image_config.get("User", ""), "AttachStdin": o.interactive,
            "AttachStdout": not o.detach, "AttachStderr": not o.detach, "Tty": o.tty,
            "OpenStdin": o.interactive, "StdinOnce": o.interactive and not o.detach,
            "Env": env, "Cmd": o.command or image_config.get("Cmd"),
            "Healthcheck": hc,
            "Image": rec.image, "Volumes": None,
            "WorkingDir": o.workdir or image_config.get("WorkingDir", ""),
            "Entrypoint": (o.entrypoint if o.entrypoint is not None
                           else image_config.get("Entrypoint")),
            "Labels": o.labels, "StopSignal": o.stop_signal, "StopTimeout": o.stop_timeout,
        },
        "NetworkSettings": {"Networks": rec.extra.get("networks") or {},
                            "Ports": rec.extra.get("ports", {}),
                            "IPAddress": rec.extra.get("ip", ""),
                            "SandboxKey": rec.extra.get("netns", "")},
    }
