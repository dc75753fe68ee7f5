"""The Go template engine behind every `--format` (expected strings are what Docker's Go prints)."""

from __future__ import annotations

import pytest

from isle.cli.templates import TemplateError, format_rows, render, tabwrite

C = {"Id": "abc", "Name": "/web", "State": {"Status": "running", "Pid": 42, "Running": True},
     "Config": {"Env": ["A=1", "B=2"], "Labels": {"b": "2", "a": "1"}, "Cmd": None},
     "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.88.0.2"}}}, "Count": 3}


@pytest.mark.parametrize("tmpl,want", [
    ("{{.Id}}", "abc"),
    ("{{.State.Status}} {{.State.Pid}}", "running 42"),
    ("{{.State.Running}}", "true"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{.Config.Cmd}}", "<nil>".replace("<nil>", "<no value>")),
    ("{{.Nope}}", "<no value>"),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{json .State}}", '{"Status":"running","Pid":42,"Running":true}'),
    ("{{range .Config.Env}}[{{.}}]{{end}}", "[A=1][B=2]"),
    ("{{range $i, $e := .Config.Env}}{{$i}}={{$e}};{{end}}", "0=A=1;1=B=2;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}{{$v}} {{end}}", "a1 b2 "),
    ("{{range $n, $c := .NetworkSettings.Networks}}{{$n}}:{{$c.IPAddress}}{{end}}",
     "bridge:10.88.0.2"),
    ("{{range .Config.Cmd}}x{{else}}none{{end}}", "none"),
    ("{{join .Config.Env \",\"}}", "A=1,B=2"),
    ("{{upper .Name}} {{lower \"AB\"}} {{title \"web\"}}", "/WEB ab Web"),
    ("{{.Name | upper}}", "/WEB"),
    ("{{index .Config.Labels \"a\"}}", "1"),
    ("{{index .Config.Env 1}}", "B=2"),
    ("{{(index .NetworkSettings.Networks \"bridge\").IPAddress}}", "10.88.0.2"),
    ("{{len .Config.Env}}", "2"),
    ("{{println .Id}}", "abc\n"),
    ("{{printf \"%s-%d\" .Id .Count}}", "abc-3"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if eq .State.Status \"exited\"}}x{{else if eq .State.Pid 42}}p{{else}}z{{end}}", "p"),
    ("{{if and .State.Running (gt .Count 2)}}y{{end}}", "y"),
    ("{{if not .Config.Cmd}}nocmd{{end}}", "nocmd"),
    ("{{with .State}}{{.Status}}{{end}}", "running"),
    ("{{$n := .Name}}{{range .Config.Env}}{{$n}}{{end}}", "/web/web"),
    ("{{range .Config.Env}}{{$.Id}}{{end}}", "abcabc"),
    ("{{split \"a:b\" \":\"}}", "[a b]"),
    ("a\\tb", "a\tb"),
    ("{{- .Id -}}  x", "abcx"),
    ("{{pad .Id 1 2}}|{{truncate .Id 2}}", " abc  |ab"),
])
def test_render(tmpl: str, want: str) -> None:
    assert render(tmpl, C) == want


@pytest.mark.parametrize("tmpl,msg", [
    ("{{if .Id}}", "EOF"), ("{{end}}", "unexpected"), ("{{nosuch .Id}}", "not defined"),
    ("{{.Id .Name}}", "non-function"), ("{{index .Config.Env 9}}", "out of range"),
    ("{{.Id", "unclosed action"), ("x {{.Id}} {{", "unclosed action"),
])
def test_render_errors_name_the_problem(tmpl: str, msg: str) -> None:
    with pytest.raises(TemplateError, match=msg) as ei:
        render(tmpl, C)
    assert str(ei.value).startswith("--format: template:")


def test_strict_rows_refuse_unknown_fields() -> None:
    with pytest.raises(TemplateError, match="can't evaluate field Nope"):
        render("{{.Nope}}", {"ID": "x"}, strict=True)


def test_format_rows_table_json_and_template() -> None:
    rows = [{"ID": "a1", "Names": "web"}, {"ID": "b22222222222", "Names": "db"}]
    got: list[str] = []
    format_rows("table {{.ID}}\t{{.Names}}", rows, lambda: None, {"ID": "CONTAINER ID"},
                out=got.append)
    assert got == ["CONTAINER ID   NAMES", "a1             web", "b22222222222   db"]
    got.clear()
    format_rows("json", rows, lambda: None, out=got.append)
    assert got == ['{"ID":"a1","Names":"web"}', '{"ID":"b22222222222","Names":"db"}']
    got.clear()
    format_rows("{{.Names}}", rows, lambda: None, out=got.append)
    assert got == ["web", "db"]
    called: list[int] = []
    format_rows("table", rows, lambda: called.append(1), out=got.append)
    assert called == [1]


def test_tabwrite_minwidth() -> None:
    assert tabwrite(["a\tb", "cc\td"]) == ["a         b", "cc        d"]


def test_parse_errors_show_without_rows() -> None:
    with pytest.raises(TemplateError, match="unclosed"):
        format_rows("{{.ID", [], lambda: None)
