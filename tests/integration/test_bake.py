"""`agent bake` against real git repositories made by the test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import GIT, Agent, git_commit_all

pytestmark = pytest.mark.integration
def repo(path: Path, files: dict[str, str], tag: str | None = None) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    sha = git_commit_all(path, "one", init=True)
    if tag:
        subprocess.run(GIT + ["-C", str(path), "tag", tag], check=True)
    return sha


def commit(path: Path, name: str, text: str) -> str:
    (path / name).write_text(text)
    return git_commit_all(path, "two")


def services(agent: Agent, repos: dict[str, tuple[Path, str, str | None]]) -> None:
    lines = ["version: 1", "repos:"]
    for name, (url, ref, build) in repos.items():
        lines.append(f"  {name}: {{url: '{url}', ref: '{ref}'" + (f", build: '{build}'" if build else "") + "}")
    lines += ["services:", f"  svc: {{repo: {next(iter(repos))}, command: 'true'}}"]
    agent.services = agent.root / "services.yaml"
    agent.services.write_text("\n".join(lines) + "\n")


def test_bake_pins_refs_builds_and_writes_the_manifest(tmp_path: Path, new_root: Agent) -> None:
    a_sha = repo(tmp_path / "a", {"Makefile": "x"})
    b_first = repo(tmp_path / "b", {"f": "1"}, tag="v1.0")
    b_head = commit(tmp_path / "b", "f", "2")
    c_sha = repo(tmp_path / "c", {"f": "c"})
    services(new_root, {"a": (tmp_path / "a", "main", "echo built > BUILT"),
                        "b": (tmp_path / "b", "v1.0", None),
                        "c": (tmp_path / "c", c_sha, "test -f f")})
    result = new_root("bake", check=True)
    manifest = json.loads((new_root.root / "srv/unified/manifest.json").read_text())
    got = {r["repo"]: r for r in manifest["repos"]}
    assert {n: r["sha"] for n, r in got.items()} == {"a": a_sha, "b": b_first, "c": c_sha}
    assert b_head != b_first  # the tag, not the branch head
    assert got["a"]["ref"] == "main" and got["a"]["url"] == str(tmp_path / "a")
    assert manifest["services_digest"].startswith("sha256:") and manifest["agent_version"]
    assert (new_root.root / "srv/unified/repos/a/BUILT").read_text() == "built\n"
    assert "a: built" in result.stdout and "b: cloned" in result.stdout
    status = new_root("status", "--json")
    assert json.loads(status.stdout)["manifest"]["repos"][0]["sha"] in (a_sha, b_first, c_sha)


def test_rebake_fetches_instead_of_recloning(tmp_path: Path, new_root: Agent) -> None:
    repo(tmp_path / "a", {"f": "1"})
    services(new_root, {"a": (tmp_path / "a", "main", None)})
    new_root("bake", check=True)
    checkout = new_root.root / "srv/unified/repos/a"
    marker = checkout / ".git" / "rebake-marker"
    marker.write_text("same clone")
    new_sha = commit(tmp_path / "a", "f", "2")
    result = new_root("bake", check=True)
    assert "a: fetched" in result.stdout and marker.exists()
    assert json.loads((new_root.root / "srv/unified/manifest.json").read_text())["repos"][0]["sha"] == new_sha
    assert (checkout / "f").read_text() == "2"


def test_a_failing_build_is_named_with_its_output_after_the_others_finish(tmp_path: Path, new_root: Agent) -> None:
    repo(tmp_path / "good", {"f": "1"})
    repo(tmp_path / "bad", {"f": "1"})
    services(new_root, {"good": (tmp_path / "good", "main", "sleep 1; echo good done > DONE"),
                        "bad": (tmp_path / "bad", "main", "echo compiling; echo boom >&2; exit 3")})
    result = new_root("bake")
    assert result.returncode == 1
    assert "bad: build exited 3" in result.stderr and "boom" in result.stderr
    assert "good" not in result.stderr.split("bake failed")[1].split("\n")[0].replace("1 of 2", "")
    assert (new_root.root / "srv/unified/repos/good/DONE").exists()  # the other repo finished
    assert not (new_root.root / "srv/unified/manifest.json").exists()  # no manifest for a half bake


def test_unknown_ref_and_password_urls_are_refused(tmp_path: Path, new_root: Agent) -> None:
    repo(tmp_path / "a", {"f": "1"})
    services(new_root, {"a": (tmp_path / "a", "no-such-branch", None)})
    result = new_root("bake")
    assert result.returncode == 1 and "ref 'no-such-branch' not found" in result.stderr
    new_root.services.write_text("version: 1\nrepos:\n  a: {url: 'https://user:hunter2@git.example.com/a.git', "
                                 "ref: main}\nservices:\n  svc: {repo: a, command: 'true'}\n")
    result = new_root("bake")
    assert result.returncode == 2 and "carries credentials" in result.stderr and "hunter2" not in result.stderr


def test_repos_bake_in_parallel(tmp_path: Path, new_root: Agent) -> None:
    """Each build checks in at a rendezvous and waits (up to 30 s) for the other two:
    baked one after another, the first build would give up and fail the bake."""
    meet = tmp_path / "rendezvous"
    meet.mkdir()
    repos = {}
    for name in ("a", "b", "c"):
        repo(tmp_path / name, {"f": name})
        build = (f"touch {meet}/{name}; for i in $(seq 300); do "
                 f"[ $(ls {meet} | wc -l) -ge 3 ] && exit 0; sleep 0.1; done; exit 1")
        repos[name] = (tmp_path / name, "main", build)
    services(new_root, repos)
    new_root("bake", "--jobs", "3", check=True)
    assert sorted(p.name for p in meet.iterdir()) == ["a", "b", "c"]
