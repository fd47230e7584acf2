"""Pure pieces of starting safely: which PostgreSQL data directory counts as finished,
the durable release record, and the release timeout in services.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import AgentError
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
