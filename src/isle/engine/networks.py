"""Networks as user-facing objects: a thin facade over isle.net for the CLI and the API.

    nets = Networks(settings)
    nets.create("web", subnet=["10.89.5.0/24"])      # report dicts, Docker-ish field names
    nets.connect("web", container)                   # container by id, id prefix or name
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from typing import Any

from isle.config import Settings
from isle.engine.options import parse_labels
from isle.errors import AlreadyExists, ConfigError, InvalidState, NotFound, Unsupported
from isle.net import Network, NetworkManager

__all__ = ["Networks", "network_manager"]


def network_manager(settings: Settings) -> NetworkManager:
    """The NetworkManager for these settings (one per root)."""
    return NetworkManager(root=os.path.join(settings.root, "networks"),
                          runroot=os.path.join(settings.runroot, "networks"))


def report(net: Network) -> dict[str, Any]:
    return {"Name": net.name, "Id": net.id, "Driver": net.driver, "Bridge": net.bridge,
            "Subnets": [s.to_dict() for s in net.subnets], "Internal": net.internal,
            "IPv6": net.ipv6, "DNS": net.dns_enabled, "Labels": dict(net.labels),
            "Options": dict(net.options), "Isolated": net.isolate, "Created": net.created}


class Networks:
    def __init__(self, settings: Settings, nm: NetworkManager | None = None) -> None:
        self.settings = settings
        self.nm = nm or network_manager(settings)

    def create(self, name: str, *, subnet: Sequence[str] = (), gateway: Sequence[str] = (),
               ip_range: Sequence[str] = (), internal: bool = False, labels: Sequence[str] = (),
               ipv6: bool = False, driver: str = "bridge", options: Sequence[str] = ()
               ) -> dict[str, Any]:
        if self.settings.rootless:  # no container of this user could join it (see docs/design)
            raise Unsupported("user networks need root here: each rootless container gets its "
                              "own slirp4netns (reach another through a port it publishes)")
        opts = {}
        for o in options:
            k, eq, v = o.partition("=")
            if not k or not eq:
                raise ConfigError("opt", f"{o!r} is not KEY=VALUE")
            opts[k.strip()] = v
        return report(self.nm.create(name, list(subnet) or None, list(gateway) or None,
                                     list(ip_range) or None, internal, parse_labels(list(labels)),
                                     ipv6, driver, opts))

    def list(self) -> builtins.list[dict[str, Any]]:
        return [report(n) for n in self.nm.list()]

    def inspect(self, name: str) -> dict[str, Any]:
        d = self.nm.inspect(name)
        net = Network.from_dict({k: v for k, v in d.items() if k != "containers"})
        return {**report(net), "Containers": d["containers"]}

    def remove(self, names: Sequence[str]) -> builtins.list[str]:
        for n in names:
            self.nm.remove(n)
        return list(names)

    def prune(self) -> builtins.list[str]:
        return self.nm.prune()

    def _find(self, ref: str, *, optional: bool = False) -> dict[str, Any] | None:
        recs = self.nm.store.records()
        hit = ([r for r in recs if r["id"] == ref or r["name"] == ref]
               or [r for r in recs if r["id"].startswith(ref)])
        if len(hit) > 1:
            raise NotFound(f"{ref!r} matches {len(hit)} containers")
        if not hit and not optional:
            raise NotFound(f"no running container {ref!r} with a network namespace")
        return hit[0] if hit else None

    def connect(self, network: str, container: str, *, ip: Sequence[str] = (),
                aliases: Sequence[str] = ()) -> dict[str, Any]:
        """Connect a container: a running one now (a new interface), a created or stopped one
        at its next start (Docker's)."""
        rec = self._find(container, optional=True)
        if rec is None:
            return self._next_start(network, container, list(ip), list(aliases))
        _not_a_vm(rec, container)
        self._one_network(rec["id"], container)
        before = self.nm.hosts_ips(rec["id"])
        att = self.nm.connect(rec["id"], rec["ns_path"],
                              [(network, {"ips": list(ip), "aliases": list(aliases)})],
                              name=rec["name"])
        self._refresh_resolv(rec["id"])
        self._refresh_hosts(rec["id"], before, rec["name"])
        self._sync_record(rec["id"], {network: list(ip)} if ip else None)
        return att.networks[network].to_dict()

    def _one_network(self, cid: str, ref: str) -> None:
        """Refuse (dis)connecting a running container whose runtime's guest takes one interface
        (engine/runtimes.py caps.multi_network: a VM's)."""
        from isle.engine.db import Db

        if not os.path.exists(self.settings.db_path):
            return
        db = Db(self.settings.db_path)
        try:
            opts = db.get_container(cid).opts
        except NotFound:
            return
        finally:
            db.conn.close()
        _one_network(opts, ref)

    def _next_start(self, network: str, ref: str, ips: builtins.list[str] | None,
                    aliases: builtins.list[str]) -> dict[str, Any]:
        """Connect (ips not None) or disconnect a container that is not running: its options
        name the networks its next start joins. Under the container's lock, so a start waits."""
        from isle.engine.db import Db
        from isle.engine.layout import ContainerPaths
        from isle.sys.fs import flock

        if not os.path.exists(self.settings.db_path):
            raise NotFound(f"no such container: {ref}")
        db = Db(self.settings.db_path)
        try:
            cid = db.get_container(ref).id                  # NotFound names it
            lock = ContainerPaths.of(self.settings, cid).lock
            os.makedirs(os.path.dirname(lock), exist_ok=True)
            with flock(lock):
                rec = db.get_container(cid)
                o = dict(rec.opts)
                _one_network(o, ref)
                mode = o.get("network") or ""
                if mode in ("", "default"):
                    mode = "slirp4netns" if self.settings.rootless else self.nm.default_name
                if rec.state in ("running", "paused", "restarting") or mode in (
                        "none", "host", "slirp4netns") or mode.startswith("container:"):
                    raise InvalidState(f"container {ref} runs with --network {mode}: it cannot "
                                       f"{'join' if ips is not None else 'leave'} network "
                                       f"{network}" + (" while running" if rec.state in
                                                       ("running", "paused") else ""))
                names = mode.split(",")
                eps = dict(o.get("network_endpoints") or {})
                if ips is not None:
                    self.nm.inspect(network)                # NotFound names the network
                    if network in names:
                        raise AlreadyExists(f"container {ref} is already connected to network "
                                            f"{network}")
                    names.append(network)
                    eps[network] = {"aliases": aliases, **({"ips": ips} if ips else {})}
                else:
                    if network not in names:
                        raise NotFound(f"container {ref} is not connected to network {network}")
                    if names[0] == network:     # --ip and --network-alias were the primary's
                        o["ip"], o["network_aliases"] = "", []
                    names.remove(network)
                    eps.pop(network, None)
                o["network"] = ",".join(names) or "none"
                o["network_endpoints"] = eps
                db.update_container(cid, opts=o)
        finally:
            db.conn.close()
        return {"network": network, "at_next_start": True}

    def _sync_record(self, cid: str, static: dict[str, builtins.list[str]] | None = None) -> None:
        """The engine's record (inspect, ps) shows the networks the container is on now."""
        from isle.engine.db import Db
        from isle.engine.netplug import attachment_facts

        if not os.path.exists(self.settings.db_path):
            return
        att = self.nm.attachment(cid)
        db = Db(self.settings.db_path)
        try:
            try:
                rec = db.get_container(cid)
            except NotFound:
                return
            facts = attachment_facts(att) if att else {"networks": {}, "ip": ""}
            extra = {**rec.extra, "networks": facts["networks"], "ip": facts["ip"]}
            # the next start joins the same networks (Docker keeps connections over restarts)
            old = rec.opts.get("network_endpoints") or {}
            eps: dict[str, Any] = {}
            for k, v in facts["networks"].items():
                eps[k] = {"aliases": [a for a in v["Aliases"] if a != cid[:12]]}
                ips = (static or {}).get(k) or (old.get(k) or {}).get("ips")
                if ips:                     # `network connect --ip` stays static
                    eps[k]["ips"] = ips
            opts = {**rec.opts, "network": ",".join(facts["networks"]) or "none",
                    "network_endpoints": eps}
            was = (rec.opts.get("network") or "").split(",")[0]
            if opts["network"].split(",")[0] != (was if was not in ("", "default")
                                                 else self.nm.default_name):
                opts["ip"], opts["network_aliases"] = "", []   # they were the old primary's
            db.update_container(cid, extra=extra, opts=opts)
        finally:
            db.conn.close()

    def _refresh_resolv(self, cid: str) -> None:
        """Point a running container's resolv.conf at its networks' DNS now (podman's connect),
        keeping its search and options lines; written in place: the file is bind-mounted."""
        from isle.engine.layout import ContainerPaths

        path = os.path.join(ContainerPaths.of(self.settings, cid).bundle, "resolv.conf")
        if not os.path.isfile(path) or self.nm.store.record(cid) is None:
            return
        with open(path) as f:
            old = f.read()
        keep = [ln for ln in old.splitlines() if ln.split()[:1] in (["search"], ["options"])]
        rec = self.nm.store.record(cid) or {}
        new = self.nm.render_etc(cid, dns=rec.get("dns") or [])["/etc/resolv.conf"]
        lines = [ln for ln in new.splitlines() if ln.split()[:1] not in (["search"], ["options"])]
        with open(path, "r+") as f:
            f.seek(0)
            f.write("\n".join(lines + keep) + "\n")
            f.truncate()

    def _refresh_hosts(self, cid: str, before: builtins.list[str], name: str) -> None:
        """Name a running container in its /etc/hosts on the networks it is on now (Docker's
        connect/disconnect); other lines stay; written in place: the file is bind-mounted."""
        from isle.engine.layout import ContainerPaths
        from isle.net import etc

        bundle = ContainerPaths.of(self.settings, cid).bundle
        path = os.path.join(bundle, "hosts")
        if not os.path.isfile(path):
            return
        try:
            with open(os.path.join(bundle, "hostname")) as f:
                names = [f.read().strip() or cid[:12]]
        except OSError:
            names = [cid[:12]]
        names += [name] if name not in names else []
        with open(path, "r+") as f:
            new = etc.update_hosts(f.read(), before, self.nm.hosts_ips(cid), names)
            f.seek(0)
            f.write(new)
            f.truncate()

    def port(self, container: str) -> builtins.list[str]:
        """`isle port`: "80/tcp -> 127.0.0.1:8080" lines for a container's published ports."""
        rec = self._find(container)
        assert rec is not None
        return [str(p) for p in self.nm.port(rec["id"])]

    def disconnect(self, network: str, container: str) -> None:
        """Disconnect a container now, or, if it is not running, from its next start."""
        rec = self._find(container, optional=True)
        if rec is None:
            self._next_start(network, container, None, [])
            return
        _not_a_vm(rec, container)
        self._one_network(rec["id"], container)
        cid = rec["id"]
        before = self.nm.hosts_ips(cid)
        self.nm.disconnect(cid, network)
        self._refresh_resolv(cid)
        self._refresh_hosts(cid, before, rec["name"])
        self._sync_record(cid)


def _one_network(opts: dict[str, Any], ref: str) -> None:
    from isle.engine.runtimes import for_path

    if not for_path(opts.get("runtime") or "", "").caps.multi_network:
        raise Unsupported(f"{ref} is a VM: it joins one network, chosen at run (--network)")


def _not_a_vm(rec: dict[str, Any], ref: str) -> None:
    """A VM's NIC is one tap on one bridge, fixed when QEMU starts: no hot (dis)connect."""
    if rec.get("tap"):
        raise Unsupported(f"{ref} is a VM: it joins one network, chosen at run (--network)")
