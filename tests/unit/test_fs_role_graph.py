"""Small pure pieces: atomic writes, role checks, the boot graph."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent import role
from agent.config import catalog
from agent.local import fs, graph
from agent.errors import EXIT_BAD_INPUT, BadInput


def test_write_is_atomic_private_and_idempotent(tmp_path: Path) -> None:
    spec = fs.FileSpec(tmp_path / "a/b/secret.env", "x=1\n", 0o600)
    assert fs.write(spec) is True
    assert (tmp_path / "a/b/secret.env").stat().st_mode & 0o777 == 0o600
    mtime = spec.path.stat().st_mtime_ns
    assert fs.write(spec) is False and spec.path.stat().st_mtime_ns == mtime
    assert fs.write(fs.FileSpec(spec.path, "x=2\n", 0o600)) is True
    assert spec.path.read_text() == "x=2\n"
    assert [p.name for p in spec.path.parent.iterdir()] == ["secret.env"]  # no temp files left


def test_mode_change_alone_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fs.write(fs.FileSpec(path, "same", 0o644))
    assert fs.write(fs.FileSpec(path, "same", 0o600)) is True
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def cat(tmp_path: Path) -> catalog.Catalog:
    path = tmp_path / "services.yaml"
    path.write_text("version: 1\nrepos: {r: {url: ., ref: main}}\n"
                    "services: {web: {repo: r, command: run, port: 8000}, worker: {repo: r, command: work}}\n")
    return catalog.load(path)


@pytest.mark.parametrize("mode,service", [("review", None), ("staging", "web"), ("production", "worker")])
def test_known_roles(cat: catalog.Catalog, mode: str, service: str | None) -> None:
    assert role.resolve(cat, mode, service).mode == mode


@pytest.mark.parametrize("mode,service,fragment", [
    (None, None, "no mode"),
    ("Production", "web", "is not one of"),
    ("production ", "web", "is not one of"),
    ("production", None, "needs a service"),
    ("production", "", "needs a service"),
    ("production", "web\n[program:x]", "is not in"),
    ("production", "web; rm -rf /", "is not in"),
    ("production", "../web", "is not in"),
    ("review", "web", "whole stack"),
    ("x" * 5000, None, "..."),
])
def test_untrusted_roles_are_refused(cat: catalog.Catalog, mode: str | None, service: str | None, fragment: str) -> None:
    with pytest.raises(BadInput) as caught:
        role.resolve(cat, mode, service, source="tag")
    message = str(caught.value)
    assert fragment in message and caught.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in message and len(message) < 400


def test_graph_runs_independent_nodes_in_parallel_and_orders_dependents() -> None:
    order: list[str] = []
    lock = threading.Lock()
    # a and b meet at a barrier: if they did not run at the same time, it breaks
    both = threading.Barrier(2, timeout=10)

    def step(name: str, meet: bool):
        def act() -> None:
            if meet:
                both.wait()
            with lock:
                order.append(name)
        return act

    # listed dependent first: the graph, not the list, decides the order
    result = graph.run([graph.Node("c", step("c", False), ["a", "b"]), graph.Node("a", step("a", True)),
                        graph.Node("b", step("b", True))])
    assert all(e is None for e in result.values()), result
    assert order[-1] == "c" and sorted(order[:2]) == ["a", "b"]


def test_graph_skips_dependents_of_a_failure() -> None:
    def boom() -> None:
        raise RuntimeError("db down")

    ran: list[str] = []
    result = graph.run([graph.Node("db", boom), graph.Node("svc", lambda: ran.append("svc"), ["db"]),
                        graph.Node("other", lambda: ran.append("other"))])
    assert isinstance(result["db"], RuntimeError)
    assert isinstance(result["svc"], graph.DependencyFailed) and ran == ["other"]


def test_schema_pass_is_skipped_only_for_the_validated_bytes(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    # shape is wrong (port as a string) but the cross-checks would not notice
    path.write_text("version: 1\nrepos: {r: {url: ., ref: main}}\nservices: {web: {repo: r, command: x, port: '80'}}\n")
    with pytest.raises(BadInput):
        catalog.load(path)
    with pytest.raises(BadInput):
        catalog.load(path, validated_digest="sha256:" + "0" * 64)
    import hashlib
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert catalog.load(path, validated_digest=digest).digest == digest


@pytest.mark.parametrize("text,fragment", [
    ('services:\n  "web\\n": {repo: r, command: x}\n', "is not allowed as a name"),
    ('services:\n  web: {repo: r, command: x, env: {"FOO\\n": y}}\n', "environment variable name"),
    ('services:\n  web: {repo: r, command: x, env: {PORT: "1"}}\n', "PORT and names starting UNIFIED_ or SUPERVISOR_"),
    ('services:\n  web: {repo: r, command: x, env: {A: "a\\0b"}}\n', "without NUL"),
    ('services:\n  web: {repo: r, command: "run\\0"}\n', "non-empty command"),
])
def test_newlines_nul_and_reserved_names_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "services.yaml"
    path.write_text("version: 1\nrepos: {r: {url: ., ref: main}}\n" + text)
    with pytest.raises(BadInput) as caught:
        catalog.load(path)
    assert fragment in "\n".join(caught.value.lines)


def test_a_broken_state_file_is_an_error_not_a_fresh_box(tmp_path: Path) -> None:
    from agent.local import state
    from agent.errors import AgentError
    from agent.local.layout import Layout
    layout = Layout(tmp_path)
    assert state.load(layout) is None
    layout.state_dir.mkdir(parents=True)
    for broken in ("[]", "{not json", '{"programs": [{"nope": 1}]}'):
        layout.state_file.write_text(broken)
        with pytest.raises(AgentError, match="state"):
            state.load(layout)


@pytest.mark.parametrize("url", ["https://ghp_TOKEN@github.com/o/r.git", "https://u:p@example.com/r.git"])
def test_repo_urls_with_credentials_are_refused(tmp_path: Path, url: str) -> None:
    from agent.local import git
    with pytest.raises(BadInput, match="carries credentials") as caught:
        git.resolve_url(url, tmp_path)
    assert "TOKEN" not in str(caught.value) and ":p@" not in str(caught.value)


def test_scp_like_and_local_urls(tmp_path: Path) -> None:
    from agent.local import git
    assert git.resolve_url("git@github.com:o/r.git", tmp_path) == "git@github.com:o/r.git"
    assert git.resolve_url("github.com:o/r.git", tmp_path) == "github.com:o/r.git"
    assert git.resolve_url("ssh://git@host/r.git", tmp_path) == "ssh://git@host/r.git"
    assert git.resolve_url("../r", tmp_path) == str((tmp_path / "../r").resolve())
