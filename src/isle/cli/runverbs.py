"""`run` and `create` as plain functions (no click), shared by the click command and the fast path."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["do_run", "do_create", "_build_options"]


def do_run(obj: Any, kw: dict[str, Any]) -> int:
    opts = _build_options(kw)
    rep = obj.engine.run(opts)
    if opts.detach:
        sys.stdout.write(rep.id + "\n")
        return 0
    return int(rep.exit_code or 0)


def do_create(obj: Any, kw: dict[str, Any]) -> int:
    rep = obj.engine.create(_build_options(kw))
    for w in rep.warnings:
        sys.stderr.write(f"WARNING: {w}\n")
    sys.stdout.write(rep.id + "\n")
    return 0


def _build_options(kw: dict[str, Any]) -> Any:
    """Flag values -> RunOptions (every parser names the flag on error)."""
    from isle.engine import options as O
    from isle.errors import ConfigError

    env = dict(os.environ)
    envs: list[str] = []
    for path in kw["env_file"]:
        envs += O.parse_env_file(path, env)
    envs += O.parse_env(list(kw["env"]), env)
    mounts = [O.parse_volume(v) for v in kw["volume"]] + [O.parse_mount(m) for m in kw["mount"]] \
        + [O.parse_tmpfs(t) for t in kw["tmpfs"]]
    seccomp, nnp = "", False
    for so in kw["security_opt"]:
        k, sep, v = so.partition("=")
        if so in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
            nnp = True
        elif so in ("no-new-privileges=false", "no-new-privileges:false"):
            nnp = False
        elif k == "seccomp" and sep and v:
            if v != "unconfined" and not os.path.isfile(v):
                raise ConfigError("--security-opt", f"seccomp profile {v!r} not found")
            seccomp = v if v == "unconfined" else os.path.abspath(v)
        elif k in ("apparmor", "label"):
            pass
        else:
            raise ConfigError("--security-opt", f"invalid option {so!r}")
    hc = None
    if kw["no_healthcheck"]:
        hc = O.Healthcheck(test=["NONE"])
    elif kw["health_cmd"]:
        hc = O.Healthcheck(test=["CMD-SHELL", kw["health_cmd"]])
        if kw["health_interval"]:
            hc.interval = O.parse_duration("--health-interval", kw["health_interval"])
        if kw["health_timeout"]:
            hc.timeout = O.parse_duration("--health-timeout", kw["health_timeout"])
        if kw["health_retries"]:
            hc.retries = kw["health_retries"]
        if kw["health_start_period"]:
            hc.start_period = O.parse_duration("--health-start-period", kw["health_start_period"])
    if kw["pids_limit"] < 0 and kw["pids_limit"] != -1:
        raise ConfigError("--pids-limit", "must be -1 (unlimited) or positive")
    ms = kw["memory_swap"]
    ep = kw["entrypoint"]
    log_max = 0
    for lo in kw["log_opt"]:
        k, _, v = lo.partition("=")
        if k == "max-size":
            log_max = O.parse_bytes("--log-opt max-size", v)
        elif k not in ("max-file", "mode", "tag"):
            raise ConfigError("--log-opt", f"unknown log option {k!r} (max-size)")
    return O.RunOptions(
        image=kw["image"], command=list(kw["command"]), name=kw["name"], detach=kw["detach"],
        remove=kw["remove"], interactive=kw["interactive"], tty=kw["tty"], env=envs,
        workdir=kw["workdir"], user=kw["user"], group_add=list(kw["group_add"]),
        entrypoint=None if ep is None else ([ep] if ep else []), mounts=mounts,
        read_only=kw["read_only"],
        memory=O.parse_bytes("--memory", kw["memory"]) if kw["memory"] else 0,
        memory_swap=-1 if ms == "-1" else (O.parse_bytes("--memory-swap", ms) if ms else 0),
        cpus=O.parse_cpus(kw["cpus"]) if kw["cpus"] else 0.0, cpu_shares=kw["cpu_shares"],
        cpuset_cpus=kw["cpuset_cpus"], pids_limit=max(kw["pids_limit"], 0),
        ulimits=[O.parse_ulimit(u) for u in kw["ulimit"]],
        cap_add=O.check_caps("--cap-add", list(kw["cap_add"])),
        cap_drop=O.check_caps("--cap-drop", list(kw["cap_drop"])),
        privileged=kw["privileged"], seccomp=seccomp, no_new_privileges=nnp,
        hostname=kw["hostname"], labels=O.parse_labels(list(kw["label"])), init=kw["init"],
        restart=O.parse_restart(kw["restart"]), stop_signal=kw["stop_signal"],
        stop_timeout=kw["stop_timeout"], healthcheck=hc, runtime=kw["runtime"],
        isolation=kw["isolation"], network=kw["network"], publish=list(kw["publish"]),
        publish_all=kw["publish_all"], ip=kw["ip"], dns=list(kw["dns"]),
        dns_search=list(kw["dns_search"]), dns_options=list(kw["dns_option"]),
        network_aliases=list(kw["network_alias"]),
        extra_hosts=list(kw["add_host"]), log_max_size=log_max,
    )


