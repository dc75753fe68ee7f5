"""Containerfile parsing and config instructions; syntax errors name the line."""

import pytest

from isle.errors import ConfigError
from isle.image.build.parser import apply_changes, apply_config, expand, parse


def test_parse_continuations_comments_and_forms() -> None:
    text = (
        "# a comment\nFROM busybox AS b\nRUN echo a \\\n  # inner comment\n  && echo b\n"
        'CMD ["sh", "-c", "x"]\nCOPY --chown=1:2 --from=b a b /dst/\n'
    )
    ins = parse(text)
    assert [i.cmd for i in ins] == ["FROM", "RUN", "CMD", "COPY"]
    assert ins[1].rest == "echo a && echo b" and ins[1].line == 3
    assert ins[2].json_args == ["sh", "-c", "x"]
    assert ins[3].flags == {"chown": "1:2", "from": "b"} and ins[3].rest == "a b /dst/"


@pytest.mark.parametrize(
    "text,line,msg",
    [
        ("FROM busybox\nFROBNICATE x\n", 2, "unknown instruction"),
        ("FROM busybox\n\nRUN\n", 3, "missing arguments"),
        ("RUN echo\n", 1, "first instruction must be FROM"),
        ("FROM busybox\nSHELL sh -c\n", 2, "JSON array"),
        ("FROM busybox\nRUN echo \\\n", 2, "continuation at end of file"),
        ("FROM busybox\nCOPY --chown a b\n", 2, "bad flag"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, msg: str) -> None:
    with pytest.raises(ConfigError, match=f"Containerfile:{line}: .*{msg}"):
        parse(text)


def test_expand() -> None:
    env = {"A": "1", "E": ""}
    assert expand("$A ${A} ${B:-d} ${A:+alt} ${E:-x} \\$A", env) == "1 1 d alt x $A"


def test_config_instructions() -> None:
    cfg: dict = {"Env": ["PATH=/bin"]}
    env: dict = {}
    for line in [
        'ENV A=1 B="two words"',
        "ENV C $A-x",
        'LABEL k=v other="o p"',
        "EXPOSE 80 53/udp",
        "WORKDIR /srv",
        "WORKDIR app",
        "USER 1000:1000",
        'ENTRYPOINT ["/bin/x"]',
        "CMD --flag",
        "VOLUME /data",
        "STOPSIGNAL SIGINT",
        "HEALTHCHECK --interval=5s --retries=2 CMD curl -f x",
    ]:
        apply_config(cfg, parse("FROM x\n" + line)[1], env)
    assert cfg["Env"] == ["PATH=/bin", "A=1", "B=two words", "C=1-x"]
    assert cfg["Labels"] == {"k": "v", "other": "o p"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "1000:1000"
    assert cfg["Entrypoint"] == ["/bin/x"] and cfg["Cmd"] == ["/bin/sh", "-c", "--flag"]
    assert cfg["Volumes"] == {"/data": {}} and cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "curl -f x"],
        "Interval": 5_000_000_000,
        "Retries": 2,
    }


def test_changes_reject_build_only_instructions() -> None:
    cfg: dict = {}
    apply_changes(cfg, ['CMD ["sh"]', "ENV X=1"])
    assert cfg == {"Cmd": ["sh"], "Env": ["X=1"]}
    with pytest.raises(ConfigError, match="--change:1: RUN: not allowed"):
        apply_changes(cfg, ["RUN echo"])
    with pytest.raises(ConfigError, match="bad port"):
        apply_changes(cfg, ["EXPOSE http"])
