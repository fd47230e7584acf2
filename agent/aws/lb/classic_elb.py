"""A classic ELB: the instance registers as itself (the listener's port is the ELB's)."""

from __future__ import annotations

from typing import Any

from agent.aws import clients
from agent.aws.lb.kinds import HEALTH_MARGIN
from agent.local.state import RegistrationRecord


class LoadBalancer:
    def __init__(self, record: RegistrationRecord):
        self.record = record
        self.client: Any = clients.client("elb", record.region)

    @property
    def description(self) -> str:
        return f"classic ELB {self.record.name}"

    def _instances(self) -> list[dict[str, str]]:
        return [{"InstanceId": self.record.instance_id}]

    def register(self) -> None:
        clients.call(f"registering with {self.description}", self.client.register_instances_with_load_balancer,
                     LoadBalancerName=self.record.name, Instances=self._instances())

    def deregister(self) -> None:
        clients.call(f"deregistering from {self.description}", self.client.deregister_instances_from_load_balancer,
                     LoadBalancerName=self.record.name, Instances=self._instances())

    def state(self) -> str:
        found = clients.call(f"reading health in {self.description}", self.client.describe_instance_health,
                             LoadBalancerName=self.record.name, Instances=self._instances())
        states = found.get("InstanceStates", [])
        return map_state(states[0]["State"], states[0].get("Description", "")) if states else "unused"

    def drain_seconds(self) -> float:
        found = clients.call(f"reading connection draining of {self.description}",
                             self.client.describe_load_balancer_attributes, LoadBalancerName=self.record.name)
        draining = found.get("LoadBalancerAttributes", {}).get("ConnectionDraining", {})
        return float(draining.get("Timeout", 0)) if draining.get("Enabled") else 0.0

    def health_wait_seconds(self) -> float:
        found = clients.call(f"reading the health check of {self.description}", self.client.describe_load_balancers,
                             LoadBalancerNames=[self.record.name])
        check = found["LoadBalancerDescriptions"][0].get("HealthCheck", {})
        interval, threshold = float(check.get("Interval", 30)), float(check.get("HealthyThreshold", 10))
        return (threshold + 1) * interval + HEALTH_MARGIN


def map_state(state: str, description: str) -> str:
    """Classic ELB says OutOfService both for "failing health checks" and for "not
    registered (any more)"; only its description tells them apart. Unknown: settling."""
    if state == "InService":
        return "healthy"
    if state == "OutOfService":
        return "unused" if "not currently registered" in description else "unhealthy"
    return "initial"
