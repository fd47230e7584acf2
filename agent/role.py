"""Who this box is: mode and service, from flags or EC2 tags, checked strictly.

Tag values are untrusted input (anyone who can tag an instance can write them): a value
is accepted only if it is exactly a known mode or exactly a service named in
services.yaml, before anything is rendered or started.
"""

from __future__ import annotations

from agent.catalog import Catalog
from agent.errors import BadInput
from agent.plan import MODES, Role

MODE_TAG = "unified:mode"
SERVICE_TAG = "unified:service"


def show(value: str, limit: int = 60) -> str:
    """An untrusted value made safe to print on one line."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


def resolve(catalog: Catalog, mode: str | None, service: str | None, source: str = "--mode/--service") -> Role:
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
    return Role(mode, service)
