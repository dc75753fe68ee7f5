"""The engine's side of container networking: none / host / bridge networks via isle.net.

    none    a new empty netns made by the runtime (loopback only)          (default)
    host    no netns: the host's network
    NAME    a persistent netns from NetworkManager, connected to NAME ("bridge" = the default
            network) with -p/-P ports, --ip, --dns, --add-host; torn down when the container stops

Publishing ports (-p/-P) or --ip without --network means "bridge", as in Docker.
"""

from __future__ import annotations

import contextlib
TYPE_CHECKING = False  # importing typing costs ~5 ms of every CLI start
if TYPE_CHECKING:
    from typing import Any

from isle.config import Settings
from isle.engine.options import RunOptions
from isle.errors import ConfigError

__all__ = ["mode_of", "validate", "connect", "teardown"]


def mode_of(opts: RunOptions) -> str:
    n = opts.network or ""
    if n in ("", "default"):
        n = "bridge" if (opts.publish or opts.publish_all or opts.ip) else "none"
    return n


def validate(settings: Settings, opts: RunOptions) -> None:
    """Flag-level checks at create time (ports, addresses, network names); no host changes."""
    mode = mode_of(opts)
    if mode in ("none", "host") and (opts.publish or opts.publish_all):
        raise ConfigError("--publish", f"ports cannot be published with --network {mode}")
    if mode in ("none", "host") and opts.ip:
        raise ConfigError("--ip", f"--ip needs a bridge network, not --network {mode}")
    if opts.publish:
        from isle.net import parse_publish

        for p in opts.publish:
            parse_publish(p)
    if mode not in ("none", "host"):
        nm = _nm(settings)
        for n in mode.split(","):
            if n != nm.default_name:
                nm.inspect(n)  # NotFound names the network


def _nm(settings: Settings) -> Any:
    from isle.engine.networks import network_manager

    return network_manager(settings)


def connect(settings: Settings, cid: str, name: str, hostname: str, opts: RunOptions,
            image_config: dict[str, Any]) -> tuple[str | None, dict[str, str], dict[str, Any]]:
    """-> (netns path for the spec: None new empty / "" host / path, /etc files text, extra facts)."""
    mode = mode_of(opts)
    if mode == "none":
        return None, {}, {}
    if mode == "host":
        return "", {}, {}
    from isle.net import parse_expose, parse_publish

    nm = _nm(settings)
    ports = [pm for p in opts.publish for pm in parse_publish(p)]
    if opts.publish_all:
        ports += parse_expose(list((image_config.get("ExposedPorts") or {}).keys()))
    ns = nm.create_netns(cid)
    if ns is None:
        raise ConfigError("--network", "bridge networks need root here; rootless containers "
                          "get --network none")
    nets: list[Any] = []
    for i, n in enumerate(mode.split(",")):
        o: dict[str, Any] = {}
        if i == 0 and opts.ip:
            o["ip"] = opts.ip
        nets.append((n, o))
    try:
        att = nm.connect(cid, ns, nets, ports, name=name, hostname=hostname, dns=opts.dns)
        files = nm.render_etc(cid, hostname=hostname, dns=opts.dns, add_hosts=opts.extra_hosts,
                              mode="bridge")
    except BaseException:
        with contextlib.suppress(Exception):
            nm.teardown(cid)
        raise
    published: dict[str, list[dict[str, str]]] = {}
    display = []
    for pm in att.ports:
        for k in range(pm.range):
            key = f"{pm.container_port + k}/{pm.proto}"
            hip = pm.host_ip or "0.0.0.0"
            published.setdefault(key, []).append({"HostIp": hip, "HostPort": str(pm.host_port + k)})
            display.append(f"{hip}:{pm.host_port + k}->{key}")
    first = next(iter(att.networks.values()), None)
    extra = {"ports": published, "ports_display": display, "netns": ns,
             "ip": first.ips[0] if first and first.ips else "",
             "networks": {k: {"IPAddress": v.ips[0] if v.ips else "", "Gateway":
                              v.gateways[0] if v.gateways else "", "MacAddress": v.mac,
                              "Aliases": list(v.aliases)} for k, v in att.networks.items()}}
    return ns, files, extra


def teardown(settings: Settings, cid: str, opts: RunOptions) -> None:
    if mode_of(opts) in ("none", "host"):
        return
    _nm(settings).teardown(cid)
