"""The project works from a plain checkout: nothing it ships names the development machine's own
tree (where this checkout, its sibling ../shared, or the tools' mirrors live) by absolute path;
a user's checkout has no such place. Scratch dirs under /var/tmp or /run, system paths and paths
inside containers are fine: they exist on every machine of this kind or are made by the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
#: the development machine's tree (this checkout sits in it): never a path the project may name
OUTSIDE = re.compile(r"(?<![\w.-])/work/[\w.+-]+")


def test_no_absolute_path_outside_the_checkout() -> None:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "scripts", "bench", "src", "tests",
                            "docs", "contrib", "quickstart", "README.md", "pyproject.toml"],
                           capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for f in files:
        p = ROOT / f
        if p == Path(__file__).resolve() or not p.is_file():
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{f}:{n}: {m.group(0)}" for n, line in enumerate(text.splitlines(), 1)
                 for m in OUTSIDE.finditer(line)]
    assert hits == [], "\n".join(hits)
