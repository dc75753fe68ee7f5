"""engine/update.py's pure parts: which LinuxResources a live update sends (only what changed;
a lifted limit is -1 as runc update takes it) and the field checks (each error names the flag)."""

from __future__ import annotations

import pytest

from isle.engine.options import RunOptions
from isle.engine.update import _check, live_resources
from isle.errors import ConfigError


def test_only_changed_sections_are_sent() -> None:
    o = RunOptions(image="busybox", memory=128 << 20, cpus=0.5, pids_limit=40)
    assert live_resources(o, {"memory"}) == {"memory": {"limit": 128 << 20, "swap": 256 << 20}}
    assert live_resources(o, {"cpus"}) == {"cpu": {"period": 100000, "quota": 50000}}
    assert live_resources(o, {"pids_limit"}) == {"pids": {"limit": 40}}
    o.pids_limit = 0
    assert live_resources(o, {"pids_limit"}) == {"pids": {"limit": -1}}  # unlimited
    o.memory_swap = -1
    assert live_resources(o, {"memory_swap"})["memory"]["swap"] == -1
    o.memory_reservation = 64 << 20
    assert live_resources(o, {"memory_reservation"}) == {"memory": {"reservation": 64 << 20}}


@pytest.mark.parametrize("changes,flag", [
    ({"memory": "lots"}, "--memory"), ({"cpus": -1}, "--cpus"), ({"pids_limit": -5},
                                                                 "--pids-limit"),
    ({"blkio_weight": 5}, "--blkio-weight"), ({"cpu_shares": 1}, "--cpu-shares"),
    ({"cpuset_cpus": 3}, "--cpuset-cpus"), ({"privileged": True}, "privileged"),
    ({"memory": True}, "--memory"),
])
def test_bad_values_name_the_flag(changes: dict, flag: str) -> None:
    with pytest.raises(ConfigError) as e:
        _check(changes)
    assert flag in str(e.value)
