"""Bad input in bulk (hypothesis): generated services.yaml files and tag values never
produce a traceback; they are accepted or refused with BadInput (exit 2), and the CLI
starts nothing for them.

The counts below are what docs/reliability.md reports.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent import cli, role
from agent.config import catalog
from agent.errors import EXIT_BAD_INPUT, BadInput

VALID = {
    "version": 1,
    "repos": {"api": {"url": "https://example.com/api.git", "ref": "main", "build": "make"}},
    "databases": {"postgres": {"version": 15, "databases": ["api"]}, "redis": {}},
    "services": {
        "api-web": {"repo": "api", "command": "run --port $PORT", "port": 8000,
                    "health": {"path": "/health", "timeout": 30}, "env": {"A": "b"},
                    "uses": ["postgres", "redis"], "release": "migrate",
                    "load_balancer": {"production": {"target_group": "tg"}}},
        "api-worker": {"repo": "api", "command": "work", "uses": ["redis"], "after": ["api-web"]},
    },
    "environments": {"production": {"config_path": "/unified/production"}},
}

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["", " ", "\n", "[x]", "a:b", "$(id)", "%s", "☃", "1.0"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += paths(value, prefix + (index,))
    return found


@st.composite
def mutated(draw: Any) -> Any:
    """The valid file with one to three places replaced, dropped or given an extra key."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(doc)))
        if not where:
            return draw(values)
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "drop", "extra"]))
        if action == "replace" or not isinstance(parent, dict):
            parent[where[-1]] = draw(values)
        elif action == "drop":
            del parent[where[-1]]
        else:
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return doc


def check_file(path: Path) -> None:
    try:
        catalog.load(path)
    except BadInput as exc:
        assert exc.exit_code == EXIT_BAD_INPUT
        for line in exc.lines:
            assert line.startswith(f"{path}:") and "\n" not in line, line


@SETTINGS
@given(doc=mutated())
def test_mutated_services_files_never_crash(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    check_file(path)


@SETTINGS
@given(text=st.text(max_size=400))
def test_arbitrary_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(text, encoding="utf-8")
    check_file(path)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "services.yaml"
    path.write_bytes(raw)
    check_file(path)


def near_misses(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid value, nudged: white space or a control character added at either end or
    inside, a letter's case changed, a character dropped, doubled or swapped for a
    look-alike. Random text almost never comes near a valid name; these all do."""
    def nudge(value: str, where: int, how: int, extra: str) -> str:
        i = where % (len(value) + 1)
        if how == 0:
            return value[:i] + extra + value[i:]
        if how == 1:
            return value[:i] + value[i:].swapcase()
        if how == 2 and value:
            return value[:i] + value[i + 1:]
        if how == 3 and value:
            return value[:i] + value[i % len(value)] + value[i:]
        return value.replace("-", "\u2010").replace("o", "\u043e") + extra  # Unicode look-alikes
    return st.builds(nudge, st.sampled_from(valid), st.integers(0, 40), st.integers(0, 4),
                     st.sampled_from([" ", "\n", "\t", "\r", "\x00", "\u00a0", "\ufeff", "", "x"]))


MODES = ["review", "staging", "production"]
SERVICES = ["api-web", "api-worker"]


@SETTINGS
@given(mode=st.one_of(st.none(), st.text(max_size=60), st.sampled_from(MODES), near_misses(MODES)),
       service=st.one_of(st.none(), st.text(max_size=60), st.sampled_from(SERVICES), near_misses(SERVICES)))
def test_tag_values_are_exact_or_refused(tmp_path: Path, mode: str | None, service: str | None) -> None:
    path = tmp_path / "services.yaml"
    if not path.exists():
        path.write_text(json.dumps(VALID))
    cat = catalog.load(path)
    try:
        got = role.resolve(cat, mode, service, source="tags")
    except BadInput as exc:
        assert exc.exit_code == EXIT_BAD_INPUT and "\n" not in str(exc)
        return
    assert got.mode == mode and mode in ("review", "staging", "production")
    assert got.service == (service if mode != "review" else None) and (got.service is None or got.service in cat.services)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mutated())
@example(doc=VALID)  # valid but never baked: refused for its checkouts, still before writing
def test_the_cli_refuses_bad_files_before_touching_the_root(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    root = tmp_path / "root"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["boot", "--mode", "review", "--root", str(root), "--services", str(path)])
    # a bad file is refused; a mutation that is still valid is refused for its missing
    # checkouts (nothing is baked here): either way exit 2, before anything is written
    assert "Traceback" not in err.getvalue()
    assert code == EXIT_BAD_INPUT
    assert not root.exists(), "refused input must not write anything"
