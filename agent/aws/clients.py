"""boto3 clients, configured once (retry mode, timeouts, region), and the one place an
AWS error becomes an AgentError.

The agent's only module that imports boto3 (the deploy tool gets its clients from
here too, through `fleet.aws`; `fleet.table` imports boto3's DynamoDB type
converters). Endpoints are boto3's own business: it reads
`AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) itself, so nothing here knows
about test servers. Throttling and transient errors are retried by boto3's `adaptive`
mode (standard retries plus client-side rate limiting), not by loops of ours.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any, Callable

from agent.errors import AgentError

RETRY_MODE = os.environ.get("AWS_RETRY_MODE", "adaptive")
# Who is calling, in the User-Agent: "unified-agent" on instances; the deploy tool sets
# its own name before its first client, so AWS's logs (CloudTrail) tell the two apart.
USER_AGENT = ["unified-agent"]
MAX_ATTEMPTS = int(os.environ.get("AWS_MAX_ATTEMPTS", "8"))


_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def client(service: str, region: str) -> Any:
    """A shared client per (service, region), all from one boto3 session so service
    models are parsed once. boto3 clients are thread-safe; creating them is not, hence
    the lock."""
    with _lock:
        key = (service, region)
        if key not in _clients:
            _clients[key] = _session().client(service, config=_config(region))
        return _clients[key]


def prewarm(region: str, services: list[str]) -> threading.Thread:
    """Create clients in the background: importing boto3 and making the first client
    (botocore's loader and its service model) take some 0.15 s, and each further
    client about 0.01 s (measured on a 2-core machine), better spent while other boot
    steps wait on I/O."""
    def work() -> None:
        for service in services:
            client(service, region)

    thread = threading.Thread(target=work, name="aws-prewarm", daemon=True)
    thread.start()
    return thread


@lru_cache(maxsize=1)
def _session() -> Any:
    import boto3
    return boto3.session.Session()


def _config(region: str) -> Any:
    from botocore.config import Config
    return Config(
        region_name=region,
        retries={"mode": RETRY_MODE, "max_attempts": MAX_ATTEMPTS},
        connect_timeout=5,
        read_timeout=20,
        user_agent_extra=USER_AGENT[0],
    )


class AwsError(AgentError):
    """An AWS call failed after boto3's own retries: `code` is AWS's error code (None for
    a connection error or timeout), `detail` AWS's message."""

    def __init__(self, what: str, code: str | None, detail: str):
        super().__init__(f"{what} failed: {code or 'no answer'}: {detail}" if detail else f"{what} failed: {code}")
        self.code, self.detail = code, detail


def call(what: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """`fn(**kwargs)`, with a botocore failure turned into AwsError("{what} failed: ...").
    `what` says what the agent was doing, in words an operator can act on."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError
    try:
        return fn(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = str(error.get("Message") or "").strip().splitlines()
        raise AwsError(what, error.get("Code"), message[0] if message else "") from None
    except (BotoCoreError, ResponseParserError) as exc:
        raise AwsError(what, None, str(exc).splitlines()[0][:300]) from None
