"""YAML with line numbers: where every key came from, duplicate keys, merge keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import yamlsource
from agent.config.yamlsource import YamlError, format_path

HERE = Path("services.yaml")


def load(text: str) -> yamlsource.YamlDocument:
    return yamlsource.load(HERE, text)


def error(text: str) -> YamlError:
    with pytest.raises(YamlError) as info:
        load(text)
    return info.value


NESTED = """\
# a comment first, so line 1 is not the document
version: 1
services:
  web:
    repo: api
    env:
      LOG_LEVEL: info
      EMPTY: ""
    uses:
      - postgres
      - redis
    after: [a, b]
    nested:
      -
        deep: {x: 1}
"""


def test_lines_of_nested_keys() -> None:
    doc = load(NESTED)
    assert doc.lines[()] == 2
    assert doc.lines[("version",)] == 2
    assert doc.lines[("services",)] == 3
    assert doc.lines[("services", "web")] == 4
    assert doc.lines[("services", "web", "repo")] == 5
    assert doc.lines[("services", "web", "env", "LOG_LEVEL")] == 7
    assert doc.lines[("services", "web", "env", "EMPTY")] == 8


def test_lines_of_list_items() -> None:
    doc = load(NESTED)
    assert doc.lines[("services", "web", "uses", 0)] == 10
    assert doc.lines[("services", "web", "uses", 1)] == 11
    assert doc.lines[("services", "web", "after", 0)] == 12
    assert doc.lines[("services", "web", "after", 1)] == 12
    assert doc.lines[("services", "web", "nested", 0, "deep", "x")] == 15


def test_line_of_falls_back_to_the_nearest_ancestor() -> None:
    doc = load(NESTED)
    assert doc.line_of(("services", "web", "port")) == 4  # missing key: its mapping's line
    assert doc.line_of(("services", "web", "env", "LOG_LEVEL")) == 7
    assert doc.line_of(("nowhere", "at", "all")) == 2  # the document itself


def test_data_is_plain_and_typed() -> None:
    doc = load(NESTED)
    web = doc.data["services"]["web"]
    assert doc.data["version"] == 1
    assert web["env"] == {"LOG_LEVEL": "info", "EMPTY": ""}
    assert web["uses"] == ["postgres", "redis"]
    assert web["nested"] == [{"deep": {"x": 1}}]
    assert load('a: "1"\nb: yes\nc: ~\nd: 1.5\n').data == {"a": "1", "b": True, "c": None, "d": 1.5}


def test_empty_document_has_no_data() -> None:
    for text in ("", "# only a comment\n", "---\n"):
        assert load(text).data is None


def test_duplicate_key_names_both_lines() -> None:
    exc = error("version: 1\nservices:\n  web:\n    repo: a\n    command: x\n    repo: b\n")
    assert exc.line == 6
    assert exc.key_path == ("services", "web", "repo")
    assert "duplicate key 'repo'" in exc.message
    assert "line 4" in exc.message


def test_duplicate_key_in_flow_mapping() -> None:
    exc = error("a: 1\nb: {x: 1,\n    x: 2}\n")
    assert (exc.line, exc.key_path) == (3, ("b", "x"))
    assert "line 2" in exc.message


def test_non_string_key_is_refused() -> None:
    exc = error("env:\n  A: x\n  2: y\n")
    assert (exc.line, exc.key_path) == (3, ("env",))
    assert "key 2 must be a string" in exc.message


def test_syntax_error_has_its_line() -> None:
    exc = error("a: 1\nb:\n  c: d: e\n")
    assert exc.line == 3
    assert exc.message.startswith("not valid YAML")


MERGE = """\
services:
  web: &common
    repo: api
    command: run web
    env: {LOG_LEVEL: info}
  worker:
    <<: *common
    command: run worker
"""


def test_merge_key_brings_in_the_anchor() -> None:
    doc = load("base: &b {repo: api, command: run}\nweb:\n  <<: *b\n  port: 80\n")
    assert doc.data["web"] == {"repo": "api", "command": "run", "port": 80}
    # merged keys point at the anchor, where an operator would fix them
    assert doc.lines[("web", "repo")] == 1
    assert doc.lines[("web", "port")] == 4


def test_merge_key_with_a_list_of_anchors() -> None:
    doc = load("a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n")
    assert doc.data["c"] == {"x": 1, "y": 2, "z": 3}


def test_explicit_key_overrides_a_merged_one() -> None:
    # YAML merge semantics: keys written in the mapping win over merged ones. It is what
    # merge keys are for, so it is not a duplicate key.
    doc = load(MERGE)
    assert doc.data["services"]["worker"] == {"repo": "api", "command": "run worker", "env": {"LOG_LEVEL": "info"}}
    assert doc.lines[("services", "worker", "command")] == 8


def test_duplicate_key_next_to_a_merge_is_still_caught() -> None:
    exc = error("base: &b {x: 1}\nc:\n  <<: *b\n  y: 1\n  y: 2\n")
    assert (exc.line, exc.key_path) == (5, ("c", "y"))


def test_format_path() -> None:
    assert format_path(()) == "(top)"
    assert format_path(("services", "web", "uses", 1)) == "services.web.uses.1"
