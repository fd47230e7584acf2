"""Auto Scaling lifecycle hooks: complete them, and keep them alive while we work.

A launching instance stays in Pending:Wait until the agent completes the hook with
CONTINUE (it serves) or ABANDON (the group replaces it). A slow start or a long drain
sends heartbeats so the hook does not time out under us. Completing a hook that is no
longer pending (a reboot of an instance already in service) is not an error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType

from agent.aws import clients

log = logging.getLogger("agent.lifecycle")
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
GROUP_TAG = "aws:autoscaling:groupName"


@dataclass
class Hook:
    group: str
    name: str
    instance_id: str
    region: str
    heartbeat_timeout: float = 3600.0

    def complete(self, result: str) -> bool:
        """CONTINUE or ABANDON; False when there was no pending action to complete."""
        client = clients.client("autoscaling", self.region)
        try:
            clients.call(f"completing lifecycle hook {self.name} with {result}", client.complete_lifecycle_action,
                         AutoScalingGroupName=self.group, LifecycleHookName=self.name,
                         InstanceId=self.instance_id, LifecycleActionResult=result)
        except clients.AwsError as exc:
            if exc.code == "ValidationError" and "No active Lifecycle Action" in exc.detail:
                log.info("lifecycle hook %s has no pending action for %s", self.name, self.instance_id)
                return False
            raise
        return True

    def heartbeat(self) -> None:
        client = clients.client("autoscaling", self.region)
        clients.call(f"recording a heartbeat for lifecycle hook {self.name}", client.record_lifecycle_action_heartbeat,
                     AutoScalingGroupName=self.group, LifecycleHookName=self.name, InstanceId=self.instance_id)

    def heartbeats(self, every: float | None = None) -> Heartbeats:
        """A context manager sending heartbeats every `every` seconds (default: a third
        of the hook's heartbeat timeout) until it exits."""
        return Heartbeats(self, every if every is not None else max(1.0, self.heartbeat_timeout / 3))


class Heartbeats:
    def __init__(self, hook: Hook, every: float):
        self.hook, self.every = hook, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
        self.sent = 0

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.hook.heartbeat()
                self.sent += 1
            except clients.AwsError as exc:  # a missed heartbeat must not kill the boot
                log.warning("%s", exc)

    def __enter__(self) -> Heartbeats:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


@dataclass(frozen=True)
class GroupSetup:
    """What of an Auto Scaling group's setup the agent depends on (README, "Auto Scaling
    setup"), read on the first boot of an instance."""

    group: str
    launch_hook: Hook | None
    terminating_hook: bool
    target_groups: tuple[str, ...]     # names of the target groups attached to the group
    classic_elbs: tuple[str, ...]
    warm_pool: bool

    def warnings(self, registrations: list[tuple[str, str]]) -> list[str]:
        """What is wrong for an instance that registers itself with `registrations`
        ((kind, name) pairs)."""
        found = []
        if not self.terminating_hook:
            found.append(f"group {self.group} has no terminating lifecycle hook: a scale-in terminates this "
                         "instance at once, without draining it; add one (README, Auto Scaling setup)")
        attached = {("target_group", n) for n in self.target_groups} | {("classic_elb", n) for n in self.classic_elbs}
        for kind, name in registrations:
            if (kind, name) in attached:
                found.append(f"group {self.group} has {kind.replace('_', ' ')} {name} attached: Auto Scaling "
                             "registers the instance too, on the group's port and before it is ready; detach it "
                             "(the agent registers the instance itself)")
        return found

    def refusal(self) -> str | None:
        """Why the agent cannot run in this group at all, or None."""
        if self.warm_pool:
            return (f"group {self.group} has a warm pool: its instances run their launch hook when they enter "
                    "the pool and again when they leave it, and a warmed instance must not join the load "
                    "balancer; the agent does not handle that: remove the warm pool (README, Auto Scaling setup)")
        return None


def read_group(group: str, instance_id: str, region: str) -> GroupSetup:
    """The group's hooks (the launching one to complete) and the rest of its setup."""
    client = clients.client("autoscaling", region)
    hooks = clients.call(f"reading the lifecycle hooks of {group}", client.describe_lifecycle_hooks,
                         AutoScalingGroupName=group).get("LifecycleHooks", [])
    found = clients.call(f"reading the Auto Scaling group {group}", client.describe_auto_scaling_groups,
                         AutoScalingGroupNames=[group]).get("AutoScalingGroups", [])
    described = found[0] if found else {}
    launch = next((h for h in hooks if h.get("LifecycleTransition") == LAUNCHING), None)
    return GroupSetup(
        group=group,
        launch_hook=Hook(group, launch["LifecycleHookName"], instance_id, region,
                         float(launch.get("HeartbeatTimeout", 3600))) if launch else None,
        terminating_hook=any(h.get("LifecycleTransition") == TERMINATING for h in hooks),
        target_groups=tuple(arn.split(":")[-1].split("/")[1] for arn in described.get("TargetGroupARNs", [])),
        classic_elbs=tuple(described.get("LoadBalancerNames", [])),
        warm_pool=bool(described.get("WarmPoolConfiguration")),
    )


def find_hook(group: str, instance_id: str, region: str, transition: str) -> Hook | None:
    """The group's hook for `transition` (launching or terminating), if it has one."""
    client = clients.client("autoscaling", region)
    found = clients.call(f"reading the lifecycle hooks of {group}", client.describe_lifecycle_hooks,
                         AutoScalingGroupName=group)
    for hook in found.get("LifecycleHooks", []):
        if hook.get("LifecycleTransition") == transition:
            return Hook(group, hook["LifecycleHookName"], instance_id, region,
                        float(hook.get("HeartbeatTimeout", 3600)))
    return None
