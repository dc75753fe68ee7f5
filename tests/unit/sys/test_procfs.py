"""sys/procfs: the one parser of /proc files, on real /proc and on given texts."""

from __future__ import annotations

import os
import subprocess
import sys

from isle.sys import procfs

MOUNTINFO = (
    "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
    "36 22 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "40 1 0:40 /sub /mnt/with\\040space rw shared:3 - overlay overlay rw,lowerdir=/a\n"
)


def test_parse_mountinfo_fields_and_escapes() -> None:
    ms = procfs.parse_mountinfo(MOUNTINFO)
    assert [m.mountpoint for m in ms] == ["/proc", "/sys/fs/cgroup/cpu,cpuacct", "/mnt/with space"]
    cg = ms[1]
    assert (cg.mount_id, cg.parent_id, cg.fstype, cg.super_options) == (
        36, 22, "cgroup", "rw,cpu,cpuacct")
    assert ms[2].root == "/sub" and ms[2].source == "overlay"


def test_real_mountinfo_has_root_and_proc() -> None:
    mps = procfs.mountpoints()
    assert "/" in mps and "/proc" in mps
    assert procfs.is_mountpoint("/proc")
    assert procfs.mountpoint_of("/proc/self") == "/proc"
    assert any(m.fstype == "proc" for m in procfs.mountinfo())


def test_start_time_names_a_live_process_only() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         stdin=subprocess.PIPE)
    try:
        st = procfs.start_time(p.pid)
        assert st is not None and st > 0
        assert procfs.ppid(p.pid) == os.getpid()
        assert procfs.state(p.pid) in ("R", "S", "D")  # D: paging its program in
    finally:
        p.communicate(b"")
    assert procfs.start_time(p.pid) is None  # reaped: gone
    assert procfs.start_time(0) is None and procfs.start_time(-1) is None


def test_stat_fields_are_cut_at_the_last_paren() -> None:
    # a comm may hold ") (": what follows the last ")" is the fixed fields
    fields = procfs.stat_fields()
    assert fields is not None and fields[1] == str(os.getppid()).encode()


def test_cgroups_parse_v1_v2_and_named() -> None:
    text = "12:cpu,cpuacct:/a\n1:name=systemd:/s\n0::/u\nbroken\n"
    assert procfs.parse_cgroups(text) == {"cpu": "/a", "cpuacct": "/a", "systemd": "/s",
                                          "unified": "/u"}
    assert procfs.cgroup_lines(text=text)[2] == ("0", "", "/u")
    assert procfs.cgroups()  # this process is in some cgroup
    assert procfs.cgroup_lines(2 ** 22 + 7) == []  # no such pid


def test_status_umask_and_meminfo() -> None:
    st = procfs.status()
    assert st["Pid"] == str(os.getpid())
    old = os.umask(0o027)
    try:
        assert procfs.umask() == 0o027
    finally:
        os.umask(old)
    mi = procfs.meminfo()
    assert mi["MemTotal"] > 16 * 2 ** 20  # bytes, not kB
    assert procfs.parse_meminfo("MemTotal:   2 kB\nHugePages_Total: 3\n") == {
        "MemTotal": 2048, "HugePages_Total": 3}
