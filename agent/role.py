"""Who this box is: mode and service, from flags or EC2 tags, checked strictly.

Tag values are untrusted input (anyone who can tag an instance can write them): a value
is accepted only if it is exactly a known mode, exactly a service named in
services.yaml, and (for a blue/green pair) exactly one of the pair's target groups,
before anything is rendered or started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import BadInput

if TYPE_CHECKING:  # the catalog pulls in jsonschema; `agent status` reads roles without it
    from agent.config.catalog import Catalog

MODES = ("review", "staging", "production")
MODE_TAG = "unified:mode"
SERVICE_TAG = "unified:service"
TARGET_GROUP_TAG = "unified:target-group"   # which group of a blue/green pair to join
DEPLOY_TAG = "unified:deploy"               # the deploy that launched the instance
RELEASE_TAG = "unified:release"             # = its deploy: this instance runs the release, once per deploy
_DEPLOY_ID = re.compile(r"^\d{8}t\d{6}-[0-9a-f]{4}\Z")


@dataclass(frozen=True)
class Role:
    """Who this box is: a mode, and outside review the one service it runs (and, for a
    blue/green pair, the target group it joins)."""

    mode: str
    service: str | None = None
    target_group: str | None = None
    run_release: bool = False   # the first instance of a deploy runs the service's release

    def describe(self) -> str:
        return self.mode + (f" ({self.service})" if self.service else "")

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "service": self.service, "target_group": self.target_group,
                "run_release": self.run_release}

    @classmethod
    def from_json(cls, data: Any) -> Role | None:
        if not isinstance(data, dict) or data.get("mode") not in MODES:
            return None
        return cls(data["mode"], _text_or_none(data.get("service")), _text_or_none(data.get("target_group")),
                   data.get("run_release") is True)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def show(value: str, limit: int = 60) -> str:
    """An untrusted value made safe to print on one line."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


def resolve(catalog: Catalog, mode: str | None, service: str | None, source: str = "--mode/--service",
            target_group: str | None = None, release: str | None = None, deploy: str | None = None) -> Role:
    """The role, or BadInput naming `source` and what was expected. `target_group` is
    the `unified:target-group` tag, needed only where the service's load balancer in
    this mode is a blue/green pair; `release` and `deploy` are the `unified:release`
    and `unified:deploy` tags: equal (a deploy id) on the one instance of a deploy that
    runs the service's release."""
    if mode is None:
        raise BadInput(f"{source}: no mode given; expected one of: {', '.join(MODES)}")
    if mode not in MODES:
        raise BadInput(f"{source}: mode {show(mode)} is not one of: {', '.join(MODES)}")
    if mode == "review":
        if service:
            raise BadInput(f"{source}: review mode runs the whole stack; do not name a service (got {show(service)})")
        return Role("review")
    if not service:
        raise BadInput(f"{source}: {mode} mode needs a service; expected one of: {', '.join(catalog.services)}")
    if service not in catalog.services:
        raise BadInput(f"{source}: service {show(service)} is not in {catalog.path}; "
                       f"expected one of: {', '.join(catalog.services)}")
    lb = catalog.services[service].load_balancer.get(mode)
    chosen = None
    if lb is not None and lb.kind == "target_groups":
        try:
            _, chosen = lb.pick(target_group)
        except BadInput as exc:
            raise BadInput(f"tag {TARGET_GROUP_TAG}: {exc}") from None
    run_release = False
    if release is not None:
        if not _DEPLOY_ID.match(release) or release != deploy:
            raise BadInput(f"tag {RELEASE_TAG}: {show(release)} is not this instance's deploy "
                           f"({show(deploy) if deploy is not None else f'no {DEPLOY_TAG} tag'})")
        run_release = catalog.services[service].release is not None
    return Role(mode, service, chosen, run_release)
