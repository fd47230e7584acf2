"""The plan is a pure function: these tests need no processes and no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import catalog
from agent.local.layout import Layout
from agent.errors import BadInput
from agent.facts import REDACTED, Facts
from agent.plan import describe, make_plan
from agent.role import Role, resolve

STACK = """\
version: 1
repos:
  api: {url: https://example.com/api.git, ref: main}
  web: {url: ../web, ref: v1.2.0}
databases:
  postgres: {version: 15, databases: [api, other], port: 5440}
  redis: {port: 6390}
services:
  api-web:
    repo: api
    command: python -m api.server --port $PORT
    port: 8000
    health: {path: /health, timeout: 20}
    env: {LOG_LEVEL: info}
    uses: [postgres, redis]
    release: python -m api.migrate
    load_balancer:
      production: {target_group: prod-api-web}
      staging: {classic_elb: stg-api}
  api-worker:
    repo: api
    command: python -m api.worker
    uses: [redis]
    start_seconds: 3
  web:
    repo: web
    command: node server.js
    port: 8001
    uses: [postgres]
    after: [api-web]
environments:
  staging: {config_path: /unified/staging}
  production: {config_path: /unified/production}
"""


@pytest.fixture
def cat(tmp_path: Path) -> catalog.Catalog:
    path = tmp_path / "services.yaml"
    path.write_text(STACK)
    return catalog.load(path)


LAYOUT = Layout(Path("/box"))
TOOLS = {"postgres": {"bin": "/pg/bin"}, "redis": {"server": "/usr/bin/redis-server"}}


def Inputs(**changes: object) -> Facts:  # noqa: N802  (reads like the record it makes)
    """Facts as a machine would give them, with `changes`."""
    base: dict[str, object] = {"tools": TOOLS}
    base.update(changes)
    return Facts(**base)  # type: ignore[arg-type]


def secrets(pg: str = "pw", redis: str = "rpw") -> dict[str, str]:
    return {"postgres": pg, "redis": redis}


def test_review_runs_databases_then_every_service(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs(secrets=secrets()))
    names = [p.name for p in plan.programs]
    assert names == ["postgres", "redis", "api-web", "api-worker", "web"]
    assert plan.program("api-web").needs == ("postgres", "redis")
    assert plan.program("api-worker").needs == ("redis",)
    assert plan.program("web").needs == ("postgres", "api-web")
    assert [(db.kind, db.port) for db in plan.databases] == [("postgres", 5440), ("redis", 6390)]
    assert plan.databases[0].settings["databases"] == ["api", "other"]
    assert plan.registrations == ()


def test_review_injects_database_urls_as_secrets(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs(secrets=secrets()))
    api = plan.program("api-web")
    assert api.environment["DATABASE_URL"] == "postgresql://app:pw@127.0.0.1:5440/api"
    # the user `default` spelled out: redis-cli reads an empty user name as a user ""
    assert api.environment["REDIS_URL"] == "redis://default:rpw@127.0.0.1:6390/0"
    assert api.environment["PORT"] == "8000" and api.environment["LOG_LEVEL"] == "info"
    assert api.environment["HOME"] == "/" and api.environment["USER"] == "root"
    assert set(api.secret_keys) == {"DATABASE_URL", "REDIS_URL"}
    # a repo with no database of its name gets the first declared database
    assert plan.program("web").environment["DATABASE_URL"].endswith("/api")
    assert "DATABASE_URL" not in plan.program("api-worker").environment
    shown = plan.to_json()["programs"][2]["environment"]
    assert shown["DATABASE_URL"] == REDACTED and "pw" not in str(plan.to_json())


def test_readiness_and_working_directory(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs())
    api, worker = plan.program("api-web"), plan.program("api-worker")
    assert (api.readiness.kind, api.readiness.port, api.readiness.path, api.readiness.timeout) == ("http", 8000, "/health", 20.0)
    assert worker.readiness.kind == "running" and worker.start_seconds == 3
    assert api.directory == "/box/srv/unified/repos/api"
    assert plan.program("postgres").stop_signal == "INT"
    assert "-p" in plan.program("postgres").argv and "5440" in plan.program("postgres").argv
    assert plan.program("postgres").argv[0] == "/pg/bin/postgres"
    pg_ready = plan.program("postgres").readiness
    assert pg_ready.kind == "exec" and pg_ready.argv[0] == "/pg/bin/pg_isready" and "5440" in pg_ready.argv
    redis_ready = plan.program("redis").readiness
    assert (redis_ready.kind, redis_ready.port, redis_ready.send) == ("tcp", 6390, "PING\r\n")


def test_users_come_from_inputs(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs(service_user="unified", users={"postgres": "postgres", "redis": None}))
    assert plan.program("api-web").user == "unified"
    assert plan.program("postgres").user == "postgres"
    assert plan.program("redis").user is None


def test_production_runs_one_service_with_config_vars_and_registration(cat: catalog.Catalog) -> None:
    inputs = Inputs(config_vars={"SECRET_KEY": "s3cr3t", "LOG_LEVEL": "debug"})
    plan = make_plan(cat, Role("production", "api-web"), LAYOUT, inputs)
    assert [p.name for p in plan.programs] == ["api-web"]
    program = plan.programs[0]
    assert program.needs == ()
    assert program.environment["SECRET_KEY"] == "s3cr3t"
    assert program.environment["LOG_LEVEL"] == "debug"  # SSM overrides plain env
    assert "DATABASE_URL" not in program.environment  # no local databases outside review
    assert set(program.secret_keys) == {"SECRET_KEY", "LOG_LEVEL"}
    reg = plan.registrations[0]
    assert (reg.kind, reg.name, reg.port) == ("target_group", "prod-api-web", 8000)
    assert plan.config_path == "/unified/production"
    assert "s3cr3t" not in str(plan.to_json())
    # migrations run once per deploy, never on every instance that boots
    assert program.release is None and plan.deferred_release == "python -m api.migrate"


def test_staging_classic_elb_and_services_without_load_balancer(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("staging", "api-web"), LAYOUT, Inputs())
    assert (plan.registrations[0].kind, plan.registrations[0].name) == ("classic_elb", "stg-api")
    worker = make_plan(cat, Role("staging", "api-worker"), LAYOUT, Inputs())
    assert worker.registrations == ()


def test_plan_is_deterministic(cat: catalog.Catalog) -> None:
    a = make_plan(cat, Role("review"), LAYOUT, Inputs()).to_json()
    b = make_plan(cat, Role("review"), LAYOUT, Inputs()).to_json()
    assert a == b


def test_a_target_group_pair_registers_with_the_group_the_tag_names(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(STACK.replace("production: {target_group: prod-api-web}",
                                  "production: {target_groups: [prod-api-blue, prod-api-green]}"))
    pair = catalog.load(path)
    role = resolve(pair, "production", "api-web", target_group="prod-api-green")
    reg = make_plan(pair, role, LAYOUT, Inputs()).registrations[0]
    assert (reg.kind, reg.name) == ("target_group", "prod-api-green")
    for bad in (None, "prod-api-red", "prod-api-green\n", " prod-api-green", "PROD-API-GREEN"):
        with pytest.raises(BadInput, match="unified:target-group"):
            resolve(pair, "production", "api-web", target_group=bad)
    # the tag matters only where there is a pair
    assert resolve(pair, "staging", "api-web", target_group="anything").target_group is None


def test_describe_shows_what_would_run_with_secrets_redacted(cat: catalog.Catalog) -> None:
    text = describe(make_plan(cat, Role("review"), LAYOUT, Inputs(secrets=secrets())))
    assert "api-web (service)" in text and "command:   python -m api.server --port $PORT" in text
    assert "ready:     GET /health on port 8000, within 20s" in text
    assert "after:     postgres, redis" in text and "directory: /box/srv/unified/repos/api" in text
    assert f'DATABASE_URL="{REDACTED}"' in text and "rpw" not in text and ":pw@" not in text
    assert "database: postgres on port 5440" in text
