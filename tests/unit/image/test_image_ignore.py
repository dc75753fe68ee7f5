""".dockerignore matching: Docker's rules (last match wins, parents count, ** and !)."""

from pathlib import Path

from isle.image.build.builder import _ignored, _load_ignore


def test_patterns(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text(
        "# comment\n*.log\n!keep.log\nbuild/\n**/*.tmp\n/secret\ndocs/*.md\n!docs/README.md\n"
    )
    rules = _load_ignore(str(tmp_path))
    assert _ignored(rules, "a.log") and not _ignored(rules, "keep.log")
    assert _ignored(rules, "build") and _ignored(rules, "build/out/x.o")
    assert _ignored(rules, "deep/er/x.tmp") and _ignored(rules, "x.tmp")
    assert _ignored(rules, "secret") and not _ignored(rules, "sub/secret")
    assert _ignored(rules, "docs/a.md") and not _ignored(rules, "docs/README.md")
    assert not _ignored(rules, "src/main.py") and not _ignored(rules, ".")
    assert not _ignored(rules, "sub/a.log")  # *.log is anchored at the context root


def test_containerignore_wins_and_none_means_nothing(tmp_path: Path) -> None:
    assert _load_ignore(str(tmp_path)) == []
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / ".containerignore").write_text("b\n")
    rules = _load_ignore(str(tmp_path))
    assert _ignored(rules, "b") and not _ignored(rules, "a")
