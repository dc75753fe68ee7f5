"""isle.net: networks for containers and VMs (plan and record in isle, plumbing by netavark).

    from isle.net import NetworkManager, PortMapping, parse_publish
"""

from isle.net.etc import parse_add_host
from isle.net.manager import DEFAULT_BRIDGE, DEFAULT_SUBNET, NetworkManager
from isle.net.ports import parse_expose, parse_publish
from isle.net.types import (
    Attachment,
    Network,
    NetworkAttachment,
    PortMapping,
    Subnet,
    TapAttachment,
)

__all__ = ["NetworkManager", "PortMapping", "Attachment", "NetworkAttachment", "TapAttachment",
           "Network", "Subnet", "parse_publish", "parse_expose", "parse_add_host",
           "DEFAULT_SUBNET", "DEFAULT_BRIDGE"]
