"""boto3 clients, configured once: retry mode, timeouts, region.

The only module that imports boto3. Endpoints are boto3's own business: it reads
`AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) itself, so nothing here knows
about test servers. Throttling and transient errors are retried by boto3's `adaptive`
mode (standard retries plus client-side rate limiting), not by loops of ours.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

RETRY_MODE = os.environ.get("AWS_RETRY_MODE", "adaptive")
MAX_ATTEMPTS = int(os.environ.get("AWS_MAX_ATTEMPTS", "8"))


@lru_cache(maxsize=None)
def client(service: str, region: str) -> Any:
    """A shared client per (service, region); boto3 clients are thread-safe."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": RETRY_MODE, "max_attempts": MAX_ATTEMPTS},
        connect_timeout=5,
        read_timeout=20,
        user_agent_extra="unified-agent",
    )
    return boto3.session.Session().client(service, config=config)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def is_aws_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError
    return isinstance(exc, (BotoCoreError, ClientError))
