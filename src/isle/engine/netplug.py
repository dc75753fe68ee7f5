"""The engine's side of container networking: the --network modes wired to isle.net.

    (default)        "bridge" (Docker's default network) as root; "slirp4netns" rootless (podman's)
    none             a new empty netns made by the runtime (loopback only): the fast path
    host             no netns: the host's network
    container:NAME   the netns of another running container (its /etc/hosts and resolv.conf too)
    NAME[,NAME..]    a persistent netns from NetworkManager, connected to the networks with -p/-P,
                     --ip, --network-alias, --dns, --dns-search; torn down when the container stops
    slirp4netns      rootless: the runtime makes the netns, then ``after_start`` runs slirp4netns

Engine calls: validate (create), connect (start, before the spec), after_start (once the init's
pid is known), teardown (stop/rm), gc (system prune).

A VM container gets exactly what a container gets: the same network namespace with its veth on
the bridge, DNS name, /etc files and published ports. The VM runtime connects its guest to that
namespace itself (Kata's way: tc mirred between the veth and a tap), so podman and containerd
give it a network the same way. What differs is asked of the runtime (engine/runtimes.py Caps):
a guest takes one interface (``multi_network``), and a rootless guest has no slirp4netns
(``rootless_network``).
"""

from __future__ import annotations

from isle.config import Settings
from isle.engine.options import RunOptions
from isle.engine.quiet import suppress
from isle.errors import ConfigError, InvalidState, NotFound

TYPE_CHECKING = False  # no typing at run time on a start path (docs/startup.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ["mode_of", "validate", "rootless_fallback", "connect", "after_start", "teardown",
           "attachment_facts", "gc", "SLIRP"]

SLIRP = "slirp4netns"


#: podman's slirp4netns options isle knows: --network slirp4netns:allow_host_loopback=true
SLIRP_OPTIONS = {"allow_host_loopback": ("true", "false")}


def slirp_options(opts: RunOptions) -> dict[str, str]:
    """The options of --network slirp4netns:K=V,...; ConfigError names one isle does not know."""
    n = opts.network or ""
    if not n.startswith(SLIRP + ":"):
        return {}
    out = {}
    for kv in n[len(SLIRP) + 1:].split(","):
        k, _, v = kv.partition("=")
        if v not in SLIRP_OPTIONS.get(k, ()):
            known = ", ".join(f"{o}={'|'.join(vs)}" for o, vs in SLIRP_OPTIONS.items())
            raise ConfigError("--network", f"slirp4netns option {kv!r} is not one of: {known}")
        out[k] = v
    return out


def mode_of(opts: RunOptions, rootless: bool = False) -> str:
    n = opts.network or ""
    if n.startswith(SLIRP + ":"):
        n = SLIRP
    if n in ("", "default"):
        n = SLIRP if rootless else "bridge"
    if n == "bridge" and rootless:
        n = SLIRP
    return n


#: why a rootless VM has no network: QEMU 7.2's user networking (the only kind an unprivileged
#: QEMU gets) forwards every guest connection to 10.0.2.2 to the host's 127.0.0.1, with no
#: option to turn that off (slirp4netns containers run --disable-host-loopback)
_VM_NO_NET = ("QEMU's user networking would let the guest reach the host's loopback services "
              "(10.0.2.2 -> 127.0.0.1); run the VM as root for a bridge network")


def rootless_fallback(settings: Settings, opts: RunOptions) -> str:
    """Settle a rootless container's network mode at create, so ps and inspect show the mode
    it gets: the default (or "bridge") is slirp4netns, and none when /dev/net/tun is unusable
    (a warning says why; an explicit --network or -p still fails at start with the reason)."""
    import os

    if not settings.rootless:
        return ""
    if not _caps(opts).rootless_network:
        if (opts.network or "") not in ("", "default", "bridge", SLIRP):
            return ""
        if (opts.network or "") not in ("", "default") or opts.publish or opts.publish_all:
            raise ConfigError("--network", f"a rootless VM gets no network: {_VM_NO_NET}")
        opts.network = "none"
        return f"no network: {_VM_NO_NET}; the VM runs with --network none"
    if (opts.network or "") not in ("", "default") or opts.publish or opts.publish_all \
            or os.access("/dev/net/tun", os.R_OK | os.W_OK):
        if (opts.network or "") in ("", "default", "bridge"):
            opts.network = SLIRP
        return ""
    opts.network = "none"
    return ("no network: rootless networking (slirp4netns) needs /dev/net/tun read-writable by "
            f"uid {os.getuid()}; the container runs with --network none")


def _caps(opts: RunOptions) -> Any:
    from isle.engine.runtimes import for_path

    return for_path(opts.runtime or "", "").caps


def _special(mode: str) -> bool:
    return mode in ("none", "host") or mode.startswith("container:")


def validate(settings: Settings, opts: RunOptions,
             lookup: Callable[[str], Any] | None = None) -> None:
    """Flag-level checks at create time (ports, addresses, network names); no host changes."""
    mode = mode_of(opts, settings.rootless)
    slirp_options(opts)
    if _special(mode):
        what = mode.split(":")[0]
        for flag, val in (("--publish", opts.publish or opts.publish_all), ("--ip", opts.ip),
                          ("--network-alias", opts.network_aliases)):
            if val:
                raise ConfigError(flag, f"{flag} needs a bridge network, not --network {what}")
    if mode.startswith("container:"):
        ref = mode.split(":", 1)[1]
        if not ref:
            raise ConfigError("--network", "container: needs a container name or id")
        for flag, val in (("--hostname", opts.hostname), ("--dns", opts.dns),
                          ("--add-host", opts.extra_hosts), ("--dns-search", opts.dns_search)):
            if val:
                raise ConfigError(flag, f"conflicting options: {flag} and --network container:")
        if lookup is not None:
            lookup(ref)                  # NotFound names the container
    if opts.publish:
        from isle.net import parse_publish

        for p in opts.publish:
            parse_publish(p)
    if opts.dns:
        from isle.net import etc

        etc.render_resolv(host_resolv="", dns=opts.dns)   # names a bad address
    if opts.extra_hosts:
        from isle.net import parse_add_host

        for h in opts.extra_hosts:
            parse_add_host(h, "10.0.0.1")
    if mode == SLIRP and opts.ip:
        raise ConfigError("--ip", "--ip needs a bridge network "
                          "(rootless containers use slirp4netns)")
    if not _special(mode) and "," in mode and not _caps(opts).multi_network:
        raise ConfigError("--network", "a VM joins one network (its guest takes one interface)")
    if not _special(mode) and mode != SLIRP:
        nm = _nm(settings)
        for n in mode.split(","):
            if n != nm.default_name:
                nm.inspect(n)  # NotFound names the network
        if opts.ip:  # checked now: a failed start must not leave a Created container behind
            from isle.net.ipam import check_requested

            try:
                net = nm.networks.get(mode.split(",")[0])
            except NotFound:  # the default network is made at its first use
                net = None
            if net is not None:
                check_requested(net, [opts.ip], "--ip")


def _nm(settings: Settings) -> Any:
    from isle.engine.networks import network_manager

    return network_manager(settings)


def _ports(opts: RunOptions, image_config: dict[str, Any]) -> list[Any]:
    from isle.net import parse_expose, parse_publish

    ports = [pm for p in opts.publish for pm in parse_publish(p)]
    if opts.publish_all:
        ports += parse_expose(list((image_config.get("ExposedPorts") or {}).keys()))
    return ports


def connect(settings: Settings, cid: str, name: str, hostname: str, opts: RunOptions,
            image_config: dict[str, Any], lookup: Callable[[str], Any] | None = None
            ) -> tuple[str | None, dict[str, str], dict[str, Any]]:
    """-> (netns path for the spec: None new empty / "" host / path, /etc files text, extra facts).

    The same for every runtime: a VM's runtime connects its guest to the namespace itself.
    """
    mode = mode_of(opts, settings.rootless)
    if mode == "none":
        return None, {}, {}
    if mode == "host":
        return "", {}, {}
    if mode.startswith("container:"):
        return _join_container(settings, mode.split(":", 1)[1], lookup)
    nm = _nm(settings)
    if mode == SLIRP:             # the netns is the runtime's; slirp4netns starts in after_start
        from isle.net import slirp

        files = nm.render_etc(cid, hostname=hostname, dns=opts.dns or [slirp.DNS],
                              dns_search=opts.dns_search, dns_options=opts.dns_options,
                              add_hosts=opts.extra_hosts, mode="none")
        if not _caps(opts).rootless_network:
            raise ConfigError("--network", f"a rootless VM gets no network: {_VM_NO_NET}")
        return None, files, {"slirp": True}
    ports = _ports(opts, image_config)
    ns = nm.create_netns(cid)
    if ns is None:
        raise ConfigError("--network", "bridge networks need root here; rootless containers "
                          "get slirp4netns")
    nets: list[Any] = []
    for i, n in enumerate(mode.split(",")):
        ep = opts.network_endpoints.get(n) or {}     # from `isle network connect`
        extra_aliases = ep.get("aliases") or []
        aliases = list(opts.network_aliases) if i == 0 else []
        o: dict[str, Any] = {"aliases": aliases + [a for a in extra_aliases if a not in aliases]}
        if i == 0 and opts.ip:
            o["ip"] = opts.ip
        elif ep.get("ips"):
            o["ips"] = list(ep["ips"])
        nets.append((n, o))
    try:
        att = nm.connect(cid, ns, nets, ports, name=name, hostname=hostname, dns=opts.dns)
        files = nm.render_etc(cid, hostname=hostname, dns=opts.dns, dns_search=opts.dns_search,
                              dns_options=opts.dns_options, add_hosts=opts.extra_hosts,
                              mode="bridge")
    except BaseException:
        with suppress(Exception):
            nm.teardown(cid)
        raise
    return ns, files, {**attachment_facts(att), "netns": ns}


def attachment_facts(att: Any) -> dict[str, Any]:
    """Docker-shaped port and network facts of an attachment for the container's record."""
    published: dict[str, list[dict[str, str]]] = {}
    display = []
    for pm in att.ports:
        for k in range(pm.range):
            key = f"{pm.container_port + k}/{pm.proto}"
            hip = pm.host_ip or "0.0.0.0"
            published.setdefault(key, []).append({"HostIp": hip, "HostPort": str(pm.host_port + k)})
            display.append(f"{hip}:{pm.host_port + k}->{key}")
    first = next(iter(att.networks.values()), None)
    return {"ports": published, "ports_display": display,
            "ip": first.ips[0] if first and first.ips else "",
            "networks": {k: {"IPAddress": v.ips[0] if v.ips else "", "Gateway":
                             v.gateways[0] if v.gateways else "", "MacAddress": v.mac,
                             "Aliases": list(v.aliases)} for k, v in att.networks.items()}}


def _join_container(settings: Settings, ref: str, lookup: Callable[[str], Any] | None
                    ) -> tuple[str | None, dict[str, str], dict[str, Any]]:
    if lookup is None:
        raise ConfigError("--network", "container: mode needs the engine's container lookup")
    other = lookup(ref)
    if other.state not in ("running", "paused") or not other.pid:
        raise InvalidState(f"container {ref} is not running: cannot join its network namespace")
    ns = f"/proc/{other.pid}/ns/net"
    files: dict[str, str] = {}
    nm = _nm(settings)
    if nm.store.record(other.id) is not None:
        files = nm.render_etc(other.id, hostname=other.opts.get("hostname") or other.id[:12],
                              dns=other.opts.get("dns") or [],
                              dns_search=other.opts.get("dns_search") or [],
                              add_hosts=other.opts.get("extra_hosts") or [], mode="bridge")
    return ns, files, {"joined": other.id}


def after_start(settings: Settings, cid: str, name: str, pid: int, opts: RunOptions,
                image_config: dict[str, Any]) -> dict[str, Any]:
    """Rootless: slirp4netns into the init's netns (pid known, before the user process runs)."""
    if mode_of(opts, settings.rootless) != SLIRP or not _caps(opts).rootless_network:
        return {}
    nm = _nm(settings)
    rec = nm.store.record(cid)
    if rec is not None and (rec.get("slirp") or {}).get("pid"):  # slirp_hook made it
        return {**attachment_facts(nm._attachment(rec)), "slirp": True}
    from isle.net.rootless import connect_slirp

    att = connect_slirp(nm, cid, pid, _ports(opts, image_config), name=name,
                        host_loopback=slirp_options(opts).get("allow_host_loopback") == "true")
    return {**attachment_facts(att), "slirp": True}


def slirp_hook(settings: Settings, cid: str, name: str, opts: RunOptions,
               image_config: dict[str, Any]) -> dict[str, Any] | None:
    """Rootless: the createRuntime hook that gives the init's netns slirp4netns while the init
    still lets its owner open /proc/PID/ns/* (it turns non-dumpable before waiting on
    exec.fifo, and then only CAP_SYS_PTRACE could); None where no slirp4netns is wanted."""
    if not settings.rootless or mode_of(opts, True) != SLIRP or not _caps(opts).rootless_network:
        return None
    from isle.engine.rootless import slirp_hook as hook

    return hook(settings.root, settings.runroot, cid, name,
                [p.to_dict() for p in _ports(opts, image_config)],
                slirp_options(opts).get("allow_host_loopback") == "true")


def teardown(settings: Settings, cid: str, opts: RunOptions) -> None:
    mode = mode_of(opts, settings.rootless)
    if _special(mode):
        return
    _nm(settings).teardown(cid)


def gc(settings: Settings, live: Iterable[str]) -> dict[str, list[str]]:
    """Undo the networking of every container id not in live (after crashes; system prune)."""
    return _nm(settings).gc(live)  # type: ignore[no-any-return]
