"""config.json validation: every bad field is named; runc's default spec validates."""

from __future__ import annotations

import copy
import json

import pytest

from isle.errors import ConfigError
from isle.oci.runtime_spec import default_spec, load, validate


def _spec():
    s = default_spec()
    s["process"]["terminal"] = False
    return s


def test_default_and_rootless_specs_validate():
    assert validate(_spec())["ociVersion"]
    r = validate(default_spec(rootless=True))
    assert {"type": "user"} in r["linux"]["namespaces"]
    assert all(n["type"] != "network" for n in r["linux"]["namespaces"])


@pytest.mark.parametrize("edit,field,words", [
    (lambda s: s["linux"]["namespaces"].append({"type": "foo"}), "linux.namespaces[5].type",
     "unknown namespace 'foo'"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[5].type",
     "duplicate"),
    (lambda s: s.pop("root"), "root", "object"),
    (lambda s: s["root"].update(path=""), "root.path", "empty"),
    (lambda s: s["process"].update(args=[]), "process.args", "non-empty"),
    (lambda s: s["process"].update(args=["sh", 3]), "process.args[1]", "string"),
    (lambda s: s["process"].update(cwd="relative"), "process.cwd", "absolute"),
    (lambda s: s["process"].update(env=["NOEQUALS"]), "process.env[0]", "KEY=VALUE"),
    (lambda s: s["process"]["user"].update(uid=-1), "process.user.uid", "range"),
    (lambda s: s["process"]["user"].update(uid=True), "process.user.uid", "integer"),
    (lambda s: s["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}),
     "process.rlimits[1].type", "unknown rlimit"),
    (lambda s: s["process"]["rlimits"][0].update(soft=5000), "process.rlimits[0].soft",
     "exceeds"),
    (lambda s: s["process"]["capabilities"].update(bounding="CAP_KILL"),
     "process.capabilities.bounding", "list"),
    (lambda s: s["process"].update(oomScoreAdj=5000), "process.oomScoreAdj", "-1000..1000"),
    (lambda s: s["mounts"].append({"destination": "rel"}), "mounts[7].destination", "absolute"),
    (lambda s: s.update(hooks={"prestartt": []}), "hooks.prestartt", "unknown hook kind"),
    (lambda s: s.update(hooks={"poststop": [{"path": "/x", "timeout": 0}]}),
     "hooks.poststop[0].timeout", "> 0"),
    (lambda s: s["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "linux.uidMappings", "user namespace"),
    (lambda s: (s["linux"]["namespaces"].append({"type": "user"}),
                s["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 0}],
                                  gidMappings=[])), "linux.uidMappings[0].size", "> 0"),
    (lambda s: s["linux"]["namespaces"].append({"type": "user"}), "linux.uidMappings",
     "needs uidMappings"),
    (lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "q"}]),
     "linux.devices[0].type", "one of"),
    (lambda s: s["linux"].update(sysctl={"net.x": 1}), "linux.sysctl.net.x", "string"),
    (lambda s: s["linux"].update(rootfsPropagation="sideways"), "linux.rootfsPropagation",
     "unknown propagation"),
    (lambda s: s["linux"].update(timeOffsets={"monotonic": {"secs": 1}}), "linux.timeOffsets",
     "time namespace"),
    (lambda s: s["linux"]["maskedPaths"].append("proc/x"), "linux.maskedPaths[10]", "absolute"),
])
def test_bad_fields_are_named(edit, field, words):
    s = _spec()
    edit(s)
    with pytest.raises(ConfigError) as ei:
        validate(s)
    assert ei.value.field == field
    assert words in str(ei.value)


def test_load_names_missing_and_malformed(tmp_path):
    with pytest.raises(ConfigError, match="config.json: not found"):
        load(str(tmp_path / "config.json"))
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="malformed JSON"):
        load(str(tmp_path / "config.json"))
    (tmp_path / "config.json").write_text(json.dumps(_spec()))
    assert load(str(tmp_path / "config.json"))["root"]["path"] == "rootfs"


def test_validate_does_not_mutate():
    s = _spec()
    before = copy.deepcopy(s)
    validate(s)
    assert s == before


def test_unknown_capabilities_are_listed_not_fatal() -> None:
    """As runc and crun: one config serves kernels that lack the newest capabilities."""
    from isle.oci import runtime_spec
    from isle.runtime.plan import cap_mask

    spec = runtime_spec.default_spec()
    spec["process"]["capabilities"]["bounding"] += ["CAP_TEST", "kill"]
    spec["process"]["capabilities"]["effective"] += ["CAP_TEST"]
    runtime_spec.validate(spec)
    assert runtime_spec.unknown_capabilities(spec["process"]) == ["CAP_TEST"]
    assert cap_mask(["CAP_TEST", "CAP_KILL"]) == 1 << runtime_spec.CAPABILITIES["CAP_KILL"]
