"""`sys/` is the door to the OS: ctypes, subprocess and the /proc files isle parses are reached
through sys/libc.py, sys/proc.py and sys/procfs.py. Modules that still go around the door are
listed here (take a module off when it goes through the door); a new one fails the test by
name. Also: no relative imports anywhere in src/."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "isle"

#: modules (under src/isle) that import subprocess themselves: move them to sys/proc.py
SUBPROCESS_LEFT = {
    "bench/measure.py", "vm/machine.py", "vm/microvm.py",
    "vm/osimage.py", "vm/virtiofs.py",
}
#: modules that open /proc/<pid>/{stat,status,mountinfo,cgroup} or /proc/meminfo themselves:
#: move them to sys/procfs.py
PROC_LEFT = {
    "bench/measure.py", "bench/probe.py", "engine/buildrun.py", "engine/layout.py",
    "kube/config.py", "runtime/cgroup.py",
    "runtime/rootfs.py", "runtime/state.py", "vm/machine.py", "vm/osimage.py",
}
DOORS = {"sys/proc.py", "sys/launcher.py", "sys/libc.py", "sys/seccomp_lib.py", "sys/procfs.py"}
_PROC_FILE = re.compile(
    r"""["']/proc/(self|\{[^}]*\}|\d+)/(stat|status|mountinfo|cgroup)["']|["']/proc/meminfo["']""")


@functools.cache
def _modules(src: Path) -> list[tuple[str, str, ast.Module]]:
    out = []
    for p in sorted(src.rglob("*.py")):
        text = p.read_text()
        out.append((str(p.relative_to(src)), text, ast.parse(text)))
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (imports only a type checker sees)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and \
                node.test.id == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return out


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def around_the_door(src: Path = SRC) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"subprocess": set(), "ctypes": set(), "proc": set(),
                                "relative": set()}
    for rel, text, tree in _modules(src):
        if rel in DOORS:
            continue
        imp = _imported(tree)
        if "subprocess" in imp:
            out["subprocess"].add(rel)
        if imp & {"ctypes", "_ctypes"}:
            out["ctypes"].add(rel)
        if _PROC_FILE.search(text):
            out["proc"].add(rel)
        if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)):
            out["relative"].add(rel)
    return out


def test_only_sys_reaches_the_os() -> None:
    found = around_the_door()
    assert found["ctypes"] == set(), "ctypes outside sys/libc.py, sys/seccomp_lib.py"
    assert found["relative"] == set(), "relative imports: write isle.x.y"
    new = found["subprocess"] - SUBPROCESS_LEFT
    assert not new, f"import subprocess outside sys/: {sorted(new)} (use isle.sys.proc)"
    new = found["proc"] - PROC_LEFT
    assert not new, f"/proc parsed outside sys/procfs.py: {sorted(new)} (use isle.sys.procfs)"


def test_the_checker_sees_each_kind(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "a.py").write_text("import subprocess\nfrom . import b\n")
    (tmp_path / "engine" / "b.py").write_text("import ctypes\nopen(f'/proc/{pid}/stat')\n")
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "procfs.py").write_text("open('/proc/meminfo')\n")
    assert around_the_door(tmp_path) == {"subprocess": {"engine/a.py"}, "ctypes": {"engine/b.py"},
                                         "proc": {"engine/b.py"}, "relative": {"engine/a.py"}}


_DASH_M = re.compile(r"""["']-m["'],\s*["'](isle(?:\.\w+)+)["']|-m (isle(?:\.\w+)+)""")


def dash_m_targets(src: Path = SRC) -> dict[str, set[str]]:
    """{module named by a `-m isle.x.y` (argv or text) in src: the files naming it}."""
    out: dict[str, set[str]] = {}
    for rel, text, _ in _modules(src):
        for m in _DASH_M.finditer(text):
            out.setdefault(m.group(1) or m.group(2), set()).add(rel)
    return out


def _runnable(mod: str, src: Path = SRC) -> bool:
    parts = mod.split(".")[1:]
    f = src.joinpath(*parts).with_suffix(".py")
    if not f.exists():
        f = src.joinpath(*parts, "__main__.py")
    return f.exists() and "__main__" in f.read_text()


def test_every_dash_m_names_a_runnable_module() -> None:
    # a module moved or split leaves `python -m isle.old.name` strings behind: they fail only
    # when that path runs (an exit command, a hook, a health check)
    bad = {m: sorted(w) for m, w in dash_m_targets().items() if not _runnable(m)}
    assert not bad, f"`-m` names a module that is gone or has no __main__: {bad}"
