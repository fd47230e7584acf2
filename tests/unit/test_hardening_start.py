"""Pure pieces of starting safely: which PostgreSQL data directory counts as finished,
the durable release record, and the release timeout in services.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.local import state
from agent.local.databases import postgres
from agent.local.layout import Layout


def test_only_a_finished_cluster_counts_and_none_is_ever_deleted(tmp_path: Path) -> None:
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
