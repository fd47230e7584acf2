"""SSM Parameter Store: a service's config vars (Heroku's "config vars").

`<config_path>/<service>/<KEY>` becomes `KEY` in the service's environment. Values are
secrets: this module returns them and never logs, prints or writes them.
"""

from __future__ import annotations

import re

from agent.aws import clients
from agent.config.catalog import environment_problems
from agent.config.schema import ENV_KEY as _ENV_KEY
from agent.config.schema import ENV_KEY_EXPECTED
from agent.errors import BadInput

ENV_KEY = re.compile(_ENV_KEY)


def config_vars(config_path: str, service: str, region: str) -> dict[str, str]:
    prefix = f"{config_path.rstrip('/')}/{service}/"
    paginator = clients.client("ssm", region).get_paginator("get_parameters_by_path")
    pages = clients.call(f"reading config vars under {prefix} from SSM",
                         lambda: list(paginator.paginate(Path=prefix, Recursive=True, WithDecryption=True)))
    values: dict[str, str] = {}
    for page in pages:
        for parameter in page["Parameters"]:
            key = parameter["Name"][len(prefix):]
            if not ENV_KEY.match(key):
                raise BadInput(f"SSM parameter {parameter['Name']!r}: {key!r} is not {ENV_KEY_EXPECTED}; "
                               "rename the parameter")
            if "\0" in parameter["Value"]:
                raise BadInput(f"SSM parameter {parameter['Name']!r}: the value holds a NUL character, "
                               "which no environment variable can carry")
            values[key] = parameter["Value"]
    for key, message in environment_problems(values):
        raise BadInput(f"SSM parameter {prefix}{key}: {message}")
    return values
