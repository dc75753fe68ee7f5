"""isle advise's rules as a table of cases over a fixed bench document (this host's numbers)."""

from __future__ import annotations

import pytest

from isle.bench import advise
from isle.errors import ConfigError

MIB = 1048576


def _lv(cold, warm, pss_mib, kernel="6.18", shared=True):
    return {"ok": True, "reason": "",
            "start": {"exit_ms": {"cold": cold, "warm": warm}},
            "density": {"pss_bytes_per_instance": pss_mib * MIB,
                        "fit": {"intercept_bytes": 0, "slope_bytes": pss_mib * MIB},
                        "memory_budget_bytes": 4096 * MIB, "instances_in_budget": 4096 // pss_mib},
            "surface": {"kernel": kernel, "shared_kernel": shared, "syscalls_reachable": 5,
                        "syscalls_tried": 30, "capabilities": 14}}


DOC = {"created": "2026-12-06T00:00:00Z", "mode": "quick", "host": {"accelerator": "TCG"},
       "levels": {"native": _lv(2, 1, 0.2), "container": _lv(95, 70, 1),
                  "sandbox": _lv(350, 1800, 20, "4.4.0", False),
                  "microvm": _lv(2700, 2500, 236, "6.1", False),
                  "microvm-template": _lv(700, 650, 238, "6.1", False),
                  "os-vm": {"ok": False, "reason": "not measured"}}}
NO_VM = {**DOC, "levels": {**DOC["levels"], "microvm": {"ok": False, "reason": "no qemu"},
                            "microvm-template": {"ok": False, "reason": "no qemu"}}}
NO_SANDBOX_NO_VM = {**NO_VM, "levels": {**NO_VM["levels"],
                                        "sandbox": {"ok": False, "reason": "no runsc"}}}

CASES = [
    # (workload, bench doc, expected recommendation)
    ({}, DOC, "container"),
    ({"trust": "own", "rootless": True}, DOC, "rootless"),
    ({"trust": "third-party"}, DOC, "hardened"),
    ({"trust": "third-party", "rootless": True}, DOC, "hardened"),
    ({"trust": "untrusted"}, DOC, "microvm"),
    ({"trust": "untrusted", "start-budget-ms": 1000}, DOC, "microvm"),
    ({"trust": "untrusted", "start-budget-ms": 300}, DOC, "sandbox"),
    ({"trust": "untrusted", "instances": 100}, DOC, "sandbox"),       # 100 x 238 MiB > 4 GiB
    ({"trust": "untrusted", "io": "high"}, DOC, "container-in-vm"),
    ({"trust": "untrusted", "network": "high"}, DOC, "container-in-vm"),
    ({"trust": "untrusted"}, NO_VM, "sandbox"),
    ({"trust": "untrusted"}, NO_SANDBOX_NO_VM, "container-in-vm"),
    ({"own-kernel": True}, DOC, "microvm"),
    ({"own-kernel": True, "trust": "untrusted"}, DOC, "microvm"),
    ({"other-os": True}, DOC, "os-vm"),
    ({"legacy": True, "trust": "own"}, DOC, "os-vm"),
    ({"legacy": True, "own-kernel": True}, DOC, "os-vm"),
    ({"trust": "own", "lifetime": "batch", "instances": 1000}, DOC, "container"),
]


@pytest.mark.parametrize("work,doc,want", CASES)
def test_rule_table(work, doc, want):
    r = advise.advise(advise.Workload.from_dict(work), doc)
    assert r["recommendation"] == want, r
    assert want not in r["rejected"]
    assert r["command"].startswith("isle ")
    assert r["reasons"] and r["rules"]
    text = advise.render_text(r)
    assert "recommendation:" in text and "run: isle" in text


def test_reasons_carry_the_measured_numbers():
    r = advise.advise(advise.Workload.from_dict({"trust": "untrusted"}), DOC)
    joined = " ".join(r["reasons"])
    assert "650" in joined and "238.0 MiB" in joined
    assert set(r["rejected"]) >= {"container", "sandbox", "os-vm"}


def test_command_per_level():
    w = advise.Workload.from_dict({"trust": "third-party", "image": "nginx", "memory-mib": 64})
    r = advise.advise(w, DOC)
    assert "--cap-drop ALL" in r["command"] and "--read-only" in r["command"]
    assert "--memory 64m" in r["command"] and r["command"].endswith("nginx")
    r = advise.advise(advise.Workload.from_dict({"trust": "untrusted", "start-budget-ms": 300,
                                                 "image": "x"}), DOC)
    assert "--isolation sandbox" in r["command"]


def test_start_budget_warning_when_nothing_fits():
    r = advise.advise(advise.Workload.from_dict({"own-kernel": True, "start-budget-ms": 10}), DOC)
    assert r["recommendation"] == "microvm"
    assert any("over the" in n for n in r["notes"])


@pytest.mark.parametrize("bad", [{"trust": "maybe"}, {"io": "huge"}, {"instances": "many"},
                                 {"own-kernel": "yes"}, {"colour": "red"}, {"memory-mib": -1}])
def test_bad_keys_are_named(bad):
    with pytest.raises(ConfigError) as e:
        advise.Workload.from_dict(bad)
    assert next(iter(bad)) in str(e.value)


def test_toml_and_compose(tmp_path):
    t = tmp_path / "w.toml"
    t.write_text('trust = "untrusted"\ninstances = 3\nstart-budget-ms = 1000\n')
    [(name, w)] = advise.load_workloads(str(t))
    assert advise.advise(advise.Workload.from_dict(w), DOC)["recommendation"] == "microvm"
    t2 = tmp_path / "w2.toml"
    t2.write_text('[workload]\ntrust = "third-party"\n')
    assert advise.load_workloads(str(t2))[0][1] == {"trust": "third-party"}
    c = tmp_path / "compose.yaml"
    c.write_text("services:\n  web:\n    image: nginx\n  job:\n    image: busybox\n"
                 "    x-isle-advise:\n      trust: untrusted\n")
    got = dict(advise.load_workloads(str(c)))
    assert got["web"]["image"] == "nginx"
    assert got["job"] == {"image": "busybox", "trust": "untrusted"}
    bad = tmp_path / "bad.toml"
    bad.write_text("trust = \n")
    with pytest.raises(ConfigError):
        advise.load_workloads(str(bad))
    with pytest.raises(ConfigError):
        advise.load_workloads(str(tmp_path / "missing.toml"))


def test_compose_without_a_yaml_library():
    text = ("version: '3'\nservices:\n  web:\n    image: nginx:1.25\n    ports:\n      - 80:80\n"
            "  db:\n    image: \"postgres\"\n    x-isle-advise:\n      trust: third-party\n"
            "      instances: 3\n      own-kernel: false\n    restart: always\n"
            "volumes:\n  data:\n")
    assert advise._mini_services(text) == {
        "web": {"image": "nginx:1.25"},
        "db": {"image": "postgres", "x-isle-advise": {"trust": "third-party", "instances": 3,
                                                      "own-kernel": False}}}
