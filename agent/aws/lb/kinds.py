"""The kinds of load balancer an instance joins, one module each, behind one protocol.

A registration record (`agent.local.state.RegistrationRecord`) names its kind; the
class is `agent.aws.lb.<kind>.LoadBalancer`. Boot, restart, stop and watch go through
`LoadBalancer` and the waits below, so a new kind is its module, its key in the
services.yaml schema, its statement in the instance role (`agent.aws.policy`), its
docs, and, for deploys, its handling in `fleet.preflight`.

States are ALB's words; each kind maps its own onto them:
healthy, initial, unhealthy, draining, unused (not registered), unchecked (health
checks are off: nothing to wait for), unavailable (the load balancer cannot tell now).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Protocol

from agent.deadline import EVERY_SECOND, Deadline, poll
from agent.errors import AgentError
from agent.local.state import RegistrationRecord

log = logging.getLogger("agent.lb")
HEALTH_MARGIN = 30.0   # added to a load balancer's own time to first healthy (see health_wait_seconds)


class LoadBalancer(Protocol):
    record: RegistrationRecord

    @property
    def description(self) -> str:
        """"target group prod-web", for messages."""

    def register(self) -> None: ...

    def deregister(self) -> None: ...

    def state(self) -> str:
        """This instance's state, in the words of the module docstring."""

    def drain_seconds(self) -> float:
        """How long the load balancer lets requests in flight finish after deregistering."""

    def health_wait_seconds(self) -> float:
        """How long a healthy target can take to be seen healthy, from the load
        balancer's own health check settings, plus HEALTH_MARGIN."""


def for_record(record: RegistrationRecord) -> LoadBalancer:
    module = importlib.import_module(f"agent.aws.lb.{record.kind}")
    balancer: LoadBalancer = module.LoadBalancer(record)
    return balancer


@dataclass(frozen=True)
class Drained:
    seconds: float     # waited
    complete: bool     # False: the limit cut the wait short


def wait_healthy(lb: LoadBalancer, timeout: float | None = None) -> float:
    """Wait until the target is healthy (or health checks are off); seconds waited.
    Raises AgentError at the deadline, with the last state."""
    limit = lb.health_wait_seconds() if timeout is None else timeout
    deadline = Deadline(limit)
    final = poll(lb.state, lambda s: s in ("healthy", "unchecked"), deadline, EVERY_SECOND)
    if final not in ("healthy", "unchecked"):
        raise AgentError(f"{lb.record.instance_id}:{lb.record.port} is not healthy in {lb.description} "
                         f"after {limit:.0f}s (state: {final}; the wait comes from its health check settings)")
    return deadline.elapsed()


def wait_drained(lb: LoadBalancer, limit: float) -> Drained:
    """Wait until the target has left (`unused`), at most `limit` seconds. `unavailable`
    is not gone: for instance targets it means an ELB internal error, which passes."""
    deadline = Deadline(limit)
    final = poll(lb.state, lambda s: s == "unused", deadline, EVERY_SECOND)
    return Drained(deadline.elapsed(), final == "unused")
