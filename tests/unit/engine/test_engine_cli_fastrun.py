"""The click-free run/create parser gives exactly what click gives, or steps aside."""

from __future__ import annotations

import click
import pytest

from isle.cli import run as fastrun
from isle.cli.container import _run_options

CASES = [
    ["busybox"],
    ["--rm", "busybox", "true"],
    ["-it", "--name", "x1", "busybox", "sh", "-c", "echo -d"],
    ["-dit", "-e", "A=1", "-eB=2", "--env=C=3", "-v", "/a:/b:ro", "-p80", "busybox", "ls", "-l"],
    ["--cpu-shares", "512", "-c", "256", "--stop-timeout=3", "-m", "64m", "busybox"],
    ["--entrypoint", "", "-h", "host", "--network", "none", "--", "busybox", "--rm"],
    ["--read-only", "--init", "--privileged", "--cap-add", "A", "--cap-add", "B", "busybox", "-x"],
]


def click_parse(args):
    got = {}

    @click.command(context_settings={"allow_interspersed_args": False})
    @_run_options
    def cmd(**kw):
        got.update(kw)

    cmd.main(args=args, standalone_mode=False)
    return got


@pytest.mark.parametrize("args", CASES)
def test_same_as_click(args):
    assert fastrun.parse_run(args) == click_parse(args)


@pytest.mark.parametrize("args", [[], ["--bogus", "busybox"], ["--help"], ["-z", "busybox"],
                                  ["--cpu-shares", "x", "busybox"], ["--rm=1", "busybox"]])
def test_steps_aside(args):
    assert fastrun.parse_run(args) is None


def test_globals():
    assert fastrun.parse_globals(["--root", "/r", "--runroot=/rr", "run", "x"]) == (
        {"root": "/r", "runroot": "/rr"}, ["run", "x"])
    assert fastrun.parse_globals(["--debug", "run"]) is None
