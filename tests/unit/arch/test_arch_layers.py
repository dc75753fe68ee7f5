"""DESIGN.md's layers, checked: nothing imports upward, and the edges DESIGN.md forbids stay absent."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "isle"
# errors/config <- sys <- {oci, cgroups, net, image, vm} <- runtime <- engine <- {api, cli, bench}
RANK = {"errors": 0, "config": 0, "sys": 1, "oci": 2, "cgroups": 2, "net": 2, "image": 2, "vm": 2,
        "runtime": 3, "engine": 4, "api": 5, "cli": 5, "bench": 5}
FORBIDDEN = {  # (importer, imported) edges DESIGN.md rules out even where ranks would allow them
    ("runtime", "net"), ("vm", "runtime"), ("cli", "sys"), ("cli", "runtime"), ("cli", "image"),
    ("cli", "net"), ("cli", "vm"), ("cli", "cgroups"), ("api", "sys"), ("api", "runtime"),
}


def _imports(path: Path) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m.startswith("isle.")]


def _violations(src: Path = SRC) -> list[str]:
    bad = []
    for path in src.rglob("*.py"):
        top = path.relative_to(src).parts[0].removesuffix(".py")
        if top not in RANK:
            continue
        for mod in _imports(path):
            dep = mod.split(".")[1]
            if dep not in RANK or dep == top:
                continue
            peer = RANK[dep] == RANK[top] == 2 and dep != "oci"  # oci is pure data, shared below runtime
            if RANK[dep] > RANK[top] or peer or (top, dep) in FORBIDDEN:
                bad.append(f"{path.relative_to(src)} imports {mod}")
    return sorted(bad)


def test_no_module_imports_against_the_layers() -> None:
    assert _violations() == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "x.py").write_text("from isle.engine.engine import Engine\n")
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "y.py").write_text("from isle.runtime import cli\n")
    assert _violations(tmp_path) == ["cli/y.py imports isle.runtime", "sys/x.py imports isle.engine.engine"]
