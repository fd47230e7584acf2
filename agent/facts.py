"""Facts about this machine that the plan needs: tools, users, generated secrets.

Gathered once per command, before planning, so that `agent.plan` stays a pure
function. Each local database kind says what it needs (its binaries, the system user
it runs as, whether it has a password); this module only asks and collects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from agent.local import secrets, users
from agent.local.databases import kinds
from agent.local.layout import Layout

if TYPE_CHECKING:
    from agent.config.catalog import Catalog
    from agent.role import Role

SERVICE_USER = "unified"   # the unprivileged user services run as, where the image has it
REDACTED = "(secret)"      # stands in for a secret a dry run must not make or show


@dataclass(frozen=True)
class Facts:
    """Everything the plan needs from outside services.yaml."""

    service_user: str | None = None                                  # None: the agent's own user
    service_home: str = "/"                                          # supervisord's `user=` sets no HOME
    tools: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # database kind -> its binaries
    users: Mapping[str, str | None] = field(default_factory=dict)    # database kind -> user it runs as
    secrets: Mapping[str, str] = field(default_factory=dict)         # database kind -> its password
    config_vars: Mapping[str, str] = field(default_factory=dict)     # from SSM, outside review

    def secret(self, kind: str) -> str:
        return self.secrets.get(kind, REDACTED)


def gather(layout: Layout, catalog: Catalog, role: Role, *, generate_secrets: bool,
           config_vars: Mapping[str, str] | None = None) -> Facts:
    """The facts for `role`. Local databases (review mode only) are looked up, and with
    `generate_secrets` their passwords are made or read back (a dry `agent plan` shows
    REDACTED instead, and writes nothing)."""
    service_user = users.system_user(SERVICE_USER)
    tools: dict[str, Mapping[str, str]] = {}
    db_users: dict[str, str | None] = {}
    passwords: dict[str, str] = {}
    if role.mode == "review":
        for db in catalog.databases.values():
            kind = kinds.get(db.kind)
            tools[db.kind] = kind.find_tools(db)
            db_users[db.kind] = users.system_user(kind.OS_USER)
            if generate_secrets:
                passwords[db.kind] = secrets.secret(layout, db.kind)
    return Facts(service_user=service_user, service_home=users.home_of(service_user), tools=tools,
                 users=db_users, secrets=passwords, config_vars=dict(config_vars or {}))
