"""plan() is pure: golden write lists for v1, hybrid and v2, and field-naming errors."""

from __future__ import annotations

from typing import Any

import pytest

from isle.cgroups import V1Manager, V2Manager
from isle.cgroups.v2 import cpu_weight, io_weight, swap_max
from isle.errors import ConfigError, Unsupported

ALL = ("cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
       "net_cls", "net_prio", "systemd")
V1 = V1Manager("/isle/x", {c: f"/cg/{c}" for c in ALL})
HYBRID = V1Manager("/isle/x", {c: f"/cg/{c}" for c in ALL if c not in ("hugetlb", "net_cls",
                                                                         "net_prio")},
                   unified=V2Manager("/isle/x", "/cg/unified", wanted=["hugetlb"]))
V2 = V2Manager("/isle/x", "/cg")

FULL: dict[str, Any] = {
    "devices": [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": True, "type": "c", "major": 136, "access": "rw"}],
    "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
               "kernel": 16 << 20, "kernelTCP": 8 << 20, "swappiness": 10,
               "disableOOMKiller": True, "useHierarchy": True},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "realtimeRuntime": 950000,
            "realtimePeriod": 1000000, "cpus": "0-1", "mems": "0", "idle": 0},
    "pids": {"limit": 32},
    "blockIO": {"weight": 500, "leafWeight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 600, "leafWeight": 200}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
    "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
}

V1_GOLDEN = [
    ("cpuset.cpus", "0-1"), ("cpuset.mems", "0"),
    ("devices.deny", "a"), ("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rwm"),
    ("devices.allow", "c 136:* rw"),
    ("memory.limit_in_bytes", "67108864"), ("memory.memsw.limit_in_bytes", "134217728"),
    ("memory.soft_limit_in_bytes", "33554432"), ("memory.kmem.limit_in_bytes", "16777216"),
    ("memory.kmem.tcp.limit_in_bytes", "8388608"), ("memory.oom_control", "1"),
    ("memory.swappiness", "10"), ("memory.use_hierarchy", "1"),
    ("cpu.rt_period_us", "1000000"), ("cpu.rt_runtime_us", "950000"), ("cpu.shares", "512"),
    ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000"), ("cpu.idle", "0"),
    ("pids.max", "32"),
    ("blkio.weight", "500"), ("blkio.leaf_weight", "300"), ("blkio.weight_device", "8:0 600"),
    ("blkio.leaf_weight_device", "8:0 200"), ("blkio.throttle.read_bps_device", "8:0 1048576"),
    ("blkio.throttle.write_iops_device", "8:16 100"),
    ("hugetlb.2MB.limit_in_bytes", "4194304"),
    ("net_cls.classid", "1048577"), ("net_prio.ifpriomap", "eth0 5"),
]


def test_v1_golden() -> None:
    assert V1.plan(FULL) == V1_GOLDEN


def test_hybrid_puts_hugetlb_on_unified_and_skips_unmounted_net() -> None:
    plan = HYBRID.plan(FULL)
    assert ("hugetlb.2MB.max", "4194304") in plan
    assert not [f for f, _ in plan if f.startswith(("net_", "hugetlb.2MB.limit"))]
    assert HYBRID._dir_for("hugetlb.2MB.max") == "/cg/unified/isle/x"
    assert HYBRID._dir_for("memory.limit_in_bytes") == "/cg/memory/isle/x"


def test_plan_is_pure_and_empty_for_nothing() -> None:
    assert V1.plan({}) == [] and V2.plan({}) == []
    assert V1.plan(FULL) == V1.plan(FULL)


def test_v1_memory_order_and_unlimited() -> None:
    assert V1.plan({"memory": {"limit": -1}}) == [
        ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]
    assert V1.plan({"memory": {"limit": 100 << 20, "swap": -1}}) == [
        ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "104857600")]
    with pytest.raises(ConfigError, match=r"^linux\.resources\.memory\.swap: "):
        V1.plan({"memory": {"limit": 100, "swap": 50}})


def test_v1_pids_unlimited_and_unset() -> None:
    assert V1.plan({"pids": {"limit": -1}}) == [("pids.max", "max")]
    assert V1.plan({"pids": {"limit": 0}}) == []


def test_devices_empty_list_is_deny_all() -> None:
    assert V1.plan({"devices": []}) == [("devices.deny", "a")]


@pytest.mark.parametrize("res,field", [
    ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness"),
    ({"cpu": {"shares": -2}}, "linux.resources.cpu.shares"),
    ({"cpu": {"idle": 2}}, "linux.resources.cpu.idle"),
    ({"devices": [{"allow": True, "type": "x"}]}, r"linux.resources.devices\[0\].type"),
    ({"devices": [{"allow": True}, {"allow": True, "access": "rwx"}]},
     r"linux.resources.devices\[1\].access"),
    ({"devices": [{"type": "c"}]}, r"linux.resources.devices\[0\].allow"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
     r"linux.resources.hugepageLimits\[0\].pageSize"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
     r"linux.resources.blockIO.throttleReadBpsDevice\[0\].minor"),
    ({"unified": {"memory.high": "1G"}}, "linux.resources.unified"),
    ({"memory": []}, "linux.resources.memory"),
])
def test_v1_bad_values_name_the_field(res: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        V1.plan(res)


def test_hybrid_unified_only_for_unified_controllers() -> None:
    assert HYBRID.plan({"unified": {"hugetlb.2MB.max": "0"}}) == [("hugetlb.2MB.max", "0")]
    with pytest.raises(ConfigError, match=r"unified\['memory.high'\]"):
        HYBRID.plan({"unified": {"memory.high": "1G"}})


def test_unmounted_controller_is_unsupported() -> None:
    m = V1Manager("/x", {"memory": "/cg/memory"})
    with pytest.raises(Unsupported, match=r"linux\.resources\.pids\.limit.*pids"):
        m.plan({"pids": {"limit": 5}})
    assert m.plan({"network": {"classID": 5}}) == []  # net_cls/net_prio: skipped like runc


V2_GOLDEN = [
    ("cpuset.cpus", "0-1"), ("cpuset.mems", "0"),
    ("memory.swap.max", "67108864"), ("memory.max", "67108864"), ("memory.low", "33554432"),
    ("cpu.idle", "0"), ("cpu.weight", "59"), ("cpu.max", "50000 100000"),
    ("pids.max", "32"),
    ("io.weight", "default 4950"), ("io.weight", "8:0 5960"),
    ("io.max", "8:0 rbps=1048576"), ("io.max", "8:16 wiops=100"),
    ("hugetlb.2MB.max", "4194304"),
    ("memory.high", "60M"),
]


def v2_res() -> dict[str, Any]:
    r = {k: v for k, v in FULL.items() if k not in ("devices", "network")}
    r["memory"] = {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20}
    r["cpu"] = {k: v for k, v in FULL["cpu"].items() if not k.startswith("realtime")}
    r["blockIO"] = {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 600}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]}
    r["unified"] = {"memory.high": "60M"}
    return r


def test_v2_golden() -> None:
    assert V2.plan(v2_res()) == V2_GOLDEN


def test_v2_conversions_match_runc() -> None:
    assert [cpu_weight(s) for s in (0, 2, 1024, 262144, 512, 100000)] == [0, 1, 100, 10000, 59,
                                                                           4340]
    assert io_weight(10) == 1 and io_weight(1000) == 10000 and io_weight(500) == 4950
    assert swap_max(0, -1, "f") == -1       # memory unlimited, swap unset -> both unlimited
    assert swap_max(-1, 100, "f") == -1
    assert swap_max(200, 100, "f") == 100   # memory+swap -> swap alone
    assert swap_max(100, 100, "f") == 0
    with pytest.raises(ConfigError, match="^f: "):
        swap_max(50, 100, "f")
    with pytest.raises(ConfigError, match="^f: "):
        swap_max(50, 0, "f")


def test_v2_swap_equal_to_memory_disables_swap() -> None:
    assert V2.plan({"memory": {"limit": 100, "swap": 100}}) == [
        ("memory.swap.max", "0"), ("memory.max", "100")]
    assert V2.plan({"memory": {"limit": -1}}) == [("memory.swap.max", "max"), ("memory.max", "max")]


def test_v2_cpu_max_forms() -> None:
    assert V2.plan({"cpu": {"quota": -1, "period": 100000}}) == [("cpu.max", "max 100000")]
    assert V2.plan({"cpu": {"quota": 20000}}) == [("cpu.max", "20000")]


@pytest.mark.parametrize("res,field", [
    ({"memory": {"kernel": 1 << 20}}, "linux.resources.memory.kernel"),
    ({"memory": {"swappiness": 5}}, "linux.resources.memory.swappiness"),
    ({"cpu": {"realtimeRuntime": 5}}, "linux.resources.cpu.realtimeRuntime"),
    ({"blockIO": {"leafWeight": 100}}, "linux.resources.blockIO.leafWeight"),
])
def test_v2_unsupported_fields(res: dict[str, Any], field: str) -> None:
    with pytest.raises(Unsupported, match=rf"^{field}: "):
        V2.plan(res)


def test_v2_devices_rendered_as_data() -> None:
    rules = V2.device_rules({"devices": FULL["devices"]})
    assert rules == [
        {"allow": False, "type": "a", "major": None, "minor": None, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 136, "minor": None, "access": "rw"}]
    assert V2.plan({"devices": FULL["devices"]}) == []


@pytest.mark.parametrize("res,field", [
    ({"hugepageLimits": ["2MB"]}, r"linux.resources.hugepageLimits\[0\]"),
    ({"hugepageLimits": {"pageSize": "2MB"}}, "linux.resources.hugepageLimits"),
    ({"blockIO": {"weightDevice": [None]}}, r"linux.resources.blockIO.weightDevice\[0\]"),
    ({"network": {"priorities": [{"name": "eth 0", "priority": 1}]}},
     r"linux.resources.network.priorities\[0\].name"),
])
def test_malformed_lists_name_the_entry(res: dict[str, Any], field: str) -> None:
    for m in (V1, V2):
        if "network" in res and m is V2:
            continue
        with pytest.raises(ConfigError, match=rf"^{field}: "):
            m.plan(res)
