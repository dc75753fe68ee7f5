"""`isle info`'s text: Docker's `Key: value` layout for any shape the engine returns, never a
Python repr (dicts, lists, True/None)."""

from __future__ import annotations

import re

from isle.cli.system import _tree


def test_nested_values_are_text() -> None:
    d = {"Containers": 2, "Isolation": ["container", "vm"], "IsolationUnavailable": {},
         "IsolationNotes": {"vm": "QEMU TCG"}, "Rootless": False, "RuntimePath": None,
         "VM": {"accel": "tcg", "guest_kernel": {"version": "6.1", "image": "/k"}},
         "Peers": [{"Name": "runc", "Version": "1.1"}], "NCPU": 2}
    text = "\n".join(_tree(d, 1))
    assert not re.search(r"[{\[]'|'[}\]]|\bTrue\b|\bFalse\b|\bNone\b", text), text
    assert " Isolation: container, vm" in text
    assert " Isolation Unavailable: (none)" in text
    assert "  vm: QEMU TCG" in text  # data keys stay as they are
    assert "  Guest kernel:\n   Version: 6.1" in text
    assert " Rootless: false" in text and " CPUs: 2" in text
