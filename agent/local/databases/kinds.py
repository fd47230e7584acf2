"""The kinds of local database (review mode), one module each, found by name.

A kind is the module `agent.local.databases.<kind>`, named like its section under
`databases:` in services.yaml (`agent.config.schema.DATABASES`). The plan and the
executor go through the `DatabaseKind` protocol only, so adding a kind means adding
its module, its schema section, its docs and, if it renders a configuration file, its
template in units/ (like redis.conf.j2): nothing here changes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Mapping, Protocol, cast

if TYPE_CHECKING:
    from agent.config.catalog import Database, Service
    from agent.facts import Facts
    from agent.local.fs import FileSpec
    from agent.local.layout import Layout
    from agent.plan import Program


class DatabaseKind(Protocol):
    """What a kind's module provides. `program`, `files` and `url` are pure (the plan
    calls them); `find_tools`, `init` and `after_ready` do the I/O."""

    OS_USER: str          # the system user its server runs as when the agent is root
    URL_VARIABLE: str     # the variable a service that `uses` it gets (DATABASE_URL, REDIS_URL)

    def find_tools(self, db: Database) -> Mapping[str, str]:
        """Its binaries on this machine; BadInput if the version services.yaml pins is missing."""

    def program(self, db: Database, layout: Layout, facts: Facts) -> Program:
        """The supervisord program that runs its server."""

    def files(self, db: Database, layout: Layout, facts: Facts) -> list[FileSpec]:
        """Configuration files its server reads, as data."""

    def url(self, db: Database, service: Service, facts: Facts) -> str:
        """The URL (with credentials) a service reaches it by."""

    def init(self, db: Database, layout: Layout, facts: Facts) -> bool:
        """Before each start: directories, and on first boot a cluster (complete or
        redone). True when it did first-boot work."""

    def after_ready(self, db: Database, layout: Layout, facts: Facts) -> None:
        """Once it answers: roles, databases. Idempotent."""


def get(kind: str) -> DatabaseKind:
    """The module of `kind` (a name the schema has already checked)."""
    return cast(DatabaseKind, importlib.import_module(f"agent.local.databases.{kind}"))
