"""EC2: the instance's tags, when instance metadata tags are disabled (one call)."""

from __future__ import annotations

from agent.aws import clients


def instance_tags(instance_id: str, region: str) -> dict[str, str]:
    paginator = clients.client("ec2", region).get_paginator("describe_tags")
    pages = clients.call(f"reading the tags of {instance_id} (ec2:DescribeTags; allow it, or enable "
                         "instance metadata tags)",
                         lambda: list(paginator.paginate(Filters=[{"Name": "resource-id", "Values": [instance_id]}])))
    return {tag["Key"]: tag.get("Value", "") for page in pages for tag in page.get("Tags", [])}
