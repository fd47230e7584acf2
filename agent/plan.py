"""The plan: a pure function of (catalog, role, facts) -> what should run on this box.

No I/O happens here: everything that needs the machine (where the database servers
are installed, which users exist, generated passwords, SSM config vars) is gathered
first by `agent.facts` and passed in, so the plan can be printed (`agent plan`),
diffed and unit-tested without processes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agent.errors import BadInput
from agent.facts import REDACTED, Facts
from agent.local.databases import kinds
from agent.local.layout import Layout
from agent.local.readiness import Readiness
from agent.role import Role

if TYPE_CHECKING:  # the catalog pulls in jsonschema; `agent status` must not pay for it
    from agent.config.catalog import Catalog, Database, Service

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    release_timeout: int = 900          # seconds; services.yaml's default is the catalog's
    start_seconds: int = 1
    stop_seconds: int = 30
    stop_signal: str = "TERM"
    port: int | None = None
    database: str | None = None         # the database kind this program serves (agent.local.databases)


@dataclass(frozen=True)
class Registration:
    """A load balancer the service joins (staging/production): `kind` names the class
    in agent.aws.lb (target_group or classic_elb), `name` the load balancer."""

    service: str
    port: int
    kind: str
    name: str


@dataclass(frozen=True)
class Plan:
    role: Role
    programs: tuple[Program, ...]
    databases: tuple[Database, ...] = ()        # local databases (review mode)
    registrations: tuple[Registration, ...] = ()
    config_path: str | None = None              # SSM prefix the service's config vars come from
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


def make_plan(catalog: Catalog, role: Role, layout: Layout, facts: Facts) -> Plan:
    """Compute what should run for `role`; raises KeyError only for a role the caller
    has not validated (see `agent.role`), and BadInput for an environment, config vars
    included, too large for exec."""
    from agent.config.catalog import environment_problems
    if role.mode == "review":
        return _review(catalog, layout, facts)
    assert role.service is not None
    svc = catalog.services[role.service]
    program = _service_program(svc, layout, facts, needs=(), extra=dict(facts.config_vars))
    # the release runs once per deploy, on the instance the deploy tags for it
    program = replace(program, secret_keys=tuple(sorted(facts.config_vars)),
                      release=svc.release if role.run_release else None)
    for key, message in environment_problems({**program.environment, "UNIFIED_COMMAND": svc.command}):
        raise BadInput(f"service {svc.name}, with its config vars: {key}: {message}")
    regs: tuple[Registration, ...] = ()
    lb = svc.load_balancer.get(role.mode)
    if lb is not None and svc.port is not None:
        kind, name = lb.pick(role.target_group)
        regs = (Registration(svc.name, svc.port, kind, name),)
    env = catalog.environments.get(role.mode)
    return Plan(role, (program,), (), regs, env.config_path if env else None,
                deferred_release=None if role.run_release else svc.release)


def _review(catalog: Catalog, layout: Layout, facts: Facts) -> Plan:
    programs = [kinds.get(db.kind).program(db, layout, facts) for db in catalog.databases.values()]
    for name, svc in catalog.services.items():
        extra_env = {}
        for used in svc.uses:
            kind = kinds.get(used)
            extra_env[kind.URL_VARIABLE] = kind.url(catalog.databases[used], svc, facts)
        needs = tuple(svc.uses) + svc.after
        program = _service_program(svc, layout, facts, needs=needs, extra=extra_env)
        programs.append(replace(program, secret_keys=tuple(sorted(extra_env))))
    return Plan(Role("review"), tuple(programs), tuple(catalog.databases.values()))


def _service_program(svc: Service, layout: Layout, facts: Facts, needs: tuple[str, ...],
                     extra: dict[str, str]) -> Program:
    user = facts.service_user or "root"
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": facts.service_home, "USER": user, "LOGNAME": user,
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
        name=svc.name, kind="service", directory=str(layout.repo_dir(svc.repo)), user=facts.service_user,
        needs=needs, readiness=readiness, command=svc.command, environment=env, release=svc.release,
        release_timeout=svc.release_timeout,
        start_seconds=svc.start_seconds, stop_seconds=svc.stop_seconds, port=svc.port,
    )


def describe(plan: Plan) -> str:
    """The plan for people: each program (the databases first, then the services in
    services.yaml's order; `after:` says what each starts after) with its command,
    user, directory, readiness check, release and environment (secrets redacted); then
    the databases, the registrations and a release deferred to the deploy."""
    data = plan.to_json()
    lines = [f"role: {plan.role.describe()}"]
    for prog in data["programs"]:
        check = prog["readiness"]
        how = {"http": f"GET {check['path']} on port {check['port']}", "tcp": f"answers on port {check['port']}",
               "exec": " ".join(check["argv"][:1]) + " exits 0",
               "running": f"up {check['up_seconds']:g}s"}.get(check["kind"], check["kind"])
        lines += [f"{prog['name']} ({prog['kind']})",
                  f"  command:   {prog['command'] or ' '.join(prog['argv'])}",
                  f"  user:      {prog['user'] or '(the agent user)'}",
                  f"  directory: {prog['directory']}",
                  f"  ready:     {how}, within {check['timeout']:g}s",
                  f"  after:     {', '.join(prog['needs']) or '(nothing)'}"]
        if prog["release"]:
            lines.append(f"  release:   {prog['release']}")
        for key, value in sorted(prog["environment"].items()):
            lines.append(f"  env:       {key}={json.dumps(value, ensure_ascii=False)}")
    for db in plan.databases:
        lines.append(f"database: {db.kind} on port {db.port}")
    for reg in plan.registrations:
        lines.append(f"registers: {reg.service} on port {reg.port} with {reg.kind.replace('_', ' ')} {reg.name}")
    if plan.deferred_release:
        lines.append(f"release (run once per deploy, not here): {plan.deferred_release}")
    return "\n".join(lines)
