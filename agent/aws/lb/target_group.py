"""An ALB or NLB target group: the instance registers on its service's port.

The group is named in services.yaml; its ARN is looked up once (with its health check
settings, in the same call) and remembered in the registration record.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agent.aws import clients
from agent.aws.lb.kinds import HEALTH_MARGIN
from agent.local.state import RegistrationRecord

DEFAULT_DRAIN_SECONDS = 300.0   # ELB's default deregistration delay
# NLB target health lags its health checks: AWS documents that registration can take
# several minutes to show healthy. An NLB (TCP/TLS/UDP target group) gets this much more.
NLB_ALLOWANCE = 180.0


class LoadBalancer:
    def __init__(self, record: RegistrationRecord):
        self.record = record
        self.client: Any = clients.client("elbv2", record.region)

    @property
    def description(self) -> str:
        return f"target group {self.record.name}"

    def _arn(self) -> str:
        if not self.record.arn:
            self._describe()
        assert self.record.arn is not None
        return self.record.arn

    def _describe(self) -> dict[str, Any]:
        found = clients.call(f"finding {self.description}", self.client.describe_target_groups,
                             Names=[self.record.name])
        group: dict[str, Any] = found["TargetGroups"][0]
        self.record = replace(self.record, arn=group["TargetGroupArn"], health_wait=_health_wait(group))
        return group

    def _target(self) -> dict[str, Any]:
        return {"Id": self.record.instance_id, "Port": self.record.port}

    def register(self) -> None:
        clients.call(f"registering with {self.description}", self.client.register_targets,
                     TargetGroupArn=self._arn(), Targets=[self._target()])

    def deregister(self) -> None:
        clients.call(f"deregistering from {self.description}", self.client.deregister_targets,
                     TargetGroupArn=self._arn(), Targets=[self._target()])

    def state(self) -> str:
        found = clients.call(f"reading health in {self.description}", self.client.describe_target_health,
                             TargetGroupArn=self._arn(), Targets=[self._target()])
        descriptions = found.get("TargetHealthDescriptions", [])
        if not descriptions:
            return "unused"
        health = descriptions[0]["TargetHealth"]
        if health["State"] == "unavailable" and health.get("Reason") == "Target.HealthCheckDisabled":
            return "unchecked"
        return str(health["State"])

    def drain_seconds(self) -> float:
        found = clients.call("reading the deregistration delay", self.client.describe_target_group_attributes,
                             TargetGroupArn=self._arn())
        for attribute in found.get("Attributes", []):
            if attribute["Key"] == "deregistration_delay.timeout_seconds":
                return float(attribute["Value"])
        return DEFAULT_DRAIN_SECONDS

    def health_wait_seconds(self) -> float:
        if self.record.health_wait is None:
            self._describe()
        assert self.record.health_wait is not None
        return self.record.health_wait


def _health_wait(group: dict[str, Any]) -> float:
    """The first check comes within one interval of registering, then HealthyThreshold
    checks in a row must pass: (threshold + 1) x interval, plus a margin; NLBs more."""
    interval = float(group.get("HealthCheckIntervalSeconds", 30))
    threshold = float(group.get("HealthyThresholdCount", 5))
    wait = (threshold + 1) * interval + HEALTH_MARGIN
    if group.get("Protocol") in ("TCP", "TLS", "UDP", "TCP_UDP"):
        wait += NLB_ALLOWANCE
    return wait
