"""EC2: the instance's tags, when instance metadata tags are disabled (one call); and
the one tag the instance writes on itself, `unified:boot-error`, saying why its boot
failed, for the deploy tool to show (the instance role may write no other)."""

from __future__ import annotations

import re

from agent.aws import clients


def instance_tags(instance_id: str, region: str) -> dict[str, str]:
    paginator = clients.client("ec2", region).get_paginator("describe_tags")
    pages = clients.call(f"reading the tags of {instance_id} (ec2:DescribeTags; allow it, or enable "
                         "instance metadata tags)",
                         lambda: list(paginator.paginate(Filters=[{"Name": "resource-id", "Values": [instance_id]}])))
    return {tag["Key"]: tag.get("Value", "") for page in pages for tag in page.get("Tags", [])}


BOOT_ERROR_TAG = "unified:boot-error"
_TAG_VALUE = re.compile(r"[^\w .:/=+@-]")   # what EC2 tag values may hold, safely everywhere


def say_why_boot_failed(instance_id: str, region: str, reason: str) -> None:
    value = _TAG_VALUE.sub(" ", reason.splitlines()[0] if reason else "failed")[:256]
    clients.call(f"tagging {instance_id} with why its boot failed", clients.client("ec2", region).create_tags,
                 Resources=[instance_id], Tags=[{"Key": BOOT_ERROR_TAG, "Value": value}])
