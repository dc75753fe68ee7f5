"""`isle bench --quick` at the levels CI has (native, container, sandbox, microVM) and `isle advise`
reading its saved results: structure and plausibility of the report, a plot and the HTML."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.mark.timeout(400)
def test_bench_quick_then_advise(isle, tmp_path):
    levels = ["native", "container"]
    if shutil.which("runsc"):
        levels.append("sandbox")
    if shutil.which("qemu-system-x86_64"):
        levels.append("microvm")
    args = ["bench", "--quick", "--format", "json", "--html", str(tmp_path / "r.html"),
            "--plot", str(tmp_path / "plots")]
    for lv in levels:
        args += ["--level", lv]
    t0 = time.monotonic()
    cp = isle(*args, timeout=380)
    elapsed = time.monotonic() - t0
    doc = json.loads(cp.stdout)
    assert doc["mode"] == "quick" and doc["version"] == 1
    assert {"cpu", "accelerator", "kernel", "cgroup_mode"} <= set(doc["host"])
    assert set(doc["levels"]) == set(levels)
    for lv in levels:
        r = doc["levels"][lv]
        assert r["ok"], (lv, r.get("reason"))
        st = r["start"]
        assert 0 < st["first_output_ms"]["warm"] <= st["exit_ms"]["warm"] + 1
        assert r["density"]["pss_bytes_per_instance"] > 0
        assert r["density"]["instances_in_budget"] >= 1
        assert r["cpu_ms"] > 0 and r["syscall_ns"]["getpid"] > 0
        assert r["network"]["rr_us"] > 0
        assert r["surface"]["syscalls_tried"] >= 20
        assert r["phase_s"] and all(v >= 0 for v in r["phase_s"].values())  # where time goes
    lvs = doc["levels"]
    # the isolation surface: containers share the host kernel, sandbox and VMs do not
    assert lvs["container"]["surface"]["shared_kernel"] is True
    assert lvs["container"]["surface"]["kernel"] == os.uname().release
    reach = {k: v["surface"]["syscalls_reachable"] for k, v in lvs.items()}
    assert reach["container"] < reach["native"]
    if "sandbox" in lvs:
        assert lvs["sandbox"]["surface"]["shared_kernel"] is False
    if "microvm" in lvs:
        vm, c = lvs["microvm"], lvs["container"]
        assert vm["surface"]["kernel"] != os.uname().release
        assert c["start"]["exit_ms"]["cold"] < vm["start"]["exit_ms"]["cold"]
        assert c["density"]["instances_in_budget"] > vm["density"]["instances_in_budget"]
        assert vm["size"]["total_bytes"] > c["size"]["total_bytes"]
    assert doc["literature"] and "Felter" in doc["literature"][0]
    # saved for advise; the plot and the report exist
    saved = json.loads(open(isle.root / "bench" / "latest.json").read())
    assert saved["created"] == doc["created"]
    png = tmp_path / "plots" / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    assert (tmp_path / "plots" / "bench.svg").exists()
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    print(f"bench --quick at {levels}: {elapsed:.1f} s; phases: "
          + "; ".join(f"{k} {v['phase_s']}" for k, v in lvs.items()))
    # advise reads the saved numbers (no new bench)
    w = tmp_path / "w.toml"
    w.write_text('trust = "untrusted"\nio = "high"\n')
    cp = isle("advise", str(w), "--format", "json", timeout=60)
    r = json.loads(cp.stdout)
    assert r["recommendation"] == "container-in-vm"
    assert r["bench"]["created"] == doc["created"]
    cp = isle("advise", "--trust", "third-party", "--image", "busybox", timeout=60)
    assert "hardened container" in cp.stdout and "isle run -d --cap-drop ALL" in cp.stdout
    cp = isle("advise", "--trust", "nobody", check=False)
    assert cp.returncode != 0
    # nothing of the bench's is left: containers, networks
    assert isle("ps", "-aq").stdout.strip() == ""
    assert "isle-bench" not in isle("network", "ls").stdout
