"""Load balancers: register this instance, wait until healthy; deregister, wait drained.

ALB/NLB target groups (by name, resolved to their ARN once and remembered in the state)
and classic ELBs. Registration is idempotent on AWS's side, so a reboot registers again
harmlessly. Every wait is bounded: health by `health_timeout`, draining by the target
group's own deregistration delay (or classic ELB's connection-draining timeout), capped
by the caller (a spot notice leaves two minutes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from agent import aws
from agent.errors import AgentError

log = logging.getLogger("agent.elb")
POLL_SECONDS = 1.0
DEFAULT_DRAIN_SECONDS = 300.0  # ELB's default deregistration delay


@dataclass
class Target:
    """One registration: where this instance sits behind a load balancer."""

    instance_id: str
    port: int
    region: str
    target_group: str | None = None
    target_group_arn: str | None = None
    classic_elb: str | None = None

    @property
    def name(self) -> str:
        return f"target group {self.target_group}" if self.target_group else f"classic ELB {self.classic_elb}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:
        if not aws.is_aws_error(exc):
            raise
        raise AgentError(f"{what} failed: {aws.error_code(exc) or exc}") from None


class LoadBalancer:
    def __init__(self, target: Target, poll: float = POLL_SECONDS):
        self.target = target
        self.poll = poll
        # exactly one of the two is set: ALB/NLB target group, or classic ELB
        self.v2: Any = aws.client("elbv2", target.region) if target.target_group else None
        self.classic: Any = aws.client("elb", target.region) if target.classic_elb else None

    def resolve(self) -> None:
        """The target group's ARN from its name (one call, remembered in the state)."""
        if self.v2 is not None and not self.target.target_group_arn:
            found = _call(f"finding target group {self.target.target_group}", self.v2.describe_target_groups,
                          Names=[self.target.target_group])
            self.target.target_group_arn = found["TargetGroups"][0]["TargetGroupArn"]

    def register(self) -> None:
        self.resolve()
        if self.v2 is not None:
            _call(f"registering with {self.target.name}", self.v2.register_targets,
                  TargetGroupArn=self.target.target_group_arn, Targets=[self._v2_target()])
        else:
            _call(f"registering with {self.target.name}", self.classic.register_instances_with_load_balancer,
                  LoadBalancerName=self.target.classic_elb, Instances=[{"InstanceId": self.target.instance_id}])

    def deregister(self) -> None:
        self.resolve()
        if self.v2 is not None:
            _call(f"deregistering from {self.target.name}", self.v2.deregister_targets,
                  TargetGroupArn=self.target.target_group_arn, Targets=[self._v2_target()])
        else:
            _call(f"deregistering from {self.target.name}", self.classic.deregister_instances_from_load_balancer,
                  LoadBalancerName=self.target.classic_elb, Instances=[{"InstanceId": self.target.instance_id}])

    def state(self) -> str:
        """healthy/initial/unhealthy/draining/unused/... (ALB words; classic mapped onto them)."""
        if self.v2 is not None:
            found = _call(f"reading health in {self.target.name}", self.v2.describe_target_health,
                          TargetGroupArn=self.target.target_group_arn, Targets=[self._v2_target()])
            descriptions = found.get("TargetHealthDescriptions", [])
            return descriptions[0]["TargetHealth"]["State"] if descriptions else "unused"
        found = _call(f"reading health in {self.target.name}", self.classic.describe_instance_health,
                      LoadBalancerName=self.target.classic_elb, Instances=[{"InstanceId": self.target.instance_id}])
        states = found.get("InstanceStates", [])
        if not states:
            return "unused"
        # Classic ELB says OutOfService both for "failing health checks" and for "not
        # registered (any more)"; only its description tells them apart.
        current, description = states[0]["State"], states[0].get("Description", "")
        if current == "InService":
            return "healthy"
        if current == "OutOfService" and "not currently registered" in description:
            return "unused"
        return "unhealthy" if current == "OutOfService" else "initial"  # Unknown: still settling

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            current = self.state()
            if current in ("healthy", "unavailable"):  # unavailable: health checks are off
                return
            if time.monotonic() + self.poll > deadline:
                raise AgentError(f"{self.target.instance_id}:{self.target.port} is not healthy in "
                                 f"{self.target.name} after {timeout:.0f}s (state: {current})")
            time.sleep(self.poll)

    def drain_seconds(self) -> float:
        """How long the load balancer lets requests in flight finish after deregistering."""
        if self.v2 is not None:
            self.resolve()
            found = _call("reading the deregistration delay", self.v2.describe_target_group_attributes,
                          TargetGroupArn=self.target.target_group_arn)
            for attribute in found.get("Attributes", []):
                if attribute["Key"] == "deregistration_delay.timeout_seconds":
                    return float(attribute["Value"])
            return DEFAULT_DRAIN_SECONDS
        found = _call("reading connection draining", self.classic.describe_load_balancer_attributes,
                      LoadBalancerName=self.target.classic_elb)
        draining = found.get("LoadBalancerAttributes", {}).get("ConnectionDraining", {})
        return float(draining.get("Timeout", 0)) if draining.get("Enabled") else 0.0

    def wait_drained(self, limit: float) -> float:
        """Wait until the target has left (not 'draining'), at most `limit` seconds.
        Returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.state() in ("unused", "unavailable"):
                break
            time.sleep(min(self.poll, max(0.0, limit - (time.monotonic() - started))))
        return time.monotonic() - started

    def _v2_target(self) -> dict[str, Any]:
        return {"Id": self.target.instance_id, "Port": self.target.port}
