"""Local PostgreSQL and Redis for review mode: find them, initialise, provision.

The servers themselves run as supervisord programs (see `agent.plan`); this module does
the one-off work around them: initdb on first boot, the application role and databases,
and the generated passwords. PostgreSQL runs as the `postgres` user when the agent is
root (initdb refuses root); peer authentication on its private socket lets the agent
administer it without a superuser password, while services log in over TCP 127.0.0.1
with a generated password.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from agent import fs
from agent.errors import AgentError
from agent.paths import Layout
from agent.plan import Tools
from agent.users import run_as


def find_tools(pg_version: int | None = None) -> Tools:
    """Where postgres and redis-server are: PATH first, then Debian's versioned dirs."""
    pg_bin = None
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if pg_version is not None:
        wanted = f"/usr/lib/postgresql/{pg_version}/bin/postgres"
        candidates = [wanted] if os.path.exists(wanted) else candidates
    found = shutil.which("postgres")
    if found and (pg_version is None or not candidates):
        pg_bin = str(Path(found).resolve().parent)
    elif candidates:
        pg_bin = str(Path(candidates[-1]).parent)
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    return Tools(pg_bin=pg_bin or "/usr/lib/postgresql/15/bin", redis_server=redis)


def initialised(layout: Layout) -> bool:
    return (layout.pg_data / "PG_VERSION").exists()


def initdb(layout: Layout, tools: Tools, user: str | None) -> bool:
    """Create the cluster on first boot; False when it already exists."""
    if initialised(layout):
        return False
    fs.ensure_dir(layout.pg_data, 0o700, user)
    result = subprocess.run(
        [f"{tools.pg_bin}/initdb", "-D", str(layout.pg_data), "--auth-local=peer",
         "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
        cwd="/", capture_output=True, text=True, check=False, **run_as(user),  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise AgentError(f"initdb failed for {layout.pg_data}: {result.stderr.strip()[-500:]}")
    return True


def provision(layout: Layout, tools: Tools, user: str | None, port: int, databases: tuple[str, ...],
              app_password: str) -> None:
    """Create the `app` role (with its password) and every declared database, unless they
    exist: a second boot changes nothing (an ALTER at every boot would store a new salt).

    SQL goes over stdin, never argv, so the password is not visible in `ps`.
    """
    db_lines = "\n".join(
        f"SELECT 'CREATE DATABASE {db} OWNER app' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{db}')\\gexec" for db in databases)
    sql = f"""
SELECT format('CREATE ROLE app LOGIN PASSWORD %L', '{app_password}') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app')\\gexec
{db_lines}
"""
    superuser = user or pwd.getpwuid(os.geteuid()).pw_name
    result = subprocess.run(
        [f"{tools.pg_bin}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(layout.pg_socket_dir),
         "-p", str(port), "-U", superuser, "-d", "postgres"],
        input=sql, cwd="/", capture_output=True, text=True, check=False, **run_as(user),  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        detail = result.stderr.strip()[-500:].replace(app_password, "***")  # psql echoes the statement
        raise AgentError(f"creating databases {', '.join(databases)} failed: {detail}")


def prepare_dirs(layout: Layout, pg_user: str | None, redis_user: str | None, with_pg: bool, with_redis: bool) -> None:
    if with_pg:
        fs.ensure_dir(layout.pg_socket_dir, 0o755, pg_user)
    if with_redis:
        fs.ensure_dir(layout.redis_data, 0o700, redis_user)
