"""One signal parser (isle.sys.signals) behind isle's flags, isle-runtime and isle-vm-runtime."""

from __future__ import annotations

import signal

import pytest

from isle.engine.options import parse_signal as engine_parse
from isle.errors import ConfigError
from isle.runtime.plan import parse_signal as runtime_parse
from isle.runtime.vm.cli import parse_signal as vm_parse
from isle.sys import signals


def test_the_table_matches_the_host():
    for name, n in signals.NUMBERS.items():
        assert getattr(signal, "SIG" + name) == n, name


@pytest.mark.parametrize("text,n", [("9", 9), ("kill", 9), ("SIGTERM", 15), ("sigusr1", 10),
                                    ("RTMIN", 34), ("RTMIN+2", 36), ("RTMAX-1", 63), ("64", 64)])
def test_every_entry_point_reads_a_signal_alike(text, n):
    assert signals.parse(text) == runtime_parse(text) == vm_parse(text) == n
    assert engine_parse("--stop-signal", text) == n


@pytest.mark.parametrize("bad", ["0", "65", "SIGNOPE", "RTMIN+99", "", "-9"])
def test_a_bad_signal_names_the_flag(bad):
    with pytest.raises(ConfigError) as e:
        engine_parse("--stop-signal", bad)
    assert "--stop-signal" in str(e.value)
