"""The AWS clients of the tool: the agent's (`agent.aws.clients`: boto3's adaptive retry
mode, timeouts, one error translator) in the region boto3's own settings name."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agent.aws import clients
from agent.aws.clients import AwsError, call
from agent.errors import BadInput

__all__ = ["AwsError", "call", "client", "region"]
clients.USER_AGENT[0] = "unified-deploy"


@lru_cache(maxsize=1)
def region() -> str:
    """AWS_REGION, AWS_DEFAULT_REGION or the profile's region, as boto3 reads them."""
    import boto3
    name = boto3.session.Session().region_name
    if not name:
        raise BadInput("no AWS region: set AWS_REGION (or a region in your AWS_PROFILE)")
    return str(name)


def client(service: str) -> Any:
    return clients.client(service, region())
