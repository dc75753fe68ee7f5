"""Docker's JSON shapes to isle's engine types and back (pure, except where an engine is passed)."""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from isle.api.server import ApiError
from isle.errors import NotFound

__all__ = ["run_options", "container_summary", "container_inspect", "image_summary", "info",
           "network", "volume", "event", "stats", "wait_for", "JsonProgress"]


# -- small conversions -------------------------------------------------------------------------
def go_arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def iso(t: float) -> str:
    if not t:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(v: str) -> float:
    """Docker's since/until: unix seconds (with fraction) or RFC 3339."""
    if not v:
        return 0.0
    try:
        return float(v)
    except ValueError:
        pass
    try:
        s = v.replace("Z", "+00:00")
        if "." in s:  # Python wants at most 6 fractional digits
            head, _, rest = s.partition(".")
            frac = "".join(c for c in rest if c.isdigit())
            tz = rest[len(frac):]
            s = f"{head}.{frac[:6]}{tz}"
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise ApiError(400, f"invalid time {v!r}: want unix seconds or RFC 3339") from None


def since_arg(v: str) -> str:
    """since/until for engine.logs (which takes Docker's CLI forms): unix seconds pass through."""
    if not v or v == "0":
        return ""
    return str(parse_time(v))


def go_file_mode(mode: int) -> int:
    """A stat mode as Go's os.FileMode (what X-Docker-Container-Path-Stat carries)."""
    import stat as S

    m = mode & 0o777
    if S.S_ISDIR(mode):
        m |= 1 << 31
    elif S.S_ISLNK(mode):
        m |= 1 << 27
    if mode & S.S_ISUID:
        m |= 1 << 23
    if mode & S.S_ISGID:
        m |= 1 << 22
    if mode & S.S_ISVTX:
        m |= 1 << 20
    return m


def registry_host(ref: str) -> str:
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    if ref.startswith(("http://", "https://")):
        return ref.split("://", 1)[1].split("/", 1)[0]
    return "docker.io"


def auth_server_host(server: str) -> str:
    """/auth's serveraddress ("127.0.0.1:5000", "https://r.example/v2/", Docker Hub's index
    URL) -> the registry host isle logs in to."""
    s = server.strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    host = s.split("/", 1)[0]
    if not host or host in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    return host


def insecure_registry(host: str) -> bool:
    """Docker talks plain HTTP to registries on loopback addresses (its default insecure set)."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0][1:]
    return name == "localhost" or name.startswith("127.") or name == "::1"


def registry_auth(header: str | None) -> tuple[str, str] | None:
    """X-Registry-Auth: base64url JSON {username, password, ...}; None when absent or empty."""
    if not header:
        return None
    try:
        pad = "=" * (-len(header) % 4)
        d = json.loads(base64.urlsafe_b64decode(header + pad))
    except (ValueError, TypeError):
        raise ApiError(400, "X-Registry-Auth is not base64-encoded JSON") from None
    if not isinstance(d, dict):
        return None
    user, pw = d.get("username") or "", d.get("password") or ""
    return (user, pw) if user else None


# -- containers --------------------------------------------------------------------------------
def _str_list(v: Any, field: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) for x in v):
        raise ApiError(400, f"{field}: want a list of strings")
    return [str(x) for x in v]


def _int_field(d: dict[str, Any], key: str, field: str) -> int:
    v = d.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(400, f"{field}: want a number, got {json.dumps(v)[:40]}")
    return int(v)


#: POST /containers/{id}/update: Docker's UpdateConfig fields isle applies -> RunOptions field
UPDATE_FIELDS = {"Memory": "memory", "MemorySwap": "memory_swap",
                 "MemoryReservation": "memory_reservation", "CpuShares": "cpu_shares",
                 "CpusetCpus": "cpuset_cpus", "PidsLimit": "pids_limit",
                 "BlkioWeight": "blkio_weight"}


def update_changes(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Docker's UpdateConfig -> (RunOptions changes, RestartPolicy or None) for Engine.update.
    Zero/null fields are "unchanged" (the docker CLI sends every field); a non-zero field isle
    cannot apply is a 400 naming it, as is a value of the wrong type."""
    from isle.engine.options import RestartPolicy

    changes: dict[str, Any] = {}
    for key, v in body.items():
        if key == "RestartPolicy" or v in (None, 0, "", [], {}, False):
            continue
        if key in UPDATE_FIELDS:
            if key == "CpusetCpus":
                if not isinstance(v, str):
                    raise ApiError(400, f"CpusetCpus: want a string such as \"0-1\", got "
                                        f"{json.dumps(v)[:40]}")
                changes["cpuset_cpus"] = v
            else:
                changes[UPDATE_FIELDS[key]] = _int_field(body, key, key)
        elif key == "NanoCpus":
            changes["cpus"] = _int_field(body, key, key) / 1e9
        elif key in ("CpuQuota", "CpuPeriod"):
            q = _int_field(body, "CpuQuota", "CpuQuota")
            p = _int_field(body, "CpuPeriod", "CpuPeriod") or 100000
            if q > 0:
                changes["cpus"] = q / p
            elif q < 0:
                raise ApiError(400, f"CpuQuota: must be positive, got {q}")
        else:
            raise ApiError(400, f"{key}: updating it is not supported by isle (supported: "
                                + ", ".join(sorted([*UPDATE_FIELDS, "NanoCpus", "CpuQuota",
                                                    "CpuPeriod", "RestartPolicy"])) + ")")
    restart = None
    rp = body.get("RestartPolicy")
    if rp is not None:
        rp = _obj(rp, "RestartPolicy")
        name = rp.get("Name") or ""
        if not isinstance(name, str):
            raise ApiError(400, f"RestartPolicy.Name: want a string, got {json.dumps(name)[:40]}")
        if name:
            restart = RestartPolicy(name=name, max_retries=_int_field(
                rp, "MaximumRetryCount", "RestartPolicy.MaximumRetryCount"))
    return changes, restart


def _obj(d: Any, field: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ApiError(400, f"{field}: want an object")
    return d


# -- request body shapes -------------------------------------------------------------------------
# Docker's field types for the bodies isle reads: a wrong type is a 400 naming the field, never an
# internal error further down. "S" str, "I" int (not bool), "B" bool, "D" object, "L" list,
# "LS" list of str, "LD" list of objects, "DS" object of str, "SL" str or list of str, "ID" list
# of two ints. null is always allowed (Docker's "unset").
_CONFIG = {"Hostname": "S", "Domainname": "S", "User": "S", "AttachStdin": "B",
           "AttachStdout": "B", "AttachStderr": "B", "ExposedPorts": "D", "Tty": "B",
           "OpenStdin": "B", "StdinOnce": "B", "Env": "LS", "Cmd": "SL", "Healthcheck": "D",
           "ArgsEscaped": "B", "Image": "S", "Volumes": "D", "WorkingDir": "S", "Entrypoint": "SL",
           "NetworkDisabled": "B", "MacAddress": "S", "OnBuild": "LS", "Labels": "DS",
           "StopSignal": "S", "StopTimeout": "I", "Shell": "LS", "HostConfig": "D",
           "NetworkingConfig": "D"}
_HOSTCONFIG = {"Binds": "LS", "ContainerIDFile": "S", "LogConfig": "D", "NetworkMode": "S",
               "PortBindings": "D", "RestartPolicy": "D", "AutoRemove": "B", "VolumeDriver": "S",
               "VolumesFrom": "LS", "ConsoleSize": "ID", "Annotations": "DS", "CapAdd": "LS",
               "CapDrop": "LS", "CgroupnsMode": "S", "Dns": "LS", "DnsOptions": "LS",
               "DnsSearch": "LS", "ExtraHosts": "LS", "GroupAdd": "LS", "IpcMode": "S",
               "Cgroup": "S", "Links": "LS", "OomScoreAdj": "I", "PidMode": "S",
               "Privileged": "B", "PublishAllPorts": "B", "ReadonlyRootfs": "B",
               "SecurityOpt": "LS", "StorageOpt": "DS", "Tmpfs": "DS", "UTSMode": "S",
               "UsernsMode": "S", "ShmSize": "I", "Sysctls": "DS", "Runtime": "S",
               "Isolation": "S", "CpuShares": "I", "Memory": "I", "NanoCpus": "I",
               "CgroupParent": "S", "BlkioWeight": "I", "CpuPeriod": "I", "CpuQuota": "I",
               "CpusetCpus": "S", "CpusetMems": "S", "Devices": "LD", "DeviceCgroupRules": "LS",
               "DeviceRequests": "LD", "MemoryReservation": "I", "MemorySwap": "I",
               "MemorySwappiness": "I", "OomKillDisable": "B", "PidsLimit": "I", "Ulimits": "LD",
               "Init": "B", "Mounts": "LD", "MaskedPaths": "LS", "ReadonlyPaths": "LS"}
NETWORK_CREATE = {"Name": "S", "CheckDuplicate": "B", "Driver": "S", "Internal": "B",
                  "Attachable": "B", "Ingress": "B", "IPAM": "D", "EnableIPv6": "B",
                  "EnableIPv4": "B", "Options": "DS", "Labels": "DS", "Scope": "S"}
_IPAM = {"Driver": "S", "Config": "LD", "Options": "DS"}
_IPAM_CONFIG = {"Subnet": "S", "IPRange": "S", "Gateway": "S", "AuxiliaryAddresses": "DS"}
VOLUME_CREATE = {"Name": "S", "Driver": "S", "DriverOpts": "DS", "Labels": "DS"}
AUTH = {"username": "S", "password": "S", "email": "S", "serveraddress": "S",
        "identitytoken": "S", "registrytoken": "S"}
EXEC_CREATE = {"AttachStdin": "B", "AttachStdout": "B", "AttachStderr": "B", "DetachKeys": "S",
               "Tty": "B", "Env": "LS", "Cmd": "SL", "Privileged": "B", "User": "S",
               "WorkingDir": "S", "ConsoleSize": "ID"}
CONNECT = {"Container": "S", "EndpointConfig": "D", "Force": "B"}
_ENDPOINT = {"IPAMConfig": "D", "Links": "LS", "Aliases": "LS", "MacAddress": "S",
             "DriverOpts": "DS", "NetworkID": "S"}


def _type_ok(v: Any, t: str) -> bool:
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and -(1 << 63) <= x < (1 << 63)

    if t == "S":
        return isinstance(v, str)
    if t == "I":
        return is_int(v)
    if t == "B":
        return isinstance(v, bool)
    if t == "D":
        return isinstance(v, dict)
    if t == "L":
        return isinstance(v, list)
    if t == "LS":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if t == "LD":
        return isinstance(v, list) and all(isinstance(x, dict) for x in v)
    if t == "DS":
        return isinstance(v, dict) and all(isinstance(x, str) or x is None for x in v.values())
    if t == "SL":
        return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
    if t == "ID":
        return isinstance(v, list) and len(v) == 2 and all(is_int(x) and x >= 0 for x in v)
    raise AssertionError(t)


_WANT = {"S": "a string", "I": "an integer", "B": "a boolean", "D": "an object", "L": "a list",
         "LS": "a list of strings", "LD": "a list of objects", "DS": "an object of strings",
         "SL": "a string or a list of strings", "ID": "[height, width] (unsigned integers)"}


def check_shape(body: Any, schema: dict[str, str], where: str = "") -> None:
    """400 naming the first field of body whose type is not Docker's."""
    if not isinstance(body, dict):
        raise ApiError(400, f"{where or 'request body'}: want a JSON object")
    for k, t in schema.items():
        v = body.get(k)
        if v is not None and not _type_ok(v, t):
            raise ApiError(400, f"{where + '.' if where else ''}{k}: want {_WANT[t]}, got "
                                f"{json.dumps(v)[:60]}")


def check_create_body(body: dict[str, Any]) -> None:
    check_shape(body, _CONFIG)
    hc = body.get("HostConfig") or {}
    check_shape(hc, _HOSTCONFIG, "HostConfig")
    pb = hc.get("PortBindings") or {}
    for port, binds in pb.items():
        if binds is not None and not _type_ok(binds, "LD"):
            raise ApiError(400, f"HostConfig.PortBindings[{port!r}]: want a list of objects")
        for b in binds or []:
            check_shape(b, {"HostIp": "S", "HostPort": "S"}, f"HostConfig.PortBindings[{port!r}]")
    check_shape(hc.get("RestartPolicy") or {}, {"Name": "S", "MaximumRetryCount": "I"},
                "HostConfig.RestartPolicy")
    check_shape(hc.get("LogConfig") or {}, {"Type": "S", "Config": "DS"}, "HostConfig.LogConfig")
    for u in hc.get("Ulimits") or []:
        check_shape(u, {"Name": "S", "Soft": "I", "Hard": "I"}, "HostConfig.Ulimits")
    for m in hc.get("Mounts") or []:
        check_shape(m, {"Type": "S", "Source": "S", "Target": "S", "ReadOnly": "B",
                        "Consistency": "S", "BindOptions": "D", "VolumeOptions": "D",
                        "TmpfsOptions": "D"}, "HostConfig.Mounts")
    check_shape(body.get("Healthcheck") or {}, {"Test": "SL", "Interval": "I", "Timeout": "I",
                                                "Retries": "I", "StartPeriod": "I",
                                                "StartInterval": "I"}, "Healthcheck")
    nc = body.get("NetworkingConfig") or {}
    check_shape(nc, {"EndpointsConfig": "D"}, "NetworkingConfig")
    for n, ep in (nc.get("EndpointsConfig") or {}).items():
        if ep is not None:
            check_shape(ep, _ENDPOINT, f"NetworkingConfig.EndpointsConfig[{n!r}]")
            check_shape(ep.get("IPAMConfig") or {}, {"IPv4Address": "S", "IPv6Address": "S",
                                                      "LinkLocalIPs": "LS"},
                        f"NetworkingConfig.EndpointsConfig[{n!r}].IPAMConfig")


def check_network_body(body: dict[str, Any]) -> None:
    check_shape(body, NETWORK_CREATE)
    ipam = body.get("IPAM") or {}
    check_shape(ipam, _IPAM, "IPAM")
    for c in ipam.get("Config") or []:
        check_shape(c, _IPAM_CONFIG, "IPAM.Config")


def check_connect_body(body: dict[str, Any]) -> None:
    check_shape(body, CONNECT)
    ep = body.get("EndpointConfig") or {}
    check_shape(ep, _ENDPOINT, "EndpointConfig")
    check_shape(ep.get("IPAMConfig") or {}, {"IPv4Address": "S", "IPv6Address": "S",
                                             "LinkLocalIPs": "LS"}, "EndpointConfig.IPAMConfig")


def run_options(body: dict[str, Any], name: str) -> Any:
    """POST /containers/create's body -> RunOptions (ConfigError/ApiError name the bad field)."""
    from isle.engine.options import (
        Healthcheck,
        MountSpec,
        RestartPolicy,
        RunOptions,
        Ulimit,
        parse_volume,
    )

    image = body.get("Image")
    if not image or not isinstance(image, str):
        raise ApiError(400, "Config.Image: an image is required")
    hc = _obj(body.get("HostConfig"), "HostConfig")
    nc = _obj(body.get("NetworkingConfig"), "NetworkingConfig")
    o = RunOptions(image=image, name=name or "")
    o.command = _str_list(body.get("Cmd"), "Cmd")
    if "Entrypoint" in body and body["Entrypoint"] is not None:
        o.entrypoint = _str_list(body["Entrypoint"], "Entrypoint")
    o.env = _str_list(body.get("Env"), "Env")
    o.workdir = body.get("WorkingDir") or ""
    o.user = body.get("User") or ""
    o.tty = bool(body.get("Tty"))
    o.interactive = bool(body.get("OpenStdin"))
    o.stdin_once = bool(body.get("StdinOnce"))
    cs = hc.get("ConsoleSize")
    if cs is not None:
        if not (isinstance(cs, list) and len(cs) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 65536 for x in cs)):
            raise ApiError(400, "HostConfig.ConsoleSize: want [height, width] (unsigned integers)")
        if all(cs):
            o.console_size = [int(cs[0]), int(cs[1])]
    o.detach = True  # the API always starts in the background; attach follows the logs
    o.hostname = body.get("Hostname") or ""
    o.labels = {str(k): str(v) for k, v in _obj(body.get("Labels"), "Labels").items()}
    if body.get("StopSignal"):
        o.stop_signal = str(body["StopSignal"])
    if body.get("StopTimeout") is not None:
        o.stop_timeout = _int_field(body, "StopTimeout", "StopTimeout")
    h = body.get("Healthcheck")
    if h:
        h = _obj(h, "Healthcheck")
        test = _str_list(h.get("Test"), "Healthcheck.Test")
        o.healthcheck = Healthcheck(
            test=test, interval=(_int_field(h, "Interval", "Healthcheck.Interval") or 30e9) / 1e9,
            timeout=(_int_field(h, "Timeout", "Healthcheck.Timeout") or 30e9) / 1e9,
            retries=_int_field(h, "Retries", "Healthcheck.Retries") or 3,
            start_period=_int_field(h, "StartPeriod", "Healthcheck.StartPeriod") / 1e9)
    # -- HostConfig
    mounts: list[Any] = []
    for b in _str_list(hc.get("Binds"), "HostConfig.Binds"):
        mounts.append(parse_volume(b))
    for i, m in enumerate(hc.get("Mounts") or []):
        m = _obj(m, f"HostConfig.Mounts[{i}]")
        typ = (m.get("Type") or "volume").lower()
        if typ not in ("bind", "volume", "tmpfs"):
            raise ApiError(400, f"HostConfig.Mounts[{i}].Type: {typ!r} is not supported "
                                "(bind, volume, tmpfs)")
        target = m.get("Target") or ""
        if not target:
            raise ApiError(400, f"HostConfig.Mounts[{i}].Target is required")
        opts: list[str] = []
        if typ == "tmpfs":
            t = _obj(m.get("TmpfsOptions"), "TmpfsOptions")
            if t.get("SizeBytes"):
                opts.append(f"size={int(t['SizeBytes'])}")
            if t.get("Mode"):
                opts.append(f"mode={int(t['Mode']):o}")
        mounts.append(MountSpec(type=typ, target=target, source=m.get("Source") or "",
                                readonly=bool(m.get("ReadOnly")), options=opts))
    for target, topts in _obj(hc.get("Tmpfs"), "HostConfig.Tmpfs").items():
        mounts.append(MountSpec(type="tmpfs", target=target,
                                options=[x for x in str(topts or "").split(",") if x]))
    o.mounts = mounts
    o.read_only = bool(hc.get("ReadonlyRootfs"))
    o.memory = _int_field(hc, "Memory", "HostConfig.Memory")
    o.memory_swap = _int_field(hc, "MemorySwap", "HostConfig.MemorySwap")
    o.cpus = _int_field(hc, "NanoCpus", "HostConfig.NanoCpus") / 1e9
    if not o.cpus and hc.get("CpuQuota") and hc.get("CpuPeriod"):
        o.cpus = _int_field(hc, "CpuQuota", "CpuQuota") / _int_field(hc, "CpuPeriod", "CpuPeriod")
    o.cpu_shares = _int_field(hc, "CpuShares", "HostConfig.CpuShares")
    o.memory_reservation = _int_field(hc, "MemoryReservation", "HostConfig.MemoryReservation")
    o.cpuset_cpus = hc.get("CpusetCpus") or ""
    pl = hc.get("PidsLimit")
    o.pids_limit = int(pl) if isinstance(pl, int) and pl > 0 else 0
    o.ulimits = [Ulimit(name=str(u.get("Name")), soft=int(u.get("Soft", 0)),
                        hard=int(u.get("Hard", 0))) for u in hc.get("Ulimits") or []]
    o.cap_add = _str_list(hc.get("CapAdd"), "HostConfig.CapAdd")
    o.cap_drop = _str_list(hc.get("CapDrop"), "HostConfig.CapDrop")
    o.privileged = bool(hc.get("Privileged"))
    for so in _str_list(hc.get("SecurityOpt"), "HostConfig.SecurityOpt"):
        k, _, v = so.replace(":", "=", 1).partition("=")
        if k == "no-new-privileges":
            o.no_new_privileges = v in ("", "true")
        elif k == "seccomp":
            o.seccomp = v
        elif k in ("label", "apparmor"):
            continue
        else:
            raise ApiError(400, f"HostConfig.SecurityOpt: {so!r} is not supported")
    o.dns = _str_list(hc.get("Dns"), "HostConfig.Dns")
    o.dns_search = _str_list(hc.get("DnsSearch"), "HostConfig.DnsSearch")
    o.dns_options = _str_list(hc.get("DnsOptions"), "HostConfig.DnsOptions")
    o.extra_hosts = _str_list(hc.get("ExtraHosts"), "HostConfig.ExtraHosts")
    o.group_add = _str_list(hc.get("GroupAdd"), "HostConfig.GroupAdd")
    o.init = bool(hc.get("Init"))
    o.remove = bool(hc.get("AutoRemove"))
    rp = _obj(hc.get("RestartPolicy"), "HostConfig.RestartPolicy")
    if rp.get("Name"):
        o.restart = RestartPolicy(name=rp["Name"],
                                  max_retries=int(rp.get("MaximumRetryCount") or 0))
    o.runtime = hc.get("Runtime") or ""
    iso_ = (hc.get("Isolation") or "").lower()
    if iso_ in ("", "default"):
        iso_ = "container"
    if iso_ == "hyperv":  # Docker's own word for "a VM around the container"
        iso_ = "vm"
    o.isolation = iso_
    mode = hc.get("NetworkMode") or ""
    eps = _obj(nc.get("EndpointsConfig"), "NetworkingConfig.EndpointsConfig")
    if mode in ("default", "bridge"):
        mode = ""
    nets = [mode] if mode else []
    for net, ep in eps.items():
        if net not in nets and net not in ("bridge", "default") and not mode:
            nets.append(net)
        ep = _obj(ep, f"EndpointsConfig.{net}")
        o.network_aliases += [a for a in ep.get("Aliases") or [] if a not in o.network_aliases]
        ipam = _obj(ep.get("IPAMConfig"), "IPAMConfig")
        if ipam.get("IPv4Address"):
            o.ip = ipam["IPv4Address"]
    o.network = ",".join(nets)
    pub = []
    for port, binds in _obj(hc.get("PortBindings"), "HostConfig.PortBindings").items():
        cport, _, proto = port.partition("/")
        for b0 in binds or [{}]:
            pb = _obj(b0, "PortBindings")
            hip, hport = pb.get("HostIp") or "", pb.get("HostPort") or ""
            spec = f"{hport}:{cport}" if hport else cport
            if hip:
                spec = f"{hip}:{hport}:{cport}"
            pub.append(f"{spec}/{proto or 'tcp'}")
    o.publish = pub
    o.publish_all = bool(hc.get("PublishAllPorts"))
    lc = _obj(hc.get("LogConfig"), "HostConfig.LogConfig")
    ms = _obj(lc.get("Config"), "LogConfig.Config").get("max-size")
    if ms:
        from isle.engine.options import parse_bytes

        o.log_max_size = parse_bytes("max-size", ms)
    return o


def _ports(rec: Any) -> list[dict[str, Any]]:
    out = []
    for p in rec.extra.get("ports_list") or []:
        out.append(p)
    if out:
        return out
    for disp in rec.extra.get("ports_display", []) or []:
        # "0.0.0.0:8080->80/tcp"
        try:
            left, _, right = disp.partition("->")
            cport, _, proto = right.partition("/")
            hip, _, hport = left.rpartition(":")
            out.append({"IP": hip.strip("[]"), "PrivatePort": int(cport),
                        "PublicPort": int(hport), "Type": proto or "tcp"})
        except ValueError:
            continue
    return out


def container_summary(eng: Any, rec: Any) -> dict[str, Any]:
    from isle.engine.views import summary

    s = summary(rec, eng.image_config(rec))
    nets = rec.extra.get("networks") or {}
    return {
        "Id": rec.id, "Names": ["/" + rec.name], "Image": rec.image, "ImageID": rec.image_id,
        "Command": json.loads(s.Command) if s.Command.startswith('"') else s.Command,
        "Created": int(rec.created), "Ports": _ports(rec), "Labels": s.labels,
        "State": rec.state, "Status": s.Status,
        "HostConfig": {"NetworkMode": rec.opts.get("network") or "bridge"},
        "NetworkSettings": {"Networks": nets},
        "Mounts": [{"Type": m.get("type"), "Source": m.get("source", ""),
                    "Destination": m.get("target"), "RW": not m.get("readonly")}
                   for m in rec.opts.get("mounts", [])],
        "Isolation": rec.opts.get("isolation") or "container",
    }


def filter_containers(cs: list[dict[str, Any]], flt: dict[str, list[str]]) -> list[dict[str, Any]]:
    def ok(c: dict[str, Any]) -> bool:
        for k, vs in flt.items():
            if k == "id" and not any(c["Id"].startswith(v) for v in vs):
                return False
            if k == "name" and not any(v.lstrip("/") in c["Names"][0] for v in vs):
                return False
            if k == "status" and c["State"] not in vs:
                return False
            if k == "label":
                for v in vs:
                    key, eq, val = v.partition("=")
                    if key not in c["Labels"] or (eq and c["Labels"][key] != val):
                        return False
            if k == "ancestor" and not any(v in (c["Image"], c["ImageID"]) or
                                           c["ImageID"].startswith("sha256:" + v) for v in vs):
                return False
            if k == "network" and not any(v in c["NetworkSettings"]["Networks"] or
                                          v == c["HostConfig"]["NetworkMode"] for v in vs):
                return False
            if k == "isolation" and c["Isolation"] not in vs:
                return False
            if k == "exited" and not (c["State"] == "exited" and any(
                    f"Exited ({v})" in c["Status"] for v in vs)):
                return False
        return True

    return [c for c in cs if ok(c)]


def container_inspect(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d.setdefault("ExecIDs", None)
    hc = dict(d.get("HostConfig") or {})
    if hc.get("Isolation") == "container":
        hc["Isolation"] = ""  # Docker's "default"
    if "/" in str(hc.get("Runtime") or ""):  # the registered runtime's name, as Docker's
        hc["Runtime"] = os.path.basename(str(hc["Runtime"]))
    # conmon keeps logs readable by `logs` as Docker's json-file driver does; clients (docker-py's
    # run) read the driver's name to know they can fetch the output
    hc.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
    d["HostConfig"] = hc
    ns = dict(d.get("NetworkSettings") or {})
    ns.setdefault("Ports", {})
    ns["Networks"] = _endpoints(d, hc, dict(ns.get("Networks") or {}))
    d["NetworkSettings"] = ns
    return d


def _endpoints(d: dict[str, Any], hc: dict[str, Any], nets: dict[str, Any]) -> dict[str, Any]:
    """Docker's NetworkSettings.Networks: a created or stopped container still names the networks
    it joins at its start (compose reads them before it connects more); on user-defined networks
    the short id is an alias, as Docker's."""
    if not nets:
        mode = str(hc.get("NetworkMode") or "")
        if mode in ("none", "host") or mode.startswith("container:"):
            return nets
        for n in [x for x in mode.split(",") if x and x != "default"] or ["bridge"]:
            nets[n] = {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "",
                       "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                       "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                       "MacAddress": ""}
    short = str(d.get("Id") or "")[:12]
    out = {}
    for n, ep in nets.items():
        ep = dict(ep) if isinstance(ep, dict) else {}
        if n not in ("bridge", "host", "none", "podman", "isle") and short:
            aliases = list(ep.get("Aliases") or [])
            if short not in aliases:
                aliases.append(short)
            ep["Aliases"] = aliases
        out[n] = ep
    return out


def last_event_seq(eng: Any) -> int:
    evs = eng.db.events(after_seq=0, since=time.time() - 1)
    return evs[-1]["seq"] if evs else 0


def _die_code(eng: Any, cid: str, after_seq: int) -> int | None:
    for e in eng.db.events(after_seq=after_seq):
        if e["actor"] == cid and e["action"] == "die":
            attrs = e.get("attrs") or {}
            try:
                return int(attrs.get("exitCode", attrs.get("exit_code", 0)))
            except (TypeError, ValueError):
                return 0
    return None


def wait_for(eng: Any, cid: str, cond: str, rec0: Any, seq0: int,
             gone: Any = None) -> tuple[int, str] | None:
    """Block until cond ("not-running", "next-exit", "removed") holds; (exit code, error), or
    None once gone() says the client went away."""
    started0 = rec0.started_at
    last_code = rec0.exit_code
    while True:
        if gone is not None and gone():
            return None
        try:
            rec = eng.get(cid)
        except NotFound:
            if cond == "removed" or cond == "next-exit":
                code = _die_code(eng, cid, seq0)
                return (last_code if code is None else code), ""
            raise
        last_code = rec.exit_code
        running = rec.state in ("running", "paused")
        if cond == "not-running" and not running:
            return rec.exit_code, rec.error
        if cond == "next-exit" and not running and rec.state != "created" and \
                (rec.started_at != started0 or rec0.state in ("running", "paused")):
            return rec.exit_code, rec.error
        if running and rec.monitor_pid:
            from isle.engine.attach import wait_pid_exit

            wait_pid_exit(rec.monitor_pid, 0.5)
        elif cond == "removed" and rec.state != "created":
            time.sleep(0.01)  # the exit command removes it any moment now (docker run --rm)
        else:
            time.sleep(0.05)


def stats(eng: Any, rec: Any, interval: float) -> dict[str, Any]:
    rows = eng.stats([rec.id], interval=max(interval, 0.05)) if rec.state in (
        "running", "paused") else []
    s = rows[0] if rows else {}
    mem = int(s.get("MemUsage") or 0)
    lim = int(s.get("MemLimit") or 0)
    ncpu = os.cpu_count() or 1
    now = iso(time.time())
    # the engine measures CPU % over the interval; Docker's clients compute it from two samples
    # (cpu and precpu): make the pair whose deltas give the engine's figure
    dt_ns = int(max(interval, 0.05) * 1e9)
    used = int(float(s.get("cpu_percent") or 0.0) / 100 * dt_ns)
    sys_now = int(time.monotonic() * 1e9) * ncpu
    throttle = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
    cpu = {"cpu_usage": {"total_usage": used, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
           "system_cpu_usage": sys_now, "online_cpus": ncpu, "throttling_data": throttle}
    pre = {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
           "system_cpu_usage": sys_now - dt_ns * ncpu, "online_cpus": ncpu,
           "throttling_data": throttle}
    return {
        "id": rec.id, "name": "/" + rec.name, "read": now, "preread": now,
        "pids_stats": {"current": int(s.get("PIDs") or 0)},
        "memory_stats": {"usage": mem, "limit": lim, "stats": {}},
        "cpu_stats": cpu, "precpu_stats": pre,
        "blkio_stats": {"io_service_bytes_recursive": None},
        "networks": {},
        "isle_cpu_percent": float(s.get("cpu_percent") or 0.0),
        # a VM container: what it costs the host (QEMU's PSS; template pages split among clones)
        "isle_host_pss": int(s.get("HostPSS") or 0),
    }


# -- images ------------------------------------------------------------------------------------
def image_summary(img: Any, containers: int) -> dict[str, Any]:
    from isle.engine.images import familiar_name

    created = parse_time(img.config.get("created") or "") if img.config.get("created") else 0
    labels = (img.config.get("config") or {}).get("Labels") or {}
    tags = [familiar_name(n) for n in img.names if "@" not in n]
    return {
        "Id": img.id, "ParentId": "", "RepoTags": tags or ["<none>:<none>"],
        "RepoDigests": list(img.repo_digests) or [], "Created": int(created), "Size": img.size,
        "VirtualSize": img.size, "SharedSize": -1, "Labels": labels or None,
        "Containers": containers,
    }


class JsonProgress:
    """isle's pull/push progress protocol -> Docker's JSON message stream (one line per event)."""

    def __init__(self, verb: str = "Pull complete") -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue()
        self.totals: dict[str, int] = {}
        self.cur: dict[str, int] = {}
        self.verb = verb
        self._last: dict[str, float] = {}
        self.cancelled = False

    def cancel(self) -> None:
        """The client went away: the transfer stops at its next progress report (and its
        transaction undoes what it added)."""
        self.cancelled = True

    def _put(self, d: dict[str, Any]) -> None:
        if self.cancelled:
            from isle.errors import IsleError

            raise IsleError("the client went away: transfer cancelled")
        self.q.put(json.dumps(d).encode() + b"\n")

    @staticmethod
    def _id(key: str) -> str:
        k = key.split(":", 1)[-1]
        return k[:12]

    def start(self, key: str, total: int) -> None:
        self.totals[key], self.cur[key] = total, 0
        self._put({"status": "Pulling fs layer" if self.verb.startswith("Pull") else "Preparing",
                   "progressDetail": {}, "id": self._id(key)})

    def advance(self, key: str, n: int) -> None:
        if self.cancelled:
            self._put({})
        self.cur[key] = self.cur.get(key, 0) + n
        now = time.monotonic()
        if now - self._last.get(key, 0) < 0.1:
            return
        self._last[key] = now
        self._put({"status": "Downloading" if self.verb.startswith("Pull") else "Pushing",
                   "progressDetail": {"current": self.cur[key], "total": self.totals.get(key, 0)},
                   "id": self._id(key)})

    def done(self, key: str, status: str) -> None:
        self._put({"status": status or self.verb, "progressDetail": {}, "id": self._id(key)})

    def message(self, text: str) -> None:
        self._put({"status": text})

    def close(self) -> None:
        self.q.put(None)

    def lines(self) -> Iterator[bytes]:
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item


# -- system ------------------------------------------------------------------------------------
def info(i: dict[str, Any], version: str, settings: Any) -> dict[str, Any]:
    runtimes = {"isle-runtime": {"path": "isle-runtime"}, "runc": {"path": "runc"}}
    if os.path.exists(os.path.join(os.path.dirname(sys.executable), "isle-vm-runtime")):
        runtimes["isle-vm-runtime"] = {"path": "isle-vm-runtime"}
    return {
        "ID": _host_id(settings), "Containers": i["Containers"],
        "ContainersRunning": i["ContainersRunning"], "ContainersPaused": i["ContainersPaused"],
        "ContainersStopped": i["ContainersStopped"], "Images": i["Images"],
        "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "overlay"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"],
                    "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
        "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
        "Debug": False, "NFd": 0, "NGoroutines": 0, "SystemTime": iso(time.time()),
        "LoggingDriver": "json-file", "CgroupDriver": i.get("CgroupDriver", "cgroupfs"),
        "CgroupVersion": str(i.get("CgroupVersion", "1")), "NEventsListener": 0,
        "KernelVersion": i.get("KernelVersion", ""), "OperatingSystem": i.get("OperatingSystem",
                                                                               ""),
        "OSVersion": "", "OSType": "linux", "Architecture": os.uname().machine,
        "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": i.get("NCPU", 1), "MemTotal": i.get("MemTotal", 0),
        "DockerRootDir": i.get("Root", ""), "Name": os.uname().nodename, "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": version,
        "Runtimes": runtimes, "DefaultRuntime": "isle-runtime",
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False, "NodeID": "",
                  "NodeAddr": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "container",
        "InitBinary": "", "SecurityOptions": ["name=seccomp,profile=builtin"] + (
            ["name=rootless"] if i.get("Rootless") else []),
        "Warnings": [],
        "IsleIsolationLevels": i.get("Isolation", []), "IsleVMAccelerator":
            i.get("VMAccelerator", ""),
    }


def _host_id(settings: Any) -> str:
    import hashlib

    return hashlib.sha256(f"{os.uname().nodename}:{settings.root}".encode()).hexdigest()[:36]


def system_df(rows: list[dict[str, Any]], eng: Any, images: Any) -> dict[str, Any]:
    imgs = images.list()
    users: dict[str, int] = {}
    for r in eng.list(all=True):
        users[r.image_id] = users.get(r.image_id, 0) + 1
    return {
        "LayersSize": sum(i.size for i in imgs),
        "Images": [image_summary(i, users.get(i.id, 0)) for i in imgs],
        "Containers": [container_summary(eng, r) for r in eng.list(all=True)],
        "Volumes": [volume(eng.volumes.inspect(v.name)) for v in eng.volumes.list()],
        "BuildCache": [],
    }


def event(e: dict[str, Any]) -> dict[str, Any]:
    attrs = {k: str(v) for k, v in (e.get("attrs") or {}).items()}
    t = float(e["time"])
    d = {"Type": e["type"], "Action": e["action"],
         "Actor": {"ID": e["actor"], "Attributes": attrs}, "scope": "local",
         "time": int(t), "timeNano": int(t * 1e9)}
    if e["type"] == "container":  # the pre-1.22 fields old clients still read
        d.update({"status": e["action"], "id": e["actor"], "from": attrs.get("image", "")})
    return d


def network(n: dict[str, Any]) -> dict[str, Any]:
    cfg = []
    for s in n.get("Subnets") or []:
        c = {"Subnet": s.get("subnet", "")}
        if s.get("gateway"):
            c["Gateway"] = s["gateway"]
        if s.get("ip_range") or s.get("range"):
            c["IPRange"] = s.get("ip_range") or s.get("range")
        cfg.append(c)
    created = n.get("Created")
    if isinstance(created, (int, float)):
        created = iso(created)
    return {
        "Name": n["Name"], "Id": n["Id"], "Created": created or iso(0), "Scope": "local",
        "Driver": n.get("Driver", "bridge"), "EnableIPv6": bool(n.get("IPv6")),
        "IPAM": {"Driver": "default", "Options": {}, "Config": cfg},
        "Internal": bool(n.get("Internal")), "Attachable": True, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": n.get("Containers") or {}, "Options": n.get("Options") or {},
        "Labels": n.get("Labels") or {},
    }


def volume(v: dict[str, Any]) -> dict[str, Any]:
    return {"Name": v["Name"], "Driver": v.get("Driver", "local"),
            "Mountpoint": v.get("Mountpoint", ""), "CreatedAt": v.get("CreatedAt", ""),
            "Labels": v.get("Labels") or {}, "Scope": "local", "Options": v.get("Options") or {}}
