"""isle bench's report: the density fit, the table, the literature notes, a real PNG plot."""

from __future__ import annotations

import json
import zlib

from isle.bench import measure, report

MIB = 1048576


def _doc():
    def lv(cold, warm, pss, cpu, getpid, kernel, shared, rr):
        return {"ok": True, "reason": "", "start": {"exit_ms": {"cold": cold, "warm": warm},
                                                    "first_output_ms": {"cold": cold, "warm": warm}},
                "density": {"pss_bytes_per_instance": pss * MIB, "pss_samples": [pss * MIB] * 3,
                            "instances_measured": 3, "memory_budget_bytes": 1024 * MIB,
                            "instances_in_budget": int(1024 // pss), "create_per_second": 2.0,
                            "fit": {"intercept_bytes": 0, "slope_bytes": pss * MIB, "model": "x"}},
                "size": {"total_bytes": 5 * MIB}, "cpu_ms": cpu,
                "syscall_ns": {"getpid": getpid, "open_close": 1.0, "stat": 1.0},
                "network": {"rr_us": rr, "iperf3_gbit_s": 1.0},
                "surface": {"kernel": kernel, "shared_kernel": shared, "capabilities": 14,
                            "syscalls_reachable": 5, "syscalls_tried": 30}}
    return {"mode": "quick", "image": "busybox", "elapsed_s": 1.0, "created": "2026-12-06T00:00:00Z",
            "host": {"accelerator": "TCG", "kernel": "6.1", "cpu": "x", "ncpu": 2},
            "plan": {"start_rounds": {}, "density_max": {}},
            "levels": {"native": lv(2, 1, 0.2, 50, 200, "6.1", True, 17),
                       "container": lv(90, 70, 1, 50, 210, "6.1", True, 26),
                       "microvm": lv(2700, 2500, 236, 400, 480, "6.0", False, 780),
                       "os-vm": {"ok": False, "reason": "not measured"}}}


def test_fit_line():
    assert measure.fit_line([1, 2, 3], [3, 5, 7]) == (1.0, 2.0)
    assert measure.fit_line([1], [4]) == (0.0, 4.0)
    assert measure.fit_line([], []) == (0.0, 0.0)


def test_table_and_literature():
    d = _doc()
    d["literature"] = report.literature(d)
    text = report.render_table(d)
    assert "container" in text and "skipped: not measured" in text and "density fit" in text
    assert "methods:" in text and "Felter" in text
    assert any("TCG" in n for n in d["literature"])
    assert any("microvm/native" in n and "differs" in n for n in d["literature"])
    assert any("container/native = 1.00x" in n for n in d["literature"])
    assert len(report.rows(d)) == 4


def test_save_load_roundtrip(tmp_path):
    d = _doc()
    p = report.save(d, str(tmp_path))
    assert p.endswith("bench/latest.json")
    assert report.load(str(tmp_path)) == json.loads(json.dumps(d))
    assert report.load(str(tmp_path / "nothing")) is None


def test_a_run_of_some_levels_keeps_the_others_for_advise(tmp_path):
    """`isle bench --level native` after a full run: latest.json has the new native numbers and
    the earlier container and microvm ones, marked with the run that measured them."""
    report.save(_doc(), str(tmp_path))
    new = _doc()
    new["created"] = "2026-12-07T00:00:00Z"
    new["levels"] = {"native": dict(new["levels"]["native"], cpu_ms=9.0)}
    report.save(new, str(tmp_path))
    got = report.load(str(tmp_path))
    assert got is not None and got["created"] == new["created"]
    assert got["levels"]["native"]["cpu_ms"] == 9.0 and "measured_in" not in got["levels"]["native"]
    assert got["levels"]["microvm"]["ok"] and \
        got["levels"]["microvm"]["measured_in"] == "quick run of 2026-12-06T00:00:00Z"
    assert set(got["levels"]) == {"native", "container", "microvm", "os-vm"}
    other = _doc()  # another host: nothing carried over
    other["host"] = dict(other["host"], kernel="6.9")
    other["levels"] = {"native": other["levels"]["native"]}
    report.save(other, str(tmp_path))
    assert set(report.load(str(tmp_path))["levels"]) == {"native"}
    stamped = sorted(p.name for p in (tmp_path / "bench").iterdir() if p.name != "latest.json")
    assert len(stamped) == 2  # each run alone (the first and third share a timestamp)


def _png_pixels(path):
    """Decode a PNG's IDAT far enough to know it holds an image (width, height, data bytes)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat, w, h = 8, b"", 0, 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        if kind == b"IHDR":
            w, h = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    return w, h, zlib.decompress(idat)


def test_plot_png_decodes_and_is_not_blank(tmp_path):
    d = _doc()
    [png] = report.plots(d, str(tmp_path), "png")
    w, h, raw = _png_pixels(png)
    assert w > 300 and h > 200
    assert len(set(raw)) > 10  # more than a blank canvas
    [svg] = report.plots(d, str(tmp_path), "svg")
    assert open(svg).read().lstrip().startswith("<?xml")
    html = report.render_html(d, png)
    assert "data:image/png;base64," in html and "<table>" in html and "Methods" in html
