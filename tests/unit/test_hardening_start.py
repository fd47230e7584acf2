"""Pure pieces of starting safely: which PostgreSQL data directory counts as finished,
the durable release record, and the release timeout in services.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.config import catalog
from agent.errors import AgentError
from agent.facts import Facts
from agent.local import procs, release, state
from agent.local.databases import postgres
from agent.local.layout import Layout
from agent.plan import make_plan
from agent.role import Role


def test_only_a_finished_cluster_counts_and_no_data_is_ever_deleted(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = layout.database_dir("postgres")
    assert not postgres.initialised(layout)  # nothing yet
    data.mkdir(parents=True)
    assert not postgres.initialised(layout) and not data.exists()  # an empty one is nothing to keep
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    with pytest.raises(AgentError, match="incomplete PostgreSQL data directory.*remove it"):
        postgres.initialised(layout)  # interrupted in place by an older agent: refused, kept
    assert (data / "PG_VERSION").exists()
    (data / "global").mkdir()
    (data / "global/pg_control").write_bytes(b"\0")
    assert postgres.initialised(layout)
    assert layout.database_scratch("postgres").parent == data.parent  # a rename, not a copy


# -- the release record ------------------------------------------------------------------

def test_a_release_is_recorded_in_its_own_file_apart_from_the_state(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert not state.release_done(layout, "api", "k1")
    state.record_release(layout, "api", "k1")
    assert state.release_done(layout, "api", "k1")
    assert not state.release_done(layout, "api", "k2")   # a new command or new commits: run again
    assert not state.release_done(layout, "web", "k1")   # per service
    assert layout.release_record("api").read_text() == "k1\n"
    assert not layout.state_file.exists()                # the state file plays no part


def test_an_older_agents_record_in_the_state_file_is_honoured_and_moved(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    legacy = state.State(releases={"api": "k1"})
    assert state.release_done(layout, "api", "k1", legacy=legacy)
    assert state.release_done(layout, "api", "k1")       # now in its own file
    assert not state.release_done(layout, "api", "k2", legacy=legacy)


# -- a release's pid file never names a stranger -----------------------------------------

def test_a_pid_file_whose_process_is_not_the_recorded_one_names_nobody(tmp_path: Path) -> None:
    me = procs.Identity.of(os.getpid())
    assert me is not None and me.current() is not None
    reused = procs.Identity(me.pid, me.starttime + 1, me.boot_id)     # same pid, another process
    rebooted = procs.Identity(me.pid, me.starttime, "another-boot")   # same pid and ticks, another boot
    for leader in (reused, rebooted):
        assert leader.current() is None
        assert release.Running("api", leader, f"{tmp_path}:api").members() == []
    path = tmp_path / "api.pid"
    path.write_text("12345\n")  # not one the agent wrote
    assert release.Running.read(path) is None
    path.write_text(json.dumps(release.Running("api", me, "m").to_json()))
    assert release.Running.read(path) == release.Running("api", me, "m")


# -- release_timeout in services.yaml ----------------------------------------------------

def test_release_timeout_has_a_default_and_reaches_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text("version: 1\nrepos:\n  api: {url: https://example.com/api.git, ref: main}\nservices:\n"
                    "  api-web: {repo: api, command: serve, release: migrate}\n"
                    "  api-slow: {repo: api, command: serve, release: migrate, release_timeout: 3600}\n")
    cat = catalog.load(path)
    assert cat.services["api-web"].release_timeout == 900
    assert cat.services["api-slow"].release_timeout == 3600
    plan = make_plan(cat, Role("review"), Layout(Path("/box")), Facts())
    assert {p.name: p.release_timeout for p in plan.programs} == {"api-web": 900, "api-slow": 3600}
