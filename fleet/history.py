"""The release history: every deploy and rollback of a service, like `heroku releases`.

One item per (service, deploy id) in the environment's table, written when the deploy
starts (`running`) and again when it ends: `succeeded`, `failed` (with why), or
`interrupted` (found by a later deploy, whose lock the dead one's lease had freed).
Which version is live is read from AWS, not from here (`fleet.inventory`): the records
say which groups succeeded, and why a deploy failed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fleet.table import Table

RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "running", "succeeded", "failed", "interrupted"


@dataclass
class Release:
    service: str
    deploy_id: str
    kind: str                               # deploy or rollback
    image: str
    who: str
    started: float
    group: str
    commits: dict[str, str] = field(default_factory=dict)  # repo -> sha, from the image's tags
    template_version: int | None = None
    target_group: str | None = None         # the group of a pair the instances joined
    result: str = RUNNING
    finished: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    detail: str = ""                        # why it failed; what a rollback went back to
    previous: str | None = None             # the deploy it replaced

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Release:
        """A record as written, or as a hand (or an older tool) left it: what is missing
        is filled from its key or left unknown, so one odd record never blocks a command."""
        service, _, deploy_id = str(item.get("sk", "?#?")).partition("#")
        base: dict[str, Any] = {"service": service, "deploy_id": deploy_id or "?", "kind": "deploy", "image": "?",
                                "who": "?", "started": 0.0, "group": "?"}
        known = {k: item[k] for k in cls.__dataclass_fields__ if k in item}
        return cls(**{**base, **known})

    def to_item(self, env: str) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return {"pk": _pk(env), "sk": f"{self.service}#{self.deploy_id}", **data}


def _pk(env: str) -> str:
    return f"release#{env}"


def save(table: Table, env: str, release: Release) -> None:
    table.put(release.to_item(env), what="recording the release in")


def finish(table: Table, env: str, release: Release, result: str, detail: str = "") -> None:
    release.result, release.finished = result, time.time()
    if detail:
        release.detail = detail
    save(table, env, release)


def releases(table: Table, env: str, service: str | None = None) -> list[Release]:
    """Newest first."""
    items = table.query(_pk(env), f"{service}#" if service else "")
    return sorted((Release.from_item(i) for i in items), key=lambda r: r.deploy_id, reverse=True)
