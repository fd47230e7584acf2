"""The JSON Schema of services.yaml version 1 (docs/services-yaml.md is the contract).

`x-expected` is our own annotation: the human wording of a `pattern`, since
"does not match '^[a-z0-9]...'" helps nobody fix their file. `default` is read by the
catalog, so a default lives in one place.

The kinds of local database and of load balancer are the keys of `DATABASES` and
`LOAD_BALANCER["properties"]`: adding a kind adds its section here, its module
(`agent/local/databases/<kind>.py` or `agent/aws/lb/<kind>.py`) and its docs.
"""

from __future__ import annotations

from typing import Any

NAME = {
    "type": "string",
    "pattern": r"^[a-z0-9][a-z0-9_-]{0,62}\Z",
    "x-expected": "a name of lowercase letters, digits, '-' and '_' (at most 63, starting with a letter or digit)",
}
DB_NAME = {
    "type": "string",
    "pattern": r"^[a-z_][a-z0-9_]{0,62}\Z",
    "x-expected": "a database name of lowercase letters, digits and '_' (at most 63)",
}
# Patterns end in \Z, not $: `$` also matches before a final newline ("web\n").
ENV_KEY = r"^(?!(PORT|UNIFIED_COMMAND)\Z)[A-Za-z_][A-Za-z0-9_]{0,254}\Z"
RESERVED_ENV = ("PORT", "UNIFIED_COMMAND")
COMMAND = {"type": "string", "pattern": r"^(?=[\s\S]*\S)[^\x00]*\Z", "x-expected": "a non-empty command"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
NON_EMPTY = {"type": "string", "pattern": r"\S", "x-expected": "a non-empty string"}

REPO = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "ref"],
    "properties": {
        "url": NON_EMPTY,
        "ref": {
            "type": "string",
            "pattern": r"^[^\s~^:?*\[\\]+\Z",
            "x-expected": "a branch, tag or commit (no spaces or ~^:?*[\\)",
        },
        "build": COMMAND,
    },
}

# `redis:` with nothing after it means "with defaults", like `redis: {}`.
POSTGRES = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "version": {"type": "integer", "minimum": 9, "maximum": 99},
        "databases": {"type": "array", "items": DB_NAME, "uniqueItems": True},
        "port": {**PORT, "default": 5432},
    },
}

REDIS = {"type": ["object", "null"], "additionalProperties": False,
         "properties": {"port": {**PORT, "default": 6379}}}

# One section per kind of local database (review mode): the kind's module is
# agent/local/databases/<kind>.py.
DATABASES: dict[str, dict[str, Any]] = {"postgres": POSTGRES, "redis": REDIS}

# One key per kind of load balancer; the agent's class for each is in agent/aws/lb/.
# `target_groups` is a blue/green pair: the instance joins the one its
# `unified:target-group` tag names.
LOAD_BALANCER = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "x-expected": "exactly one of target_group, target_groups or classic_elb",
    "properties": {
        "target_group": NON_EMPTY,
        "classic_elb": NON_EMPTY,
        "target_groups": {"type": "array", "items": NON_EMPTY, "minItems": 2, "maxItems": 2, "uniqueItems": True,
                          "x-expected": "a pair of target group names, like [prod-web-blue, prod-web-green]"},
    },
}

SERVICE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["repo", "command"],
    "properties": {
        "repo": NAME,
        "command": COMMAND,
        "port": PORT,
        "health": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "pattern": r"^/\S*\Z", "x-expected": "a URL path starting with '/'"},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            },
        },
        "env": {
            "type": "object",
            "propertyNames": {"pattern": ENV_KEY, "x-expected": "an environment variable name ([A-Za-z_][A-Za-z0-9_]*; PORT and UNIFIED_COMMAND are set by the agent)"},
            "additionalProperties": {"type": "string", "pattern": "^[^\\x00]*\\Z",
                                     "x-expected": "a string without NUL characters"},
        },
        "uses": {"type": "array", "items": {"enum": sorted(DATABASES)}, "uniqueItems": True},
        "release": COMMAND,
        # seconds a release may run before it is ended and the boot fails (agent.local.release)
        "release_timeout": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 900},
        "after": {"type": "array", "items": NAME, "uniqueItems": True},
        "start_seconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "stop_seconds": {"type": "integer", "minimum": 1, "maximum": 3600},
        "load_balancer": {
            "type": "object",
            "propertyNames": {"enum": ["staging", "production"]},
            "additionalProperties": LOAD_BALANCER,
        },
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "repos", "services"],
    "properties": {
        "version": {"const": 1},
        "repos": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": REPO},
        "databases": {
            "type": "object",
            "additionalProperties": False,
            "properties": DATABASES,
        },
        "services": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": SERVICE},
        "environments": {
            "type": "object",
            "propertyNames": {"enum": ["staging", "production"]},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["config_path"],
                "properties": {
                    "config_path": {
                        "type": "string",
                        "pattern": r"^(/[A-Za-z0-9_.\-]+)+\Z",
                        "x-expected": "an SSM path like /unified/production (letters, digits, '_', '.', '-')",
                    }
                },
            },
        },
    },
}
