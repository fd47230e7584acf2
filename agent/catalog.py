"""services.yaml: load, validate and turn into the typed catalog the plan is made from.

Validation has two layers: the JSON Schema in `agent.schema` (shapes and types) and the
cross-checks here (references between sections). Every problem becomes one line
`FILE:LINE: key.path: what is wrong`, all of them reported at once, so an operator fixes
the file in one pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from agent import yamlsource
from agent.errors import BadInput
from agent.schema import SCHEMA
from agent.yamlsource import KeyPath, YamlDocument, format_path

# Program names the agent itself uses in review mode; a service may not take them.
RESERVED_NAMES = frozenset({"postgres", "redis", "agent", "supervisord"})
DEFAULT_PG_PORT = 5432
DEFAULT_REDIS_PORT = 6379


@dataclass(frozen=True)
class Repo:
    name: str
    url: str
    ref: str
    build: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    target_group: str | None = None
    classic_elb: str | None = None


@dataclass(frozen=True)
class Health:
    path: str
    timeout: float = 60.0


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
    after: tuple[str, ...] = ()
    start_seconds: int = 1
    stop_seconds: int = 30
    load_balancer: dict[str, LoadBalancer] = field(default_factory=dict)


@dataclass(frozen=True)
class Postgres:
    version: int | None = None
    databases: tuple[str, ...] = ()
    port: int = DEFAULT_PG_PORT


@dataclass(frozen=True)
class Redis:
    port: int = DEFAULT_REDIS_PORT


@dataclass(frozen=True)
class Catalog:
    path: Path
    digest: str
    repos: dict[str, Repo]
    services: dict[str, Service]
    postgres: Postgres | None = None
    redis: Redis | None = None
    environments: dict[str, str] = field(default_factory=dict)  # mode -> SSM config path


def load(path: Path) -> Catalog:
    """Read, validate and build the catalog, or raise BadInput listing every problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _bad(path, 1, (), "file not found; pass --services FILE or put it at this path") from None
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
    problems = schema_problems(doc) or cross_check(doc.data)
    if problems:
        lines = [f"{path}:{doc.line_of(kp)}: {format_path(kp)}: {msg}" for kp, msg in problems]
        ordered = sorted(set(lines), key=lambda s: int(s[len(str(path)) + 1 :].split(":", 1)[0]))
        raise BadInput(ordered[0], lines=ordered)
    return _build(path, hashlib.sha256(raw).hexdigest(), doc.data)


def _bad(path: Path, line: int, key_path: KeyPath, message: str) -> BadInput:
    text = f"{path}:{line}: {format_path(key_path)}: {message}"
    return BadInput(text)


def schema_problems(doc: YamlDocument) -> list[tuple[KeyPath, str]]:
    """JSON Schema errors as (key path, human message)."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = []
    for error in validator.iter_errors(doc.data):
        problems.append(_describe(error))
    return problems


def _describe(error: jsonschema.ValidationError) -> tuple[KeyPath, str]:
    path: KeyPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if kind == "additionalProperties" and schema.get("additionalProperties") is False:
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return path + (extra[0],), f"unknown key {extra[0]!r}; expected one of: {allowed}"
    if kind == "required":
        missing = str(error.message).split("'")[1]
        return path, f"missing required key {missing!r}"
    if kind == "propertyNames":
        bad = error.instance if isinstance(error.instance, str) else str(error.instance)
        expected = (error.validator_value or {}).get("x-expected") if isinstance(error.validator_value, dict) else None
        enum = (error.validator_value or {}).get("enum") if isinstance(error.validator_value, dict) else None
        what = expected or (f"one of: {', '.join(enum)}" if enum else "a valid name")
        return path, f"{_name_of(error)} is not allowed here; expected {what}"
    if kind == "type":
        return path, f"expected {_types(error.validator_value)}, got {_show(error.instance)}"
    if kind == "pattern":
        return path, f"expected {schema.get('x-expected', 'a matching string')}, got {_show(error.instance)}"
    if kind in ("enum", "const"):
        options = error.validator_value if kind == "enum" else [error.validator_value]
        return path, f"expected one of: {', '.join(map(str, options))}; got {_show(error.instance)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum")
        return path, f"expected a number from {low} to {high}, got {_show(error.instance)}"
    if kind in ("minProperties", "maxProperties"):
        expected = schema.get("x-expected") or "at least one entry"
        return path, f"expected {expected}"
    if kind == "uniqueItems":
        return path, "entries must not repeat"
    return path, error.message


def _name_of(error: jsonschema.ValidationError) -> str:
    # propertyNames errors carry the offending key as the instance.
    return repr(error.instance)


def _types(value: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "nothing"}
    values = value if isinstance(value, list) else [value]
    return " or ".join(names.get(v, v) for v in values)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (quote it to make a string)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def cross_check(data: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """References between sections; only run once the shapes are right."""
    problems: list[tuple[KeyPath, str]] = []
    repos = data.get("repos", {})
    dbs = data.get("databases") or {}
    envs = data.get("environments") or {}
    services: dict[str, Any] = data.get("services", {})
    ports: dict[int, KeyPath] = {}
    for db, default in (("postgres", DEFAULT_PG_PORT), ("redis", DEFAULT_REDIS_PORT)):
        if db in dbs:
            ports[(dbs[db] or {}).get("port", default)] = ("databases", db)
    for name, svc in services.items():
        where: KeyPath = ("services", name)
        if name in RESERVED_NAMES:
            problems.append((where, f"the name {name!r} is reserved for the agent; rename the service"))
        if svc["repo"] not in repos:
            problems.append((where + ("repo",), f"no repo {svc['repo']!r} under repos; declare it or fix the name"))
        for i, db in enumerate(svc.get("uses", [])):
            if db not in dbs:
                problems.append((where + ("uses", i), f"{db!r} is not declared under databases"))
        for env in svc.get("load_balancer", {}):
            if env not in envs:
                problems.append((where + ("load_balancer", env), f"no environment {env!r} under environments"))
        if "port" not in svc and ("health" in svc or svc.get("load_balancer")):
            key = "health" if "health" in svc else "load_balancer"
            problems.append((where + (key,), "needs a port: add `port:` to the service"))
        if "port" in svc:
            port = svc["port"]
            if port in ports:
                problems.append((where + ("port",), f"port {port} is already used by {format_path(ports[port])}"))
            ports.setdefault(port, where)
        for i, other in enumerate(svc.get("after", [])):
            if other not in services or other == name:
                problems.append((where + ("after", i), f"{other!r} is not another service in this file"))
    cycle = _find_cycle({n: [a for a in s.get("after", []) if a in services] for n, s in services.items()})
    if cycle:
        problems.append((("services", cycle[0], "after"), f"start order has a cycle: {' -> '.join(cycle)}"))
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the `after` graph as a list of names, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _build(path: Path, digest: str, data: dict[str, Any]) -> Catalog:
    repos = {n: Repo(n, r["url"], r["ref"], r.get("build")) for n, r in data["repos"].items()}
    services = {}
    for name, s in data["services"].items():
        health = Health(s["health"]["path"], float(s["health"].get("timeout", 60))) if "health" in s else None
        lbs = {env: LoadBalancer(lb.get("target_group"), lb.get("classic_elb")) for env, lb in s.get("load_balancer", {}).items()}
        services[name] = Service(
            name=name, repo=s["repo"], command=s["command"], port=s.get("port"), health=health,
            env=dict(s.get("env", {})), uses=tuple(s.get("uses", ())), release=s.get("release"),
            after=tuple(s.get("after", ())), start_seconds=s.get("start_seconds", 1),
            stop_seconds=s.get("stop_seconds", 30), load_balancer=lbs,
        )
    dbs = data.get("databases") or {}
    postgres = None
    if "postgres" in dbs:
        pg = dbs["postgres"] or {}
        postgres = Postgres(pg.get("version"), tuple(pg.get("databases", ())), pg.get("port", DEFAULT_PG_PORT))
    redis = Redis((dbs["redis"] or {}).get("port", DEFAULT_REDIS_PORT)) if "redis" in dbs else None
    envs = {name: e["config_path"] for name, e in (data.get("environments") or {}).items()}
    return Catalog(path, "sha256:" + digest, repos, services, postgres, redis, envs)
