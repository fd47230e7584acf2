"""Redis for a review box: loopback only, a generated password, its pid file where the
agent looks for orphans (redis-server rewrites its process title and environment).

Settings read from services.yaml: `port`.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Mapping

from agent.errors import BadInput
from agent.local import fs, render
from agent.local.layout import Layout
from agent.local.readiness import Readiness

if TYPE_CHECKING:
    from agent.config.catalog import Database, Service
    from agent.facts import Facts
    from agent.plan import Program

OS_USER = "redis"
URL_VARIABLE = "REDIS_URL"


def find_tools(db: Database) -> Mapping[str, str]:
    server = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if server is None:
        raise BadInput("databases.redis: redis-server is not installed; install the redis-server package")
    return {"server": server}


def _conf(layout: Layout) -> str:
    return str(layout.etc / "redis.conf")


def program(db: Database, layout: Layout, facts: Facts) -> Program:
    from agent.plan import Program
    return Program(
        name="redis", kind="database", database="redis", directory=str(layout.database_dir("redis")),
        user=facts.users.get("redis"), needs=(), port=db.port,
        # -NOAUTH means the server is up and enforcing its password: ready.
        readiness=Readiness("tcp", db.port, timeout=30.0, send="PING\r\n", expect=("+PONG", "-NOAUTH")),
        argv=(facts.tools["redis"]["server"], _conf(layout)),
    )


def files(db: Database, layout: Layout, facts: Facts) -> list[fs.FileSpec]:
    content = render.template("redis.conf.j2", port=db.port, data_dir=layout.database_dir("redis"),
                              password=facts.secret("redis"), pidfile=layout.pidfile("redis"))
    return [fs.FileSpec(layout.etc / "redis.conf", content, 0o600, owner=facts.users.get("redis"))]


def url(db: Database, service: Service, facts: Facts) -> str:
    """With the user `default` spelled out: since Redis 6.2, `redis://:PASSWORD@` is read
    by redis-cli as an empty user name (WRONGPASS), while redis-cli and redis-py both
    accept this (tests/integration/test_review.py)."""
    return f"redis://default:{facts.secret('redis')}@127.0.0.1:{db.port}/0"


def init(db: Database, layout: Layout, facts: Facts) -> bool:
    user = facts.users.get("redis")
    fs.ensure_dir(layout.database_dir("redis"), 0o700, user)
    fs.ensure_dir(layout.runtime_dir("redis"), 0o755, user)
    return False


def after_ready(db: Database, layout: Layout, facts: Facts) -> None:
    """Nothing to create: the password is in its configuration."""
