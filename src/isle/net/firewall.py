"""isle's own nftables rules for one bridge network, beside netavark's (rendered as data).

netavark 1.4 makes a bridge accept loopback-addressed packets (it sets ``route_localnet=1`` for
any published port, so the host can reach ``127.0.0.1:PORT``), and it routes between all
bridges. Each isle network with members therefore gets one table of its own, replaced
atomically by one ``nft -f`` and deleted with the network's last member:

    table inet isle-<bridge> {
      chain loopback {   # prerouting, raw priority: before conntrack and NAT
        iifname <bridge> ip daddr 127.0.0.0/8 drop        # a container's packet for the host's
        iifname <bridge> ip saddr 127.0.0.0/8 drop        #   loopback services, or one posing
        iifname <bridge> ip6 daddr/saddr ::1, v4-mapped drop   #   as one of them
      }
      chain isolate {    # forward (only on isolated networks, the default)
        ct status dnat return                              # published ports stay reachable
        iifname <bridge> -> another isle bridge drop
        another isle bridge -> oifname <bridge> drop
      }
    }

A drop in any table is final, so netavark's accepts cannot undo these. Replies to the host's own
connections to ``127.0.0.1:PORT`` still pass: netavark masquerades them, so they come back
addressed to the gateway, and conntrack turns them into loopback traffic only after the raw hook.
"Another isle bridge" is an interface of kind bridge whose name starts with ``isle`` (every isle
network's bridge, in any root): two isolated networks drop each other's traffic twice over, an
isolated network drops traffic from an open one, and open networks (``isolate=false``) reach each
other. A container on two networks reaches both directly, through its own interfaces.
"""

from __future__ import annotations

import re

from isle.errors import CommandError, ConfigError, Unsupported
from isle.sys import proc

__all__ = ["table_name", "render", "apply", "remove", "BRIDGE_PREFIX"]

BRIDGE_PREFIX = "isle"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_V6_LOOPBACK = "{ ::1, ::ffff:0.0.0.0/96 }"


def _check(bridge: str) -> str:
    if not _IFNAME.match(bridge or ""):
        raise ConfigError("bridge", f"{bridge!r} is not a valid interface name")
    return bridge


def table_name(bridge: str) -> str:
    return "isle-" + _check(bridge)


def render(bridge: str, isolate: bool = True) -> str:
    """The ``nft -f`` text that (re)creates the bridge's table in one transaction."""
    b, t = f'"{_check(bridge)}"', table_name(bridge)
    lines = [f"table inet {t} {{}}", f"delete table inet {t}", f"table inet {t} {{",
             "  chain loopback {",
             "    type filter hook prerouting priority raw; policy accept;",
             f"    iifname {b} ip daddr 127.0.0.0/8 drop",
             f"    iifname {b} ip saddr 127.0.0.0/8 drop",
             f"    iifname {b} ip6 daddr {_V6_LOOPBACK} drop",
             f"    iifname {b} ip6 saddr {_V6_LOOPBACK} drop",
             "  }"]
    if isolate:
        other = f'"{BRIDGE_PREFIX}*"'
        lines += ["  chain isolate {",
                  "    type filter hook forward priority filter - 5; policy accept;",
                  "    ct status dnat return",
                  f'    iifname {b} oifname != {b} oifname {other} meta oifkind "bridge" drop',
                  f'    oifname {b} iifname != {b} iifname {other} meta iifkind "bridge" drop',
                  "  }"]
    return "\n".join(lines + ["}", ""])


def apply(bridge: str, isolate: bool = True) -> None:
    """Create or replace the bridge's table (atomic: the old rules hold until the new ones do)."""
    _nft(["-f", "-"], render(bridge, isolate))


def remove(bridge: str) -> None:
    """Delete the bridge's table; a table that is not there is fine."""
    text = f"table inet {table_name(bridge)} {{}}\ndelete table inet {table_name(bridge)}\n"
    _nft(["-f", "-"], text)


def _nft(args: list[str], text: str) -> None:
    try:
        cp = proc.run([proc.NFT, *args], input=text.encode(), timeout=30, check=False)
    except CommandError as exc:
        if exc.returncode == 127:
            raise Unsupported("isle's network rules need the nft program: apt-get install "
                              "nftables") from None
        raise
    if cp.returncode != 0:
        err = (cp.stderr or b"").decode(errors="replace").strip()
        raise CommandError([proc.NFT, *args], cp.returncode, err or "nft failed")
