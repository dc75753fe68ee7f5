"""`isle lint` on real images and containers, through the CLI."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def test_lint_image_and_containerfile(isle, tmp_path) -> None:
    cp = isle("lint", "--format", "json", "busybox", check=False)
    assert cp.returncode == 1, cp.stderr
    got = json.loads(cp.stdout)
    assert got["kind"] == "image" and {"IL008", "IL009"} <= {f["rule"] for f in got["findings"]}
    (tmp_path / "Containerfile").write_text('FROM busybox:1.36\nUSER 1000\nCMD ["httpd", "-f"]\n')
    cp = isle("lint", str(tmp_path), check=False)
    assert cp.returncode == 0 and "no findings" in cp.stdout, cp.stdout
    cp = isle("lint", "--format", "sarif", "--failure-threshold", "error", "busybox", check=False)
    assert cp.returncode == 0 and json.loads(cp.stdout)["version"] == "2.1.0"


def test_lint_a_container_like_a_mini_vm(isle) -> None:
    isle("run", "-d", "--name", "minivm", "busybox", "sh", "-c",
         "mkdir -p /var/lib/app /var/spool/cron/crontabs && echo x > /var/lib/app/db; crond; "
         "exec sleep 300")
    for _ in range(50):  # crond forks into the background: wait until it runs
        if "crond" in isle("top", "minivm").stdout:
            break
    got = json.loads(isle("lint", "--format", "json", "minivm", check=False).stdout)
    rules = {f["rule"] for f in got["findings"]}
    assert got["kind"] == "container" and {"IL004", "IL007", "IL008"} <= rules, got
    il7 = [f for f in got["findings"] if f["rule"] == "IL007"][0]
    assert il7["extra"]["paths"] == ["/var/lib", "/var/spool"], il7  # busybox has no /var/lib


def test_lint_names_what_is_missing(isle) -> None:
    cp = isle("lint", "no-such-thing-anywhere", check=False)
    assert cp.returncode != 0 and "no-such-thing-anywhere" in cp.stderr
