"""Import budgets: what `isle-runtime run`, `isle ps` and `isle run` may import, as declared in
docs/startup.md. Each command runs with `-X importtime` through its installed launcher; a
module outside its block fails the test by name."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
DOC = REPO / "docs" / "startup.md"


def budget(name: str) -> list[str]:
    """The module names (and `pkg.*` patterns) of the doc's ```modules <name> block."""
    m = re.search(rf"^```modules {re.escape(name)}\n(.*?)^```", DOC.read_text(), re.M | re.S)
    assert m, f"docs/startup.md has no ```modules {name} block"
    return [w for ln in m.group(1).splitlines() if not ln.startswith("#") for w in ln.split()]


def launcher(name: str) -> list[str]:
    """[interpreter, its flags, script]: the installed launcher, run as its shebang says."""
    script = BIN / name
    if (BIN / f".{name}.py").exists():  # isle-runtime's native front hands over to this
        script = BIN / f".{name}.py"
    if not script.exists():
        pytest.skip(f"{script} is not installed (scripts/setup)")
    first = script.read_text().splitlines()[0]
    assert first.startswith("#!")
    return [*first[2:].split(), str(script)]


def imported(argv: list[str], **kw: object) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run argv with -X importtime; -> (its result, every module it imported, children too)."""
    cp = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True,
                        text=True, timeout=60, **kw)  # type: ignore[call-overload]
    mods = {ln.rsplit("|", 1)[1].strip() for ln in cp.stderr.splitlines()
            if ln.startswith("import time:") and "self [us]" not in ln}
    return cp, mods


def bootstrap(python: str, flags: list[str]) -> set[str]:
    return imported([python, *flags, "-c", "pass"])[1]


def check(argv: list[str], name: str, **kw: object) -> None:
    cp, mods = imported(argv, **kw)
    assert cp.returncode == 0, cp.stderr[-2000:]
    allowed = budget(name)
    exact = {a for a in allowed if not a.endswith(".*")}
    patterns = [a for a in allowed if a.endswith(".*")]
    # the interpreter's own start-up, with the launcher's flags only (not the command: that
    # would import everything and leave nothing to check)
    script = next(i for i, a in enumerate(argv) if i and not a.startswith("-"))
    boot = bootstrap(argv[0], argv[1:script])
    assert not any(m.startswith("isle") for m in boot), sorted(boot)
    extra = sorted(m for m in mods - boot - exact
                   if not any(fnmatch.fnmatchcase(m, p) for p in patterns))
    assert not extra, (f"`{name}` imports modules outside its budget in docs/startup.md: "
                       f"{extra} (measure them and declare them there, or import them later)")


def test_budget_blocks_parse() -> None:
    for name in ("isle-runtime run", "isle ps", "isle run"):
        assert "isle" in budget(name) and "os" in budget(name)


def test_isle_ps(tmp_path: Path) -> None:
    argv = [*launcher("isle"), "--root", str(tmp_path / "root"), "--runroot",
            str(tmp_path / "run"), "ps"]
    subprocess.run(argv, capture_output=True, timeout=60, check=True)  # creates the db
    check(argv, "isle ps")


@pytest.mark.root
def test_isle_runtime_run(tmp_path: Path, busybox_rootfs: Path) -> None:
    from isle.oci.runtime_spec import default_spec

    b = tmp_path / "bundle"
    b.mkdir()
    cfg = default_spec()
    cfg["root"] = {"path": str(busybox_rootfs), "readonly": True}
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    (b / "config.json").write_text(json.dumps(cfg))
    check([*launcher("isle-runtime"), "--root", str(tmp_path / "rt"), "run", "-b", str(b),
           "budget"], "isle-runtime run")


@pytest.mark.root
@pytest.mark.timeout(120)
def test_isle_run_rm(tmp_path: Path) -> None:
    argv = [*launcher("isle"), "--root", str(tmp_path / "root"), "--runroot",
            str(tmp_path / "run"), "run", "--rm", "--network", "none", "busybox", "true"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISLE_")}
    subprocess.run(argv, capture_output=True, timeout=60, check=True, env=env)  # the image
    check(argv, "isle run", env=env)
