"""DESIGN.md's seam, checked: the engine reaches OCI runtimes only through engine/runtimes.py.

- No engine module but the seam imports ``isle.runtime`` (isle's runtimes' module API is called
  only behind a declared capability there); the known exceptions are listed with their reason.
- No engine module outside the seam branches on a runtime's name or an isolation level: a
  comparison with "runc", "crun", "runsc", "isle-runtime", "isle-vm-runtime", "vm" or
  "sandbox" is an isolation-specific branch. The one that picks the runtime lives in the seam;
  what is left elsewhere is listed below with its count, so a new one fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "isle"
ENGINE = SRC / "engine"
#: the seam: the OciRuntime implementations and the runsc flags they use
SEAM = {"runtimes.py", "sandbox.py"}
#: engine modules still importing isle.runtime outside the seam, and why
RUNTIME_IMPORTS_ALLOWED = {
    "vms.py": "whole-OS VMs (`isle vm`, not an OCI container): their QEMU cgroup accounting",
    "rootless.py": "the delegated cgroup v2 base a rootless runtime uses (belongs in cgroups/)",
}
RUNTIME_NAMES = {"runc", "crun", "runsc", "isle-runtime", "isle-vm-runtime", "/runsc"}
LEVELS = {"vm", "sandbox"}
#: isolation-specific branches left outside the seam: module -> count (lower these, never raise)
BRANCHES_ALLOWED = {
    # `ps --filter isolation=vm`: checks a filter's value, no behaviour depends on it
    "queries.py": 1,
}


def _runtime_imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("isle.runtime")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and (node.module == "isle.runtime" or node.module.startswith("isle.runtime.")):
            out.append(node.module)
    return out


def _literal_strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _literal_strings(e)]
    return []


def _isolation_branches(path: Path) -> list[int]:
    """Line numbers of comparisons (==, !=, in, not in, .endswith) against a runtime's name or
    an isolation level other than the default."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        strings: list[str] = []
        if isinstance(node, ast.Compare) and any(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            for side in (node.left, *node.comparators):
                strings += _literal_strings(side)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("endswith", "startswith"):
            for a in node.args:
                strings += _literal_strings(a)
        if any(s in RUNTIME_NAMES or s in LEVELS for s in strings):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_only_the_seam_imports_the_runtimes() -> None:
    bad = []
    for path in sorted(ENGINE.glob("*.py")):
        if path.name in SEAM or path.name in RUNTIME_IMPORTS_ALLOWED:
            continue
        bad += [f"engine/{path.name} imports {m}" for m in _runtime_imports(path)]
    assert bad == [], "reach the runtimes through engine/runtimes.py"


def test_isolation_specific_branches_stay_in_the_seam() -> None:
    found = {}
    for path in sorted(ENGINE.glob("*.py")):
        if path.name in SEAM or path.name == "vms.py":  # vms.py: whole-OS VMs, not containers
            continue
        n = len(_isolation_branches(path))
        if n or path.name in BRANCHES_ALLOWED:
            found[path.name] = n
    over = {k: v for k, v in found.items() if v > BRANCHES_ALLOWED.get(k, 0)}
    assert over == {}, f"ask a capability of the runtime (engine/runtimes.py Caps): {over}"


def test_the_seam_picks_the_runtime_in_one_place() -> None:
    """In runtimes.py the isolation levels are compared only in pick()."""
    tree = ast.parse((ENGINE / "runtimes.py").read_text())
    where = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Compare) and any(
                        s in LEVELS for side in (node.left, *node.comparators)
                        for s in _literal_strings(side)):
                    where.append(fn.name)
    assert set(where) == {"pick"}


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("from isle.runtime.vm.runner import boot_of\n"
                 "import os\n"
                 "if opts.isolation == 'vm':\n    pass\n"
                 "if os.path.basename(path) in ('runc', 'crun'):\n    pass\n"
                 "if path.endswith('/runsc'):\n    pass\n"
                 "if opts.isolation == 'container':\n    pass\n")
    assert _runtime_imports(p) == ["isle.runtime.vm.runner"]
    assert _isolation_branches(p) == [3, 5, 7]
