"""Bench.inside_and_network: the probes run in the network client's instance (one instance fewer
per level in --quick) and both results come out as separate runs would give them. A recording
fake of isle's own CLI (Bench._isle/_run) stands in for the instances."""

from __future__ import annotations

import json
import os

from isle.bench import measure

PROBES = ("cpu_ms=12.5\ngetpid_ns=300\nopen_close_ns=900\nstat_ns=700\nkernel=6.1.0-isle\n"
          "CapEff=00000000a80425fb\nSeccomp=2\nNoNewPrivs=1\nsyscalls_tried=30\n"
          "syscalls_reachable=25\nsyscalls_blocked=kexec_load,reboot\ndevices=6\n")
FIO = json.dumps({"jobs": [{"read": {"iops": 100.0, "bw": 400}, "write": {"iops": 90.0,
                                                                          "bw": 360}}]})
IPERF = json.dumps({"end": {"sum_received": {"bits_per_second": 2.5e9}}})


class FakeBench(measure.Bench):
    def __init__(self, tmp: str) -> None:
        super().__init__(["isle"], "busybox", measure.Plan(True), tmp)
        self.tools = os.path.join(tmp, "tools")
        self.fio, self.iperf = "/usr/bin/fio", "/usr/bin/iperf3"
        self.calls: list[tuple[str, ...]] = []

    def _spawn_isle(self, *args: str) -> object:
        self.calls.append(("spawn", *args))

        class Done:
            returncode = 0

            def communicate(self, timeout: float = 0) -> tuple[bytes, bytes]:
                return b"c0ffee\n", b""
        return Done()

    def _isle(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        self.calls.append(args)
        if args[:2] == ("network", "inspect"):
            return json.dumps([{"Subnets": [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}]}])
        if args[0] == "inspect":
            net = self._nets[-1]
            return json.dumps([{"NetworkSettings": {"Networks": {net: {"IPAddress": "10.9.0.2"}}}}])
        return "c0ffee\n" if args[:2] == ("run", "-d") else ""

    def _run(self, level: str, cmd: list[str], *, mounts: list[str] | None = None,
             network: str = "none", timeout: float = 300) -> str:
        self.calls.append(("run", level, network, *(mounts or []), *cmd))
        script = cmd[-1]
        out = ""
        if "probe cpu" in script:
            out += PROBES + "---fio---" + FIO + "\n"
        if "---net---" in script:
            out += "---net---\n"
        if "rr-client" in script:
            out += "rr_us=42.0\n---iperf---\n" + IPERF
        return out


def test_inside_and_network_share_one_client_instance(tmp_path) -> None:
    b = FakeBench(str(tmp_path))
    res = b.inside_and_network("microvm")
    runs = [c for c in b.calls if c[0] == "run" or c[:2] == ("spawn", "run")]
    assert len(runs) == 2  # the server (-d) and one client, not a third instance for the probes
    server, client = runs
    assert server[:3] == ("spawn", "run", "-d") and "10.9.0.254" in server  # a fixed address
    assert client[2].startswith("isle-bench-")  # on the bench network
    script = client[-1]
    # the client waits for the server, then probes alone, then measures the network
    assert script.index("rr-client 10.9.0.254 7000 1 ") < script.index("probe cpu") \
        < script.index("---net---") < script.index("rr-client 10.9.0.254 7000 200")
    assert any(m.endswith(":/isle-io") for m in client)  # fio's host directory
    assert res["cpu_ms"] == 12.5 and res["syscall_ns"]["getpid"] == 300
    assert res["surface"]["syscalls_blocked"] == ["kexec_load", "reboot"]
    assert res["fio"]["read_iops"] == 100.0
    assert res["network"] == {"rr_us": 42.0, "iperf3_gbit_s": 2.5}
    assert not [d for d in os.listdir(tmp_path) if d.startswith("io-")]  # fio's dir removed
    assert ("spawn", "rm", "-f", "c0ffee") in b.calls  # the server instance goes


def test_quick_plan_keeps_two_points_per_fitted_level() -> None:
    q = measure.Plan(True)
    assert all(q.density_max[lv] >= 2 for lv in ("native", "container", "sandbox", "microvm"))
    assert q.start_rounds["microvm"] >= 2  # a cold and a warm start
