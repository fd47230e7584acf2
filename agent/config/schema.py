"""The JSON Schema of services.yaml version 1 (docs/services-yaml.md is the contract).

`x-expected` is our own annotation: the human wording of a `pattern`, since
"does not match '^[a-z0-9]...'" helps nobody fix their file. Where a key states its
`default` here (the databases' ports, `release_timeout`, the fleet's numbers), the
catalog reads it from here; the defaults of `health.timeout` (60), `start_seconds` (1)
and `stop_seconds` (30) are written in `agent.config.catalog` instead.

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
# Variables the agent itself sets or relies on: PORT, its own UNIFIED_* (the command,
# the environment digest) and supervisord's SUPERVISOR_* (how a dead supervisord's
# orphans are found). A service that set one would break the agent, so none may.
ENV_KEY = r"^(?!(PORT\Z|UNIFIED_|SUPERVISOR_))[A-Za-z_][A-Za-z0-9_]{0,254}\Z"
ENV_KEY_EXPECTED = ("an environment variable name ([A-Za-z_][A-Za-z0-9_]*; PORT and names starting "
                    "UNIFIED_ or SUPERVISOR_ are the agent's)")
# What exec can carry (Linux): one "KEY=value" string at most MAX_ARG_STRLEN (32 pages,
# 131072 bytes), and all of the environment with the command far below ARG_MAX (2 MiB
# with the default 8 MiB stack): the agent allows 1 MiB in all, leaving the rest to
# what the service's own shell and children add.
MAX_ENV_STRING = 131072
MAX_ENVIRONMENT = 1024 * 1024
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

# The deploy tool's keys (`unified`): sizes per environment, and the paths probed
# through the candidate route before a switch. The agent ignores them.
SCALE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["desired"],
    "properties": {
        "min": {"type": "integer", "minimum": 0, "maximum": 1000},
        "max": {"type": "integer", "minimum": 1, "maximum": 1000},
        "desired": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}
URL_PATH = {"type": "string", "pattern": r"^/[\x21-\x7e]*\Z", "x-expected": "a URL path starting with '/'"}
AWS_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}\Z",
            "x-expected": "an AWS name or id (letters, digits, '.', '_', '/', '-')"}

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
            "propertyNames": {"pattern": ENV_KEY, "x-expected": ENV_KEY_EXPECTED},
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
        "scale": {"type": "object", "propertyNames": {"enum": ["staging", "production"]},
                  "additionalProperties": SCALE},
        "verify": {"type": "array", "items": URL_PATH, "minItems": 1, "maxItems": 20, "uniqueItems": True},
    },
}

# An environment's fixed parts, made once outside the tool (docs/deploy.md).
FLEET: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["load_balancer", "launch_template", "subnets", "table"],
    "properties": {
        "load_balancer": AWS_NAME,                     # the ALB whose listeners forward to the groups
        "launch_template": AWS_NAME,                   # the tool adds a version per deploy
        "subnets": {"type": "array", "items": AWS_NAME, "minItems": 1, "uniqueItems": True},
        "table": AWS_NAME,                             # DynamoDB: locks and release history
        "standby_minutes": {"type": "integer", "minimum": 0, "maximum": 10080, "default": 30},
        "retain": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        # instance profile per service: a name with {service} in it (one role per service)
        "instance_profile": {"type": "string", "pattern": r"^[\w+=,.@{}-]{1,128}\Z",
                             "x-expected": "an instance profile name, with {service} for the service's name"},
        # spot first, on-demand backup: the instance types to choose from, and how many
        # of each group's instances are on-demand whatever the spot market does
        "instance_types": {"type": "array", "items": AWS_NAME, "minItems": 1, "uniqueItems": True},
        "on_demand_base": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
        "verify_count": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
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
                    },
                    "fleet": FLEET,
                },
            },
        },
    },
}
