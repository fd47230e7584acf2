"""The plan: a pure function of (catalog, role, inputs) -> what should run on this box.

No I/O happens here: everything that needs the machine (where PostgreSQL is installed,
which user exists, generated passwords, SSM config vars) is gathered by the caller and
passed in as `Inputs`, so the plan can be printed (`agent plan --json`), diffed and
unit-tested without processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agent.paths import Layout
from agent.readiness import Readiness

if TYPE_CHECKING:  # the catalog pulls in jsonschema; `agent status` must not pay for it
    from agent.catalog import Catalog, Service

MODES = ("review", "staging", "production")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REDACTED = "(secret)"


@dataclass(frozen=True)
class Role:
    """Who this box is: a mode, and outside review the one service it runs."""

    mode: str
    service: str | None = None


@dataclass(frozen=True)
class Tools:
    """Paths of the database servers, found on the machine by `agent.databases.find_tools`."""

    pg_bin: str = "/usr/lib/postgresql/15/bin"
    redis_server: str = "/usr/bin/redis-server"


@dataclass(frozen=True)
class Inputs:
    """Everything the plan needs from outside, gathered before planning."""

    tools: Tools = field(default_factory=Tools)
    service_user: str | None = None      # unprivileged user services run as, if the image has one
    service_home: str = "/"              # that user's home (supervisord's `user=` sets no HOME)
    postgres_user: str | None = None     # OS user PostgreSQL runs as (None: the agent's own)
    redis_user: str | None = None
    pg_password: str = REDACTED          # the application role's password (review mode)
    redis_password: str = REDACTED
    config_vars: dict[str, str] = field(default_factory=dict)  # from SSM, outside review


@dataclass(frozen=True)
class Program:
    """One supervisord program. `command` is a shell command (Procfile style) for
    services; database servers get an exact `argv` instead."""

    name: str
    kind: str                           # "service" or "database"
    directory: str
    user: str | None
    needs: tuple[str, ...]              # start order: programs that must be ready first
    readiness: Readiness
    command: str | None = None
    argv: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    secret_keys: tuple[str, ...] = ()   # environment keys whose values must never be shown
    release: str | None = None
    start_seconds: int = 1
    stop_seconds: int = 30
    stop_signal: str = "TERM"
    port: int | None = None


@dataclass(frozen=True)
class Registration:
    """A load balancer the service must be registered with (staging/production)."""

    service: str
    port: int
    target_group: str | None = None
    classic_elb: str | None = None


@dataclass(frozen=True)
class Plan:
    role: Role
    programs: tuple[Program, ...]
    databases: tuple[str, ...] = ()     # PostgreSQL databases to create (review mode)
    registrations: tuple[Registration, ...] = ()
    config_path: str | None = None      # SSM prefix the service's config vars come from
    # Outside review the release runs once per deploy (the fleet tool's job), never on
    # each instance: several instances booting at once must not all migrate.
    deferred_release: str | None = None

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)

    @property
    def services(self) -> tuple[Program, ...]:
        return tuple(p for p in self.programs if p.kind == "service")

    def to_json(self) -> dict[str, Any]:
        """The plan as data, with secret values replaced by a marker."""
        data = asdict(self)
        for prog in data["programs"]:
            for key in prog["secret_keys"]:
                prog["environment"][key] = REDACTED
        return data


def make_plan(catalog: Catalog, role: Role, layout: Layout, inputs: Inputs) -> Plan:
    """Compute what should run for `role`; raises KeyError only for a role the caller
    has not validated (see `agent.role`)."""
    if role.mode == "review":
        return _review(catalog, layout, inputs)
    assert role.service is not None
    svc = catalog.services[role.service]
    program = _service_program(svc, layout, inputs, needs=(), extra=inputs.config_vars)
    program = replace(program, secret_keys=tuple(sorted(inputs.config_vars)), release=None)
    regs: tuple[Registration, ...] = ()
    lb = svc.load_balancer.get(role.mode)
    if lb is not None and svc.port is not None:
        regs = (Registration(svc.name, svc.port, lb.target_group, lb.classic_elb),)
    return Plan(role, (program,), (), regs, catalog.environments.get(role.mode), deferred_release=svc.release)


def _review(catalog: Catalog, layout: Layout, inputs: Inputs) -> Plan:
    programs: list[Program] = []
    databases: tuple[str, ...] = ()
    if catalog.postgres is not None:
        pg = catalog.postgres
        programs.append(Program(
            name="postgres", kind="database", directory=str(layout.pg_data), user=inputs.postgres_user,
            needs=(), readiness=Readiness("postgres", pg.port, timeout=60.0), port=pg.port,
            argv=(f"{inputs.tools.pg_bin}/postgres", "-D", str(layout.pg_data), "-p", str(pg.port),
                  "-k", str(layout.pg_socket_dir), "-c", "listen_addresses=127.0.0.1"),
            stop_signal="INT", stop_seconds=60,  # SIGINT is PostgreSQL's "fast" shutdown
        ))
        databases = pg.databases or ("app",)
    if catalog.redis is not None:
        programs.append(Program(
            name="redis", kind="database", directory=str(layout.redis_data), user=inputs.redis_user,
            needs=(), readiness=Readiness("redis", catalog.redis.port, timeout=30.0), port=catalog.redis.port,
            argv=(inputs.tools.redis_server, str(layout.etc / "redis.conf")),
        ))
    local = {p.name for p in programs}
    for name, svc in catalog.services.items():
        extra_env: dict[str, str] = {}
        secret: list[str] = []
        if "postgres" in svc.uses and catalog.postgres is not None:
            db = svc.repo if svc.repo in databases else databases[0]
            extra_env["DATABASE_URL"] = (
                f"postgresql://app:{inputs.pg_password}@127.0.0.1:{catalog.postgres.port}/{db}")
            secret.append("DATABASE_URL")
        if "redis" in svc.uses and catalog.redis is not None:
            extra_env["REDIS_URL"] = f"redis://:{inputs.redis_password}@127.0.0.1:{catalog.redis.port}/0"
            secret.append("REDIS_URL")
        needs = tuple(d for d in svc.uses if d in local) + svc.after
        program = _service_program(svc, layout, inputs, needs=needs, extra=extra_env)
        programs.append(replace(program, secret_keys=tuple(secret)))
    return Plan(Role("review"), tuple(programs), databases)


def _service_program(svc: Service, layout: Layout, inputs: Inputs, needs: tuple[str, ...],
                     extra: dict[str, str]) -> Program:
    user = inputs.service_user or "root"
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": inputs.service_home, "USER": user, "LOGNAME": user,
           **svc.env}
    if svc.port is not None:
        env["PORT"] = str(svc.port)
    env.update(extra)
    if svc.health is not None:
        readiness = Readiness("http", svc.port, svc.health.path, svc.health.timeout)
    else:
        readiness = Readiness("running", svc.port, timeout=max(30.0, svc.start_seconds + 30.0),
                              up_seconds=float(svc.start_seconds))
    return Program(
        name=svc.name, kind="service", directory=str(layout.repo_dir(svc.repo)), user=inputs.service_user,
        needs=needs, readiness=readiness, command=svc.command, environment=env, release=svc.release,
        start_seconds=svc.start_seconds, stop_seconds=svc.stop_seconds, port=svc.port,
    )
