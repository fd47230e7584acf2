"""EC2: the instance's tags, when instance metadata tags are disabled (one call)."""

from __future__ import annotations

from agent import aws
from agent.errors import AgentError


def instance_tags(instance_id: str, region: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    try:
        pages = aws.client("ec2", region).get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-id", "Values": [instance_id]}])
        for page in pages:
            for tag in page.get("Tags", []):
                tags[tag["Key"]] = tag.get("Value", "")
    except Exception as exc:
        if not aws.is_aws_error(exc):
            raise
        raise AgentError(f"reading the tags of {instance_id} (ec2:DescribeTags) failed: "
                         f"{aws.error_code(exc) or exc}; allow ec2:DescribeTags or enable "
                         "instance metadata tags") from None
    return tags
