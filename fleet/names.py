"""Names and tags of what the tool makes: deploy ids, group names, the tags it sets.

Pure: no AWS. Group names carry the environment, the service and the deploy id, joined
by dots (which names of services and environments cannot hold), so the parts can be
read back; the tool still finds its groups by their tags, never by parsing names.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import socket
import time

MODE_TAG = "unified:mode"
SERVICE_TAG = "unified:service"
DEPLOY_TAG = "unified:deploy"
TARGET_GROUP_TAG = "unified:target-group"
RELEASE_TAG = "unified:release"          # on a group while its first instance runs the release
BOOT_ERROR_TAG = "unified:boot-error"    # an instance's own reason for failing its boot
CANDIDATE_HEADER = "X-Unified-Candidate"  # requests carrying it reach the candidate route

_DEPLOY_ID = re.compile(r"^\d{8}t\d{6}-[0-9a-f]{4}\Z")


def new_deploy_id(now: float | None = None) -> str:
    """Sortable by time and unique: `20261128t120102-3fa9` (UTC)."""
    stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


def is_deploy_id(value: str) -> bool:
    return bool(_DEPLOY_ID.match(value))


def candidate_value(env: str, service: str, deploy_id: str) -> str:
    """The candidate header's value of one deploy of one service in one environment (an
    ALB may be shared by environments and services: each removes only its own rules)."""
    return f"{env}.{service}.{deploy_id}"


def group_name(env: str, service: str, deploy_id: str) -> str:
    return f"{env}.{service}.{deploy_id}"


def group_tags(env: str, service: str, deploy_id: str, target_group: str | None) -> dict[str, str]:
    """The tags a new group carries and passes to its instances: mode, service, deploy
    id, and for a blue/green pair the group of the pair they join (a deploy with a
    release adds `unified:release` for its first instance)."""
    tags = {MODE_TAG: env, SERVICE_TAG: service, DEPLOY_TAG: deploy_id}
    if target_group is not None:
        tags[TARGET_GROUP_TAG] = target_group
    return tags


def operator() -> str:
    """Who runs the tool, as user@host (CI sets USER; a container may have no passwd entry)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"
