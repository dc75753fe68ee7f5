"""isle lint's rules, as a table of Containerfiles and image configs with the findings they must give."""

from __future__ import annotations

import json

import pytest

from isle.bench import lint
from isle.errors import ConfigError

GOOD = """\
FROM debian:12.5@sha256:{d}
RUN apt-get update && apt-get install -y --no-install-recommends curl \\
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY app.py /app/
USER 1000:1000
EXPOSE 8080
HEALTHCHECK CMD curl -f http://localhost:8080/ || exit 1
CMD ["python3", "/app/app.py"]
""".format(d="0" * 64)


def rules(text: str) -> set[str]:
    return {f.rule for f in lint.lint_containerfile(text)}


def test_a_good_containerfile_is_clean() -> None:
    assert lint.lint_containerfile(GOOD) == []


@pytest.mark.parametrize("text,rule", [
    ("FROM debian:12\nRUN apt-get install -y openssh-server\nUSER 1\nCMD [\"app\"]\n", "IL001"),
    ("FROM debian:12\nUSER 1\nCMD [\"/usr/sbin/sshd\", \"-D\"]\n", "IL001"),
    ("FROM debian:12\nUSER 1\nENTRYPOINT [\"/sbin/init\"]\n", "IL002"),
    ("FROM debian:12\nUSER 1\nCMD [\"/lib/systemd/systemd\"]\n", "IL002"),
    ("FROM debian:12\nUSER 1\nCMD [\"supervisord\", \"-n\"]\n", "IL003"),
    ("FROM debian:12\nUSER 1\nCMD nginx & php-fpm\n", "IL003"),
    ("FROM debian:12\nUSER 1\nCMD [\"sh\", \"-c\", \"cron && app\"]\n", "IL004"),
    ("FROM debian:12\nUSER 1\nCMD [\"sh\", \"-c\", \"apt-get install -y x && app\"]\n", "IL005"),
    ("FROM debian:12\nRUN apt-get update && apt-get -y dist-upgrade\nUSER 1\n", "IL006"),
    ("FROM debian:12\nCMD [\"app\"]\n", "IL008"),
    ("FROM debian:12\nUSER root\nCMD [\"app\"]\n", "IL008"),
    ("FROM debian\nUSER 1\n", "IL009"),
    ("FROM debian:latest\nUSER 1\n", "IL009"),
    ("FROM debian:12\nENV API_TOKEN=abc\nUSER 1\n", "IL010"),
    ("FROM debian:12\nARG NPM_TOKEN\nUSER 1\n", "IL010"),
    ("FROM debian:12\nUSER 1\nEXPOSE 80\nCMD [\"app\"]\n", "IL012"),
    ("FROM debian:12\nMAINTAINER x\nUSER 1\n", "IL013"),
    ("FROM debian:12\nUSER 1\nCMD app --serve\n", "IL014"),
    ("FROM debian:12\nUSER 1\nCMD [\"a\"]\nCMD [\"b\"]\n", "IL015"),
    ("FROM debian:12\nRUN cd /src && make\nUSER 1\n", "IL016"),
    ("FROM debian:12\nRUN sudo make install\nUSER 1\n", "IL017"),
    ("FROM debian:12\nRUN apt-get install -y curl\nUSER 1\n", "IL018"),
    ("FROM debian:12\nADD app.py /app/\nUSER 1\n", "IL019"),
])
def test_each_rule_fires(text: str, rule: str) -> None:
    assert rule in rules(text)


@pytest.mark.parametrize("text,rule", [
    ("FROM debian:12 AS build\nFROM build\nUSER 1\n", "IL009"),        # a stage, not a base
    ("FROM debian:12\nENV PASSWORD_FILE=/run/secrets/pw\nUSER 1\n", "IL010"),  # a path, no secret
    ("FROM debian:12\nADD app.tar.gz /app/\nUSER 1\n", "IL019"),        # ADD unpacks: fine
    ("FROM debian:12\nUSER 1\nCMD [\"sh\", \"-c\", \"a & exec b\"]\n", "IL003"),
    ("FROM debian:12\nUSER app\n", "IL008"),
])
def test_no_false_alarm(text: str, rule: str) -> None:
    assert rule not in rules(text)


def test_only_the_final_stage_decides_user_and_command() -> None:
    text = "FROM debian:12 AS b\nCMD [\"/sbin/init\"]\nFROM debian:12\nUSER 1\nCMD [\"app\"]\n"
    assert not rules(text) & {"IL002", "IL008"}


def test_lines_are_named_and_bad_input_is_a_config_error() -> None:
    f = [x for x in lint.lint_containerfile("FROM debian:12\n\nMAINTAINER x\nUSER 1\n")
         if x.rule == "IL013"][0]
    assert f.line == 3 and f.where == "Containerfile:3" and f.why and f.fix
    with pytest.raises(ConfigError):
        lint.lint_containerfile("NOTANINSTRUCTION x\n")


def test_image_config_rules() -> None:
    cfg = {"config": {"Entrypoint": ["/usr/sbin/sshd", "-D"], "Env": ["AWS_SECRET_ACCESS_KEY=x",
                                                                       "PATH=/bin"],
                      "ExposedPorts": {"22/tcp": {}}},
           "history": [{"created_by": "/bin/sh -c apt-get upgrade -y"}]}
    got = {f.rule for f in lint.lint_image_config(cfg, size=2 << 30, layers=60,
                                                  names=["docker.io/library/x:latest"])}
    assert got == {"IL001", "IL006", "IL008", "IL009", "IL010", "IL011", "IL012"}
    ok = {"config": {"Cmd": ["app"], "User": "1000", "Healthcheck": {"Test": ["CMD", "true"]},
                     "ExposedPorts": {"80/tcp": {}}}}
    assert lint.lint_image_config(ok, size=10 << 20, layers=3, names=["x:1.0"]) == []


def test_layers_with_secret_files(tmp_path) -> None:
    lay = tmp_path / "l1"
    (lay / "root" / ".ssh").mkdir(parents=True)
    (lay / "root" / ".ssh" / "id_rsa").write_text("key")
    (lay / "etc" / "ssl" / "certs").mkdir(parents=True)
    (lay / "etc" / "ssl" / "certs" / "ca.pem").write_text("public")
    (lay / "usr" / "sbin").mkdir(parents=True)
    (lay / "usr" / "sbin" / "sshd").write_text("")
    (lay / "link").symlink_to("/")  # never followed
    got = lint.lint_layers([("layer 1", str(lay))])
    assert {(f.rule, f.extra.get("path")) for f in got} == {("IL010", "/root/.ssh/id_rsa"),
                                                            ("IL001", None)}


def test_processes_and_writes() -> None:
    got = {f.rule for f in lint.lint_processes(["/sbin/init", "/usr/sbin/sshd -D", "cron -f",
                                                "nginx", "php-fpm"])}
    assert got == {"IL001", "IL002", "IL003", "IL004"}
    assert lint.lint_processes(["python app.py"]) == []
    w = lint.lint_writes([("A", "/var/lib/db"), ("A", "/var/lib/db/x"), ("C", "/tmp/x"),
                          ("A", "/data/y"), ("D", "/etc/z")], ["/data"])
    assert len(w) == 1 and w[0].rule == "IL007" and w[0].extra["paths"] == ["/var/lib/db"]


def test_exit_codes_follow_hadolint() -> None:
    fs = lint.lint_containerfile("FROM debian:12\nMAINTAINER x\nUSER 1\n")  # one style finding
    assert lint.exit_code(fs, "info") == 0 and lint.exit_code(fs, "style") == 1
    assert lint.exit_code(fs, "style", no_fail=True) == 0 and lint.exit_code([], "style") == 0


def test_sarif_and_json_render() -> None:
    fs = lint.lint_containerfile("FROM debian\nCMD app\n")
    doc = json.loads(lint.render_sarif("Containerfile", fs, "1.0"))
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {f.rule for f in fs}
    assert all(r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1
               for r in run["results"])
    j = json.loads(lint.render_json("Containerfile", "containerfile", fs))
    assert [f["rule"] for f in j["findings"]] == [f.rule for f in fs]
