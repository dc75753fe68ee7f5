"""netavark JSON produced from isle's plan (golden), and the public surface."""

from __future__ import annotations

import isle.net
from isle.net.ipam import plan_subnet
from isle.net.netavark import Netavark
from isle.net.types import Network, PortMapping


def test_options_json_matches_netavark_schema():
    net = Network(name="web", id="a" * 64, bridge="isle-aaaaaaaa",
                  subnets=(plan_subnet("10.89.0.0/24"),), dns_enabled=True)
    opts = Netavark("/x").options(container_id="c" * 64, name="one", net=net, interface="eth0",
                                  ips=["10.89.0.2"], aliases=["db"],
                                  ports=[PortMapping("127.0.0.1", 8080, 80, "tcp", 2)],
                                  dns_servers=["192.0.2.53"])
    assert opts == {
        "container_id": "c" * 64,
        "container_name": "one",
        "networks": {"isle-aaaaaaaaaaaa": {"interface_name": "eth0", "static_ips": ["10.89.0.2"],
                                           "aliases": ["db"]}},
        "network_info": {"isle-aaaaaaaaaaaa": {
            "name": "isle-aaaaaaaaaaaa", "id": "a" * 64, "driver": "bridge", "network_interface": "isle-aaaaaaaa",
            "subnets": [{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}],
            "ipv6_enabled": False, "internal": False, "dns_enabled": True,
            "ipam_options": {"driver": "host-local"}, "options": {}}},
        "port_mappings": [{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80,
                           "protocol": "tcp", "range": 2}],
        "dns_servers": ["192.0.2.53"],
    }


def test_public_surface():
    for name in isle.net.__all__:
        assert getattr(isle.net, name) is not None
    assert str(PortMapping("", 8000, 80, "tcp", 2)) == "80-81/tcp -> 0.0.0.0:8000-8001"
