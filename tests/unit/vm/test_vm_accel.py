"""vm.accel.detect: KVM only with vmx/svm AND an openable /dev/kvm; the reason says which failed."""

from __future__ import annotations

from pathlib import Path

from isle.vm import accel


def _cpuinfo(tmp_path: Path, flags: str) -> str:
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\ncpu MHz\t\t: 2596.142\nflags\t\t: fpu sse2 {flags}\n")
    return str(p)


def test_no_vmx_means_tcg_even_with_dev_kvm(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    a, why = accel.detect(_cpuinfo(tmp_path, "lm"), str(kvm))
    assert a == "tcg" and "vmx/svm" in why


def test_vmx_and_openable_kvm_means_kvm(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    assert accel.detect(_cpuinfo(tmp_path, "vmx lm"), str(kvm))[0] == "kvm"


def test_svm_without_dev_kvm_is_tcg_with_reason(tmp_path: Path) -> None:
    a, why = accel.detect(_cpuinfo(tmp_path, "svm"), str(tmp_path / "missing"))
    assert a == "tcg" and "does not open" in why and "svm" in why


def test_unreadable_cpuinfo(tmp_path: Path) -> None:
    a, why = accel.detect(str(tmp_path / "nope"), "/dev/null")
    assert a == "tcg" and "cannot read" in why


def test_host_tsc_khz(tmp_path: Path) -> None:
    assert accel.host_tsc_khz(_cpuinfo(tmp_path, "")) == 2596142
    assert accel.host_tsc_khz(str(tmp_path / "nope")) is None


def test_this_host() -> None:
    a, why = accel.detect()
    assert a in ("kvm", "tcg") and why
