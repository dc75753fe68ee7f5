"""`isle lint IMAGE | Containerfile | CONTAINER`: the container-as-a-mini-VM mistake, as
findings."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

__all__ = ["register"]

_NAMES = ("Containerfile", "Dockerfile")


def _containerfile(target: str) -> str | None:
    if os.path.isdir(target):
        for n in _NAMES:
            if os.path.isfile(os.path.join(target, n)):
                return os.path.join(target, n)
        return None
    if os.path.isfile(target):
        return target
    return None


def _lint_image(engine: Any, img: Any) -> list[Any]:
    from isle.bench import lint

    fs = lint.lint_image_config(img.config, size=img.size, layers=len(img.layer_dirs),
                                names=img.names)
    layers = [(f"layer {i + 1} ({d[:19]})", engine.store.layer_dir(d))
              for i, d in enumerate(img.diff_ids)]
    return fs + lint.lint_layers(layers)


def register(cli: click.Group) -> None:
    @cli.command("lint")
    @click.argument("target")
    @click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
                  show_default=True, help="text for people, json or SARIF 2.1.0 for CI.")
    @click.option("--failure-threshold", "threshold", default="info", show_default=True,
                  type=click.Choice(["error", "warning", "info", "style", "none"]),
                  help="Exit 1 when a finding is at or above this severity (as hadolint).")
    @click.option("--no-fail", is_flag=True, help="Always exit 0 when the target could be linted.")
    @click.option("--ignore", multiple=True, metavar="RULE", help="Skip a rule id (repeatable).")
    @click.option("-v", "--verbose", is_flag=True, help="Say why each finding matters and the fix.")
    @click.option("--kind", type=click.Choice(["auto", "containerfile", "image", "container"]),
                  default="auto", show_default=True,
                  help="What TARGET names; auto tries a file, then an image, then a container.")
    @click.pass_context
    def lint_cmd(ctx: click.Context, target: str, fmt: str, threshold: str, no_fail: bool,
                 ignore: tuple[str, ...], verbose: bool, kind: str) -> int:
        """Flag the "container as a mini-VM" mistake and its neighbours.

        TARGET is a Containerfile (or a directory holding one), an image or a container. Each
        finding has a rule id, a severity, where it was found, why it matters and the fix (-v).
        Exit codes as hadolint's: 0 clean, 1 a finding at or above --failure-threshold."""
        from isle.bench import lint
        from isle.errors import ConfigError, NotFound

        findings: list[Any] = []
        what = ""
        path = _containerfile(target) if kind in ("auto", "containerfile") else None
        if kind == "containerfile" and path is None:
            raise ConfigError("lint", f"{target}: no such Containerfile (or directory with one)")
        if path is not None:
            with open(path, encoding="utf-8", errors="replace") as f:
                findings = lint.lint_containerfile(f.read(), path)
            what = "containerfile"
        else:
            engine = ctx.obj.engine
            img = None
            if kind in ("auto", "image"):
                try:
                    img = engine.store.resolve(target)
                except NotFound:
                    if kind == "image":
                        raise
            if img is not None:
                findings, what = _lint_image(engine, img), "image"
            else:
                try:
                    info = engine.inspect(target)
                except NotFound:
                    raise NotFound(f"no such Containerfile, image or container: {target}") from None
                what = "container"
                img = engine.store.resolve(info.get("Image") or info["Config"]["Image"])
                findings = _lint_image(engine, img)
                if info.get("State", {}).get("Running"):
                    _, rows = engine.top(target, ["-o", "args"])
                    findings += lint.lint_processes(r[0] for r in rows if r)
                vols = [m.get("Destination", "") for m in info.get("Mounts") or []]
                vols += list((img.config.get("config") or {}).get("Volumes") or {})
                findings += lint.lint_writes(engine.diff(target), vols)
                findings = lint._sorted(findings)
        findings = [f for f in findings if f.rule not in set(ignore)]
        if fmt == "json":
            out = lint.render_json(target, what, findings)
        elif fmt == "sarif":
            from importlib.metadata import version

            out = lint.render_sarif(target, findings, version("isle"))
        else:
            out = lint.render_text(target, findings, verbose)
        sys.stdout.write(out + "\n")
        return lint.exit_code(findings, threshold, no_fail)
