"""services.yaml: load, validate and turn into the typed catalog the plan is made from.

Validation has two layers: the JSON Schema in `agent.config.schema` (shapes and types) and the
cross-checks here (references between sections). Every problem becomes one line
`FILE:LINE: key.path: what is wrong`, and all the problems of a layer are reported at
once; the cross-checks run only once the shapes are right, so a file with both kinds of
mistake shows its reference mistakes on the next run. (A file that is not YAML stops at
its first syntax error.)
"""

from __future__ import annotations

import datetime
import graphlib
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from agent.config import yamlsource
from agent.config.schema import DATABASES, FLEET, MAX_ENV_STRING, MAX_ENVIRONMENT, SCHEMA, SERVICE
from agent.config.yamlsource import KeyPath, YamlDocument, format_path
from agent.errors import BadInput

# Program names the agent itself uses in review mode; a service may not take them.
RESERVED_NAMES = frozenset({*DATABASES, "agent", "supervisord"})
RELEASE_TIMEOUT: int = SERVICE["properties"]["release_timeout"]["default"]  # type: ignore[index]


@dataclass(frozen=True)
class Repo:
    name: str
    url: str
    ref: str
    build: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    """Where a service's instances join for one environment: `kind` is the key used in
    services.yaml (target_group, target_groups or classic_elb), `names` its value(s)."""

    kind: str
    names: tuple[str, ...]

    def pick(self, choice: str | None) -> tuple[str, str]:
        """(kind, name) this instance registers with. A pair is blue/green: `choice` (the
        `unified:target-group` tag, untrusted) must name one of its two groups."""
        if self.kind != "target_groups":
            return self.kind, self.names[0]
        if choice not in self.names:
            raise BadInput(f"the target group pair is {' and '.join(self.names)}: the instance must be tagged "
                           f"with one of them (got {_show(choice) if choice is not None else 'no tag'})")
        return "target_group", choice


@dataclass(frozen=True)
class Health:
    path: str
    timeout: float = 60.0


@dataclass(frozen=True)
class Scale:
    """The size of a service's group in one environment (its first deploy; later ones
    size the new group like the live one)."""

    min: int
    max: int
    desired: int


@dataclass(frozen=True)
class Service:
    name: str
    repo: str
    command: str
    port: int | None = None
    health: Health | None = None
    env: dict[str, str] = field(default_factory=dict)
    uses: tuple[str, ...] = ()
    release: str | None = None
    release_timeout: int = RELEASE_TIMEOUT
    after: tuple[str, ...] = ()
    start_seconds: int = 1
    stop_seconds: int = 30
    load_balancer: dict[str, LoadBalancer] = field(default_factory=dict)
    scale: dict[str, Scale] = field(default_factory=dict)
    verify: tuple[str, ...] = ()        # paths probed before a switch (default: `verify_paths`)

    @property
    def verify_paths(self) -> tuple[str, ...]:
        """`verify`, else the health path, else `/` for a service with a port; none for a worker."""
        if self.verify:
            return self.verify
        return (self.health.path,) if self.health is not None else ("/",) if self.port is not None else ()


@dataclass(frozen=True)
class Database:
    """A local database of review mode. The catalog knows only its kind and port; the
    rest of its section (`settings`) is read by its kind's module."""

    kind: str
    port: int
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    """An environment's fixed parts, for the deploy tool (docs/deploy.md)."""

    load_balancer: str
    launch_template: str
    subnets: tuple[str, ...]
    table: str
    standby_minutes: int = 30
    retain: int = 5
    instance_profile: str | None = None     # with {service}: one instance role per service
    instance_types: tuple[str, ...] = ()    # spot first, on-demand backup, from these types
    on_demand_base: int = 1
    verify_count: int = 5

    def instance_profile_of(self, service: str) -> str | None:
        return self.instance_profile.replace("{service}", service) if self.instance_profile else None


@dataclass(frozen=True)
class Environment:
    name: str
    config_path: str            # SSM: <config_path>/<service>/<KEY>
    fleet: Fleet | None = None


@dataclass(frozen=True)
class Catalog:
    path: Path
    digest: str
    repos: dict[str, Repo]
    services: dict[str, Service]
    databases: dict[str, Database] = field(default_factory=dict)    # kind -> database
    environments: dict[str, Environment] = field(default_factory=dict)


def load(path: Path, validated_digest: str | None = None) -> Catalog:
    """Read, validate and build the catalog, or raise BadInput listing every problem.

    `validated_digest`: the digest of a file already validated (the bake records it in
    the manifest); identical bytes skip the JSON Schema pass, which with its import
    takes some 0.05 s of every boot (measured on a 2-core machine). The cross-checks always run.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _bad(path, 1, (), "file not found (give services.yaml with --services FILE)") from None
    except OSError as exc:
        raise _bad(path, 1, (), f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _bad(path, line, (), "not UTF-8 text; save the file as UTF-8") from None
    try:
        doc = yamlsource.load(path, text)
    except yamlsource.YamlError as exc:
        raise _bad(path, exc.line, exc.key_path, exc.message) from None
    if doc.data is None:
        raise _bad(path, 1, (), "the file is empty; expected a mapping with version, repos and services")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    problems = (schema_problems(doc) if digest != validated_digest else []) or cross_check(doc.data)
    if problems:
        found = {(doc.line_of(p.at or p.path), format_path(p.path), p.message) for p in problems}
        lines = [f"{path}:{line}: {where}: {message}" for line, where, message in sorted(found)]
        raise BadInput(lines[0], lines=lines)
    return _build(path, digest, doc.data)


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its key path, a message, and where to point for the line when
    that differs (a bad key *name* is reported under its parent, at its own line)."""

    path: KeyPath
    message: str
    at: KeyPath | None = None


def _bad(path: Path, line: int, key_path: KeyPath, message: str) -> BadInput:
    return BadInput(f"{path}:{line}: {format_path(key_path)}: {message}")


@lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema validator, built on first use (jsonschema is imported only then).
    YAML gives Python types; JSON Schema's "integer" would accept 8000.0 and "number" NaN."""
    import jsonschema

    types = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    ).redefine(
        "number", lambda _, v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    )
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=types)(SCHEMA)


def schema_problems(doc: YamlDocument) -> list[Problem]:
    """JSON Schema errors as problems with human messages."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(doc.data):
        problems.extend(_describe(error))
    return problems


def _describe(error: Any) -> list[Problem]:
    path: KeyPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if "propertyNames" in error.schema_path:
        key = error.instance
        expected = schema.get("x-expected") or (f"one of: {', '.join(schema['enum'])}" if "enum" in schema else "a valid name")
        return [Problem(path, f"{_show(key)} is not allowed as a name here; expected {expected}", at=path + (key,))]
    if kind == "additionalProperties" and schema.get("additionalProperties") is False:
        known = schema.get("properties", {})
        allowed = ", ".join(sorted(known))
        return [Problem(path + (extra,) if yamlsource.plain(extra) else path,
                        f"unknown key {_show(extra)}; expected one of: {allowed}", at=path + (extra,))
                for extra in error.instance if extra not in known]
    return [Problem(path, _message(error, schema))]


def _message(error: Any, schema: dict[str, Any]) -> str:
    kind, got = error.validator, _show(error.instance)
    if kind == "required":
        return f"missing required key {str(error.message).split(chr(39))[1]!r}"
    if kind == "type":
        wanted = error.validator_value
        hint = " (quote it to make a string)" if wanted == "string" and not isinstance(error.instance, (dict, list, type(None))) else ""
        return f"expected {_types(wanted)}, got {got}{hint}"
    if kind == "pattern":
        return f"expected {schema.get('x-expected', 'a matching string')}, got {got}"
    if kind == "const":
        return f"expected {error.validator_value}, got {got}"
    if kind == "enum":
        return f"expected one of: {', '.join(map(str, error.validator_value))}; got {got}"
    if kind in ("minimum", "maximum", "exclusiveMinimum"):
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            return f"expected a number greater than {schema['exclusiveMinimum']} and at most {high}, got {got}"
        return f"expected a number from {schema.get('minimum')} to {high}, got {got}"
    if kind in ("minProperties", "maxProperties"):
        return f"expected {schema.get('x-expected') or 'at least one entry'}"
    if kind in ("minItems", "maxItems"):
        return f"expected {schema.get('x-expected') or 'a list of another length'}, got {len(error.instance)} entries"
    if kind == "uniqueItems":
        return "entries must not repeat"
    return str(error.message)


def _types(value: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "nothing"}
    values = value if isinstance(value, list) else [value]
    return " or ".join(names.get(str(v), str(v)) for v in values)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value}"
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def cross_check(data: dict[str, Any]) -> list[Problem]:
    """References between sections; only run once the shapes are right."""
    problems: list[Problem] = []
    repos = data.get("repos", {})
    dbs = data.get("databases") or {}
    envs = data.get("environments") or {}
    services: dict[str, Any] = data.get("services", {})
    ports: dict[int, KeyPath] = {}
    for db in dbs:
        ports[_port_of(db, dbs[db])] = ("databases", db)
    for name, svc in services.items():
        where: KeyPath = ("services", name)
        if name in RESERVED_NAMES:
            problems.append(Problem(where, f"the name {name!r} is reserved for the agent; rename the service"))
        if svc["repo"] not in repos:
            problems.append(Problem(where + ("repo",), f"no repo {svc['repo']!r} under repos; declare it or fix the name"))
        for i, db in enumerate(svc.get("uses", [])):
            if db not in dbs:
                problems.append(Problem(where + ("uses", i), f"{db!r} is not declared under databases"))
        for env in svc.get("load_balancer", {}):
            if env not in envs:
                problems.append(Problem(where + ("load_balancer", env), f"no environment {env!r} under environments"))
        if "port" not in svc and ("health" in svc or svc.get("load_balancer") or "verify" in svc):
            key = next(k for k in ("health", "load_balancer", "verify") if svc.get(k))
            problems.append(Problem(where + (key,), "needs a port: add `port:` to the service"))
        for env, scale in svc.get("scale", {}).items():
            if env not in envs:
                problems.append(Problem(where + ("scale", env), f"no environment {env!r} under environments"))
            elif "fleet" not in (envs[env] or {}):
                problems.append(Problem(where + ("scale", env), f"environments.{env} has no fleet section: "
                                        "the deploy tool needs its fixed parts (docs/deploy.md)"))
            low, high = scale.get("min", scale["desired"]), scale.get("max", scale["desired"])
            if not low <= scale["desired"] <= high:
                problems.append(Problem(where + ("scale", env), f"expected min <= desired <= max, got {low}, "
                                        f"{scale['desired']}, {high}"))
        if "port" in svc:
            port = svc["port"]
            if port in ports:
                problems.append(Problem(where + ("port",), f"port {port} is already used by {format_path(ports[port])}"))
            ports.setdefault(port, where)
        for key, message in environment_problems({**svc.get("env", {}), "UNIFIED_COMMAND": svc["command"]}):
            problems.append(Problem(where + (("env", key) if key != "UNIFIED_COMMAND" else ("command",)), message))
        for i, other in enumerate(svc.get("after", [])):
            if other not in services or other == name:
                problems.append(Problem(where + ("after", i), f"{other!r} is not another service in this file"))
    for env, section in envs.items():
        profile = ((section or {}).get("fleet") or {}).get("instance_profile")
        if profile is not None and "{service}" not in profile:
            problems.append(Problem(("environments", env, "fleet", "instance_profile"),
                                    "expected a name with {service} in it: each service gets its own instance "
                                    "role (agent policy writes it)"))
    cycle = _find_cycle({n: [a for a in s.get("after", []) if a in services and a != n]
                         for n, s in services.items()})
    if cycle:
        problems.append(Problem(("services", cycle[0], "after"), f"start order has a cycle: {' -> '.join(cycle)}"))
    return problems


def environment_problems(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, message) for what exec could not carry: a "KEY=value" string over
    MAX_ENV_STRING bytes, or an environment over MAX_ENVIRONMENT bytes in all."""
    problems = []
    total = 0
    for key, value in env.items():
        size = len(key.encode()) + 1 + len(value.encode()) + 1
        total += size
        if size > MAX_ENV_STRING:
            problems.append((key, f"{size} bytes as KEY=value; a process can be given at most {MAX_ENV_STRING} "
                                  "bytes per variable (keep large data in a file, pass its path)"))
    if total > MAX_ENVIRONMENT and not problems:
        key = max(env, key=lambda k: len(env[k]))
        problems.append((key, f"the environment is {total} bytes in all; the agent allows {MAX_ENVIRONMENT} "
                              "(keep large data in a file, pass its path)"))
    return problems


def _port_of(kind: str, section: dict[str, Any] | None) -> int:
    """A database's port: its own, or the default its schema section states."""
    default: int = DATABASES[kind]["properties"]["port"]["default"]
    return int((section or {}).get("port", default))


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the `after` graph as a list of names (first name repeated at the end,
    read as "starts after"), or None. Nodes are added in name order, so the cycle
    reported for a given file is always the same one."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node in sorted(graph):
        sorter.add(node, *graph[node])
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the one that needs it; we say "needs" left to right
        ring: list[str] = list(reversed(exc.args[1]))[:-1]
        start = ring.index(min(ring))
        ring = ring[start:] + ring[:start]
        return ring + [ring[0]]
    return None


def _build(path: Path, digest: str, data: dict[str, Any]) -> Catalog:
    repos = {n: Repo(n, r["url"], r["ref"], r.get("build")) for n, r in data["repos"].items()}
    services = {}
    for name, s in data["services"].items():
        health = Health(s["health"]["path"], float(s["health"].get("timeout", 60))) if "health" in s else None
        lbs = {env: _load_balancer(lb) for env, lb in s.get("load_balancer", {}).items()}
        services[name] = Service(
            name=name, repo=s["repo"], command=s["command"], port=s.get("port"), health=health,
            env=dict(s.get("env", {})), uses=tuple(s.get("uses", ())), release=s.get("release"),
            release_timeout=s.get("release_timeout", RELEASE_TIMEOUT),
            after=tuple(s.get("after", ())), start_seconds=s.get("start_seconds", 1),
            stop_seconds=s.get("stop_seconds", 30), load_balancer=lbs,
            scale={env: Scale(c.get("min", c["desired"]), c.get("max", c["desired"]), c["desired"])
                   for env, c in s.get("scale", {}).items()},
            verify=tuple(s.get("verify", ())),
        )
    dbs = {kind: Database(kind, _port_of(kind, section), dict(section or {}))
           for kind, section in (data.get("databases") or {}).items()}
    envs = {name: Environment(name, e["config_path"], _fleet(e["fleet"]) if "fleet" in e else None)
            for name, e in (data.get("environments") or {}).items()}
    return Catalog(path, digest, repos, services, dbs, envs)


def _fleet(section: dict[str, Any]) -> Fleet:
    defaults = {key: spec["default"] for key, spec in FLEET["properties"].items() if "default" in spec}
    values = {**defaults, **section}
    return Fleet(values["load_balancer"], values["launch_template"], tuple(values["subnets"]), values["table"],
                 values["standby_minutes"], values["retain"], values.get("instance_profile"),
                 tuple(values.get("instance_types", ())), values["on_demand_base"], values["verify_count"])


def _load_balancer(section: dict[str, Any]) -> LoadBalancer:
    (kind, value), = section.items()  # the schema allows exactly one key
    return LoadBalancer(kind, tuple(value) if isinstance(value, list) else (value,))
