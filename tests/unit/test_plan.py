"""The plan is a pure function: these tests need no processes and no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import catalog
from agent.paths import Layout
from agent.plan import REDACTED, Inputs, Role, make_plan

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


def test_review_runs_databases_then_every_service(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs(pg_password="pw", redis_password="rpw"))
    names = [p.name for p in plan.programs]
    assert names == ["postgres", "redis", "api-web", "api-worker", "web"]
    assert plan.program("api-web").needs == ("postgres", "redis")
    assert plan.program("api-worker").needs == ("redis",)
    assert plan.program("web").needs == ("postgres", "api-web")
    assert plan.databases == ("api", "other")
    assert plan.registrations == ()


def test_review_injects_database_urls_as_secrets(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs(pg_password="pw", redis_password="rpw"))
    api = plan.program("api-web")
    assert api.environment["DATABASE_URL"] == "postgresql://app:pw@127.0.0.1:5440/api"
    assert api.environment["REDIS_URL"] == "redis://:rpw@127.0.0.1:6390/0"
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


def test_users_come_from_inputs(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("review"), LAYOUT, Inputs(service_user="unified", postgres_user="postgres"))
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
    assert plan.registrations[0].target_group == "prod-api-web" and plan.registrations[0].port == 8000
    assert plan.config_path == "/unified/production"
    assert "s3cr3t" not in str(plan.to_json())
    # migrations run once per deploy, never on every instance that boots
    assert program.release is None and plan.deferred_release == "python -m api.migrate"


def test_staging_classic_elb_and_services_without_load_balancer(cat: catalog.Catalog) -> None:
    plan = make_plan(cat, Role("staging", "api-web"), LAYOUT, Inputs())
    assert plan.registrations[0].classic_elb == "stg-api" and plan.registrations[0].target_group is None
    worker = make_plan(cat, Role("staging", "api-worker"), LAYOUT, Inputs())
    assert worker.registrations == ()


def test_plan_is_deterministic(cat: catalog.Catalog) -> None:
    a = make_plan(cat, Role("review"), LAYOUT, Inputs()).to_json()
    b = make_plan(cat, Role("review"), LAYOUT, Inputs()).to_json()
    assert a == b
