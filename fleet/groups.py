"""Auto Scaling groups and launch template versions: what a deploy makes.

A deploy never edits what serves: it adds a launch template version (the fixed
template's default version, whole, with the new image: never a SourceVersion merge,
whose surprises are documented) and a new group from it, with the hooks the agent
relies on and the tags of `fleet.names.group_tags`. Old groups are kept, at zero, for cold rollbacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agent.errors import BadInput
from fleet import aws, names

LAUNCH_HOOK = {"LifecycleHookName": "unified-launch", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
               "HeartbeatTimeout": 900, "DefaultResult": "ABANDON"}
TERMINATE_HOOK = {"LifecycleHookName": "unified-terminate",
                  "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                  "HeartbeatTimeout": 900, "DefaultResult": "CONTINUE"}
SCALE_DOWN_ACTION = "unified-standby-ends"


@dataclass(frozen=True)
class Instance:
    instance_id: str
    lifecycle_state: str      # Pending, Pending:Wait, InService, Terminating:Wait, ...
    health: str               # Healthy / Unhealthy


@dataclass(frozen=True)
class Group:
    name: str
    env: str
    service: str
    deploy_id: str
    min: int
    max: int
    desired: int
    target_group: str | None
    template_id: str | None
    template_version: str | None
    instances: tuple[Instance, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def in_service(self) -> list[Instance]:
        return [i for i in self.instances if i.lifecycle_state == "InService"]

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> Group | None:
        tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
        if not {names.MODE_TAG, names.SERVICE_TAG, names.DEPLOY_TAG} <= set(tags):
            return None  # not a group of ours
        template = described.get("LaunchTemplate") or {}
        return cls(
            name=described["AutoScalingGroupName"], env=tags[names.MODE_TAG], service=tags[names.SERVICE_TAG],
            deploy_id=tags[names.DEPLOY_TAG], min=described["MinSize"], max=described["MaxSize"],
            desired=described["DesiredCapacity"], target_group=tags.get(names.TARGET_GROUP_TAG),
            template_id=template.get("LaunchTemplateId"), template_version=template.get("Version"),
            instances=tuple(Instance(i["InstanceId"], i["LifecycleState"], i.get("HealthStatus", ""))
                            for i in described.get("Instances", [])),
            tags=tags)


def groups(env: str) -> list[Group]:
    """Every group the tool made in `env` (found by their tags), oldest deploy first."""
    client = aws.client("autoscaling")
    paginator = client.get_paginator("describe_auto_scaling_groups")
    pages = aws.call("listing the Auto Scaling groups", lambda: list(paginator.paginate()))
    found = [Group.from_description(g) for page in pages for g in page.get("AutoScalingGroups", [])]
    return sorted((g for g in found if g is not None and g.env == env), key=lambda g: g.deploy_id)


def group(name: str) -> Group | None:
    client = aws.client("autoscaling")
    found = aws.call(f"reading the group {name}", client.describe_auto_scaling_groups,
                     AutoScalingGroupNames=[name]).get("AutoScalingGroups", [])
    return Group.from_description(found[0]) if found else None


@dataclass(frozen=True)
class Template:
    template_id: str
    name: str
    default_version: int
    data: dict[str, Any]


def template(name: str, env: str) -> Template:
    """The fixed launch template and its default version's whole data. It must carry
    the tag `unified:mode` = `env`: the deployer's policy adds versions only to the
    templates of its environment (fleet/policy.py)."""
    ec2 = aws.client("ec2")
    described = aws.call(f"reading the launch template {name}", ec2.describe_launch_templates,
                         LaunchTemplateNames=[name])["LaunchTemplates"]
    tags = {t["Key"]: t["Value"] for t in described[0].get("Tags", [])} if described else {}
    if tags.get(names.MODE_TAG) != env:
        raise BadInput(f"launch template {name} is not tagged {names.MODE_TAG}={env}: tag it (the deployer's "
                       "policy changes only its environment's template)")
    found = aws.call(f"reading the launch template {name}", ec2.describe_launch_template_versions,
                     LaunchTemplateName=name, Versions=["$Default"])["LaunchTemplateVersions"]
    if not found:
        raise BadInput(f"launch template {name} has no default version")
    version = found[0]
    return Template(version["LaunchTemplateId"], name, int(version["VersionNumber"]), version["LaunchTemplateData"])


def add_template_version(base: Template, image: str, instance_profile: str | None, deploy_id: str,
                         service: str) -> int:
    """A new version: the default version's data, whole, with `image` (and the
    service's own instance profile)."""
    data = {**base.data, "ImageId": image}
    if instance_profile:
        data["IamInstanceProfile"] = {"Name": instance_profile}
    ec2 = aws.client("ec2")
    made = aws.call(f"adding a version to the launch template {base.name}", ec2.create_launch_template_version,
                    LaunchTemplateId=base.template_id, LaunchTemplateData=data,
                    VersionDescription=f"unified {service} {deploy_id}")
    return int(made["LaunchTemplateVersion"]["VersionNumber"])


def create(name: str, template_id: str, version: int, sizes: tuple[int, int, int], subnets: tuple[str, ...],
           tags: dict[str, str], instance_types: tuple[str, ...] = (), on_demand_base: int = 1) -> None:
    """The new group, with its hooks and tags. With `instance_types`: spot first, the
    first `on_demand_base` instances on-demand, the rest spot across the types
    (price-capacity-optimized), and capacity rebalancing so a spot instance at risk is
    replaced before it goes."""
    low, high, desired = sizes
    launch = {"LaunchTemplateId": template_id, "Version": str(version)}
    kwargs: dict[str, Any] = {
        "AutoScalingGroupName": name, "MinSize": low, "MaxSize": high, "DesiredCapacity": desired,
        "VPCZoneIdentifier": ",".join(subnets),
        "Tags": [{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": name,
                  "ResourceType": "auto-scaling-group"} for k, v in tags.items()],
        "LifecycleHookSpecificationList": [LAUNCH_HOOK, TERMINATE_HOOK],
    }
    if instance_types:
        kwargs["MixedInstancesPolicy"] = {
            "LaunchTemplate": {"LaunchTemplateSpecification": launch,
                               "Overrides": [{"InstanceType": t} for t in instance_types]},
            "InstancesDistribution": {"OnDemandBaseCapacity": on_demand_base,
                                      "OnDemandPercentageAboveBaseCapacity": 0,
                                      "SpotAllocationStrategy": "price-capacity-optimized"}}
        kwargs["CapacityRebalance"] = True
    else:
        kwargs["LaunchTemplate"] = launch
    aws.call(f"creating the group {name}", aws.client("autoscaling").create_auto_scaling_group, **kwargs)


def resize(name: str, desired: int, low: int | None = None, high: int | None = None) -> None:
    kwargs: dict[str, Any] = {"AutoScalingGroupName": name, "DesiredCapacity": desired,
                              "MinSize": desired if low is None else low}
    if high is not None:
        kwargs["MaxSize"] = high
    aws.call(f"resizing the group {name} to {desired}", aws.client("autoscaling").update_auto_scaling_group, **kwargs)


def tag(name: str, tags: dict[str, str]) -> None:
    """Set group tags (passed on to the instances it launches from now on)."""
    aws.call(f"tagging the group {name}", aws.client("autoscaling").create_or_update_tags,
             Tags=[{"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": k, "Value": v,
                    "PropagateAtLaunch": True} for k, v in tags.items()])


def remove_tag(name: str, key: str) -> None:
    aws.call(f"removing the tag {key} from {name}", aws.client("autoscaling").delete_tags,
             Tags=[{"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": key}])


def delete(name: str) -> None:
    """Delete a group that is already empty (scaled to zero and its instances gone: a
    force delete would skip their terminating hooks, so no agent would drain)."""
    aws.call(f"deleting the group {name}", aws.client("autoscaling").delete_auto_scaling_group,
             AutoScalingGroupName=name)


def delete_template_version(template_id: str, version: str | None) -> None:
    if version and version.isdigit():
        aws.call("deleting a launch template version", aws.client("ec2").delete_launch_template_versions,
                 LaunchTemplateId=template_id, Versions=[version])


def schedule_scale_down(name: str, minutes: int) -> None:
    """AWS scales the group to zero when its standby ends, whether or not the tool runs."""
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + minutes * 60))
    aws.call(f"scheduling the end of {name}'s standby", aws.client("autoscaling").put_scheduled_update_group_action,
             AutoScalingGroupName=name, ScheduledActionName=SCALE_DOWN_ACTION, StartTime=start,
             MinSize=0, DesiredCapacity=0)


def cancel_scale_down(name: str) -> None:
    client = aws.client("autoscaling")
    found = aws.call(f"reading {name}'s scheduled actions", client.describe_scheduled_actions,
                     AutoScalingGroupName=name).get("ScheduledUpdateGroupActions", [])
    if any(a.get("ScheduledActionName") == SCALE_DOWN_ACTION for a in found):
        aws.call(f"cancelling the end of {name}'s standby", client.delete_scheduled_action,
                 AutoScalingGroupName=name, ScheduledActionName=SCALE_DOWN_ACTION)


def standby_ends(name: str) -> float | None:
    """When a standby group is scheduled to scale to zero (epoch), or None."""
    client = aws.client("autoscaling")
    found = aws.call(f"reading {name}'s scheduled actions", client.describe_scheduled_actions,
                     AutoScalingGroupName=name).get("ScheduledUpdateGroupActions", [])
    for action in found:
        if action.get("ScheduledActionName") == SCALE_DOWN_ACTION and action.get("StartTime"):
            start = action["StartTime"]
            return float(start.timestamp()) if hasattr(start, "timestamp") else None
    return None
