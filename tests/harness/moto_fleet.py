"""moto patches for the simulated fleet: Auto Scaling lifecycles, images, launch templates.

What moto 5.2 (5.2.0 to 5.2.5) does with each call the deploy tool and the fleet need,
checked against moto itself (``tests/integration/test_fleet_harness.py`` exercises every "patched" row):

============================================  =========  ===============================================
call                                          moto       here
============================================  =========  ===============================================
ec2 RegisterImage                             partial    patched: ``TagSpecifications`` (image) applied;
                                                         moto keeps only Name and Description
ec2 CreateImage (TagSpecifications)           yes
ec2 DescribeImages (ImageIds, Owners=self,    yes        (a registered image is ``available`` at once)
tag:K filters), CreateTags on an image
ec2 CreateLaunchTemplate (ImageId,            yes        data stored and returned as given
MetadataOptions, TagSpecifications)
ec2 CreateLaunchTemplateVersion               partial    patched: ``SourceVersion`` is honoured (the new
                                                         version inherits the source's data, top-level
                                                         keys of ``LaunchTemplateData`` replace them, as
                                                         on AWS); moto stored only the keys given
ec2 DescribeLaunchTemplateVersions            yes        ($Latest/$Default/numbers; DefaultVersion flag)
ec2 DeleteLaunchTemplateVersions              no         patched: added (a deleted version is marked and
                                                         no longer found; the default one is refused)
instance launched from a template version     partial    patched: tag ``aws:ec2launchtemplate:version`` and
                                                         the instance's ``LaunchTemplate.Version`` in
                                                         DescribeAutoScaling* are the version it was
                                                         launched from (moto: the default version).
                                                         Not patched: moto ignores the template's
                                                         ``MetadataOptions`` on the instance (the fleet
                                                         reads them from the template instead)
autoscaling CreateAutoScalingGroup            yes        LaunchTemplate {Id|Name, Version}; group Tags
                                                         with PropagateAtLaunch reach the instances
  ... LifecycleHookSpecificationList          no         patched: the hooks exist before the first
                                                         instance launches (so it waits on them)
autoscaling PutLifecycleHook /                yes        moto keeps hooks of a deleted group: patched,
DescribeLifecycleHooks                                   they go with the group
launching hook                                no         patched: a new instance is ``Pending:Wait`` until
                                                         CompleteLifecycleAction; CONTINUE -> InService,
                                                         ABANDON -> terminated and replaced at once
terminating hook (scale-in,                   no         patched: ``Terminating:Wait`` until CONTINUE or
TerminateInstanceInAutoScalingGroup)                     ABANDON, then terminated (EC2 ``terminated``,
                                                         gone from the group); no hook: at once
hook HeartbeatTimeout / heartbeat             no         patched: a wait ends with the hook's
                                                         DefaultResult after HeartbeatTimeout seconds
                                                         (moto accepts any value: tests use 2 s);
                                                         RecordLifecycleActionHeartbeat restarts it
CompleteLifecycleAction / heartbeat           no         moto_server.install_lifecycle_actions (ledger);
                                                         here they also move the instance; completing a
                                                         hook the instance is not waiting on (launch hook
                                                         while it is in Terminating:Wait) is refused
                                                         like AWS; an instance in no wait state keeps the
                                                         old lenient answer (recorded once)
UpdateAutoScalingGroup (resize, to 0,         yes        capacity counts Pending:Wait as launched (moto
new LaunchTemplate version)                              counted InService only and launched again)
DescribeAutoScalingInstances/Groups           yes        LifecycleState strings exactly as AWS:
                                                         ``Pending:Wait``, ``InService``,
                                                         ``Terminating:Wait`` (no ``Pending`` or
                                                         ``Terminating:Proceed`` in between: instant)
DeleteAutoScalingGroup                        partial    patched as AWS documents it: without
                                                         ForceDelete a group with instances is refused
                                                         (``ResourceInUse``); with ForceDelete its
                                                         instances are terminated at once, outstanding
                                                         lifecycle actions dropped, no terminating hook
                                                         run (moto: always deleted, at once)
EC2 TerminateInstances of a group instance    yes        the group replaces it (moto's own notify path,
                                                         patched to count Pending:Wait)
group TargetGroupARNs (attached TGs)          partial    not patched: moto registers every instance at
                                                         once whatever its state; the agent registers
                                                         itself, so the fleet tests attach none
elbv2 CreateRule (http-header + forward),     yes        Priority is a string in the answers; the
DeleteRule, DescribeRules                                default rule is ``Priority: "default"``
elbv2 ModifyListener weighted ForwardConfig   yes        weights returned as given by DescribeListeners
                                                         and DescribeRules (TargetGroupStickinessConfig
                                                         {Enabled: false} added)
elbv2 DescribeTargetHealth                    partial    draining: moto_server.install_draining; here a
                                                         test may force a target's state
                                                         (:func:`set_target_health`: unhealthy, initial)
                                                         to see the load balancer fail open
dynamodb PutItem/UpdateItem with              yes        ConditionalCheckFailedException, ReturnValues,
ConditionExpression, Query                               ReturnValuesOnConditionCheckFailure, Limit and
                                                         LastEvaluatedKey all behave
============================================  =========  ===============================================

**Version bound.** These patches reach into moto's model classes
(``FakeAutoScalingGroup.set_desired_capacity``/``replace_autoscaling_group_instances``,
``InstanceState``, ``AutoScalingResponse`` parameter parsing, ``LaunchTemplateVersion``,
``FakeTargetGroup.health_for``) and rely on responders that return ``ActionResult``
objects serialised later (EC2's launch templates and images only since 5.2; 5.1.0 has no
``ActionResult`` at all, which ``moto_server`` needs too): the project must pin
``moto[server]>=5.2,<6``. The fleet tests pass on 5.2.0 and 5.2.5.
:func:`install_fleet_patches` refuses another major version by name rather than
misbehave.

Everything is installed once per process (idempotent) from :class:`MotoServer`; it also
serves ``mock_aws`` users in the process. It only changes what AWS does differently:
groups whose hooks exist when an instance launches or leaves, deletion, image tags and
template versions. All the state added lives on moto's own objects, so
``MotoServer.reset()`` forgets it.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import moto
from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import (
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult
from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateVersion
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.ec2.utils import convert_tag_spec
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup, elbv2_backends

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
# Lifecycle states (AWS's strings) that count as capacity: launched and not leaving.
LIVE_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")
LEAVING_STATES = ("Terminating", "Terminating:Wait", "Terminating:Proceed")
GROUP_TAG = "aws:autoscaling:groupName"
_TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"

# One lock for every lifecycle change: moto's server is threaded and its models are not.
_LIFECYCLE_LOCK = threading.RLock()
_MARK = "_unified_fleet_patch"  # on our wrappers (idempotent install)
_WAIT = "_unified_fleet_wait"  # on moto's InstanceState: the lifecycle action it waits on
_LAUNCHED_FROM = "_unified_fleet_launch_template"  # on InstanceState: {Id, Name, Version}
_HEALTH = "_unified_fleet_health"  # on FakeTargetGroup: target id -> forced state


class _ResourceInUse(AutoscalingClientError):
    code = "ResourceInUse"


@dataclass
class LifecycleWait:
    """A lifecycle action an instance is waiting on (what AWS's notification carries)."""

    hook: str
    transition: str
    default_result: str
    heartbeat_timeout: float
    deadline: float  # time.monotonic()
    token: str


# --------------------------------------------------------------------------------------
# Waits and transitions
# --------------------------------------------------------------------------------------


def _hook_for(group: FakeAutoScalingGroup, transition: str) -> Any | None:
    """The group's hook for a transition (the first, as moto lists them), if any."""
    hooks = group.autoscaling_backend.describe_lifecycle_hooks(as_name=group.name)
    return next((h for h in hooks if h.lifecycle_transition == transition), None)


def wait_of(state: InstanceState) -> LifecycleWait | None:
    return getattr(state, _WAIT, None)


def _start_wait(state: InstanceState, hook: Any, lifecycle_state: str) -> None:
    timeout = float(hook.heartbeat_timeout or 3600)
    state.lifecycle_state = lifecycle_state
    setattr(
        state,
        _WAIT,
        LifecycleWait(
            hook=hook.name,
            transition=hook.lifecycle_transition,
            default_result=hook.default_result or "ABANDON",
            heartbeat_timeout=timeout,
            deadline=time.monotonic() + timeout,
            token=str(uuid.uuid4()),
        ),
    )


def _terminate(group: FakeAutoScalingGroup, state: InstanceState) -> None:
    """The instance leaves the group and EC2 terminates it; ELB forgets its targets, as
    EC2's own TerminateInstances makes moto do."""
    setattr(state, _WAIT, None)
    group.instance_states = [s for s in group.instance_states if s is not state]
    backend = group.autoscaling_backend
    instance_id = state.instance.id
    backend.ec2_backend.terminate_instances([instance_id])
    backend.elbv2_backend.notify_terminate_instances([instance_id])
    if group.name in backend.autoscaling_groups:
        backend.update_attached_elbs(group.name)


def _begin_termination(group: FakeAutoScalingGroup, state: InstanceState) -> None:
    """Scale-in of one instance: ``Terminating:Wait`` on a terminating hook, else gone."""
    hook = _hook_for(group, TERMINATING)
    if hook is None:
        _terminate(group, state)
    else:
        _start_wait(state, hook, "Terminating:Wait")


def _finish_wait(group: FakeAutoScalingGroup, state: InstanceState, result: str) -> None:
    """Apply a completed (or timed out) lifecycle action, as AWS does."""
    wait = wait_of(state)
    setattr(state, _WAIT, None)
    if wait is not None and wait.transition == LAUNCHING and result == "CONTINUE":
        state.lifecycle_state = "InService"
        group.autoscaling_backend.update_attached_elbs(group.name)
        return
    _terminate(group, state)
    if wait is not None and wait.transition == LAUNCHING:  # abandoned launch: replace it
        group.set_desired_capacity(group.desired_capacity)


def _expire_waits(backend: AutoScalingBackend) -> None:
    """End every wait whose heartbeat timeout has passed with the hook's DefaultResult.

    Lazy, like the draining records: run whenever the groups are read or changed, which
    the fleet's reconciler does every 0.2 s.
    """
    now = time.monotonic()
    for group in list(backend.autoscaling_groups.values()):
        for state in list(group.instance_states):
            wait = wait_of(state)
            if wait is not None and wait.deadline <= now:
                _finish_wait(group, state, wait.default_result)


def _find_state(
    group: FakeAutoScalingGroup | None, instance_id: str | None, token: str | None
) -> InstanceState | None:
    if group is None:
        return None
    for state in group.instance_states:
        wait = wait_of(state)
        if instance_id and state.instance.id == instance_id:
            return state
        if not instance_id and token and wait is not None and wait.token == token:
            return state
    return None


# --------------------------------------------------------------------------------------
# The patches (each a wrapper of moto's own method)
# --------------------------------------------------------------------------------------


def _patch(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Wrap ``owner.name`` once; a second install finds our mark and leaves it."""
    original = owner.__dict__[name]
    if getattr(original, _MARK, False):
        return
    wrapper = make(original)
    setattr(wrapper, _MARK, True)
    wrapper.__name__ = getattr(original, "__name__", name)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    setattr(owner, name, wrapper)


def _make_create_group(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_auto_scaling_group(self: AutoScalingResponse) -> Any:
        """Hooks of ``LifecycleHookSpecificationList`` exist before the first launch."""
        name = self._get_param("AutoScalingGroupName")
        specs = self._get_params().get("LifecycleHookSpecificationList") or []
        backend = self.autoscaling_backend
        with _LIFECYCLE_LOCK:
            if name in backend.autoscaling_groups or not specs:
                return original(self)  # moto refuses the duplicate name itself
            for spec in specs:
                backend.create_lifecycle_hook(
                    name=spec["LifecycleHookName"],
                    as_name=name,
                    transition=spec["LifecycleTransition"],
                    timeout=int(spec["HeartbeatTimeout"]) if spec.get("HeartbeatTimeout") else None,
                    result=spec.get("DefaultResult"),
                )
            try:
                return original(self)
            except Exception:
                for spec in specs:
                    backend.delete_lifecycle_hook(name, spec["LifecycleHookName"])
                raise

    return create_auto_scaling_group


def _make_set_desired_capacity(original: Callable[..., Any]) -> Callable[..., Any]:
    def set_desired_capacity(self: FakeAutoScalingGroup, new_capacity: int | None) -> None:
        """Capacity counts every launched instance not leaving; scale-in waits on hooks."""
        if self.mixed_instances_policy:
            return original(self, new_capacity)  # not used by the fleet: moto's own
        with _LIFECYCLE_LOCK:
            self.desired_capacity = self.min_size if new_capacity is None else new_capacity
            live = [s for s in self.instance_states if s.lifecycle_state in LIVE_STATES]
            delta = (self.desired_capacity or 0) - len(live)
            if delta > 0:
                self.replace_autoscaling_group_instances(delta, self.get_propagated_tags())
            elif delta < 0:
                # moto's choice (the oldest unprotected first); AWS balances zones first.
                victims = [s for s in live if not s.protected_from_scale_in][: -delta]
                for state in victims:
                    _begin_termination(self, state)
            backend = self.autoscaling_backend
            if self.name in backend.autoscaling_groups:
                backend.update_attached_elbs(self.name)
                backend.update_attached_target_groups(self.name)
        return None

    return set_desired_capacity


def _make_replace_instances(original: Callable[..., Any]) -> Callable[..., Any]:
    def replace_autoscaling_group_instances(
        self: FakeAutoScalingGroup, count_needed: int, propagated_tags: dict[str, str]
    ) -> None:
        """New instances remember their template version and wait on a launching hook."""
        with _LIFECYCLE_LOCK:
            before = set(map(id, self.instance_states))
            original(self, count_needed, propagated_tags)
            fresh = [s for s in self.instance_states if id(s) not in before]
            launched_from = _launched_from(self)
            hook = _hook_for(self, LAUNCHING)
            for state in fresh:
                if launched_from is not None:
                    setattr(state, _LAUNCHED_FROM, launched_from)
                    self.ec2_backend.create_tags(
                        [state.instance.id], {_TEMPLATE_VERSION_TAG: launched_from["Version"]}
                    )
                if hook is not None:
                    _start_wait(state, hook, "Pending:Wait")

    return replace_autoscaling_group_instances


def _launched_from(group: FakeAutoScalingGroup) -> dict[str, str] | None:
    template = group.ec2_launch_template
    if template is None:
        return None
    version = template.get_version(group.launch_template_version)
    return {
        "LaunchTemplateId": template.id,
        "LaunchTemplateName": template.name,
        "Version": str(version.number),
    }


def _instance_launch_template(original: property) -> property:
    def launch_template(self: InstanceState) -> dict[str, Any] | None:
        recorded = getattr(self, _LAUNCHED_FROM, None)
        return dict(recorded) if recorded is not None else original.fget(self)  # type: ignore[misc]

    launch_template.__doc__ = "The template version this instance was launched from (AWS)."
    return property(launch_template)


def _make_notify_terminate(original: Callable[..., Any]) -> Callable[..., Any]:
    def notify_terminate_instances(self: AutoScalingBackend, instance_ids: list[str]) -> None:
        """EC2 TerminateInstances on group instances: they leave, the group replaces them."""
        with _LIFECYCLE_LOCK:
            for group in list(self.autoscaling_groups.values()):
                gone = [s for s in group.instance_states if s.instance.id in instance_ids]
                if not gone:
                    continue
                group.instance_states = [s for s in group.instance_states if s not in gone]
                if group.mixed_instances_policy:
                    group.replace_autoscaling_group_instances(len(gone), group.get_propagated_tags())
                else:
                    group.set_desired_capacity(group.desired_capacity)
                self.update_attached_elbs(group.name)

    return notify_terminate_instances


def _make_terminate_instance(original: Callable[..., Any]) -> Callable[..., Any]:
    def terminate_instance(
        self: AutoScalingBackend, instance_id: str, should_decrement: bool
    ) -> TerminateInstanceActivity:
        """TerminateInstanceInAutoScalingGroup goes through the terminating hook."""
        with _LIFECYCLE_LOCK:
            found = [
                (group, state)
                for group in self.autoscaling_groups.values()
                for state in group.instance_states
                if state.instance.id == instance_id
            ]
            if not found:
                return original(self, instance_id, should_decrement)
            group, state = found[0]
            original_size = group.desired_capacity
            activity = TerminateInstanceActivity(state.instance, original_size or 0)
            if state.lifecycle_state in LEAVING_STATES:
                return activity
            if should_decrement:
                group.desired_capacity = max(0, (group.desired_capacity or 0) - 1)
            _begin_termination(group, state)
            group.set_desired_capacity(group.desired_capacity)  # replaces it if not decremented
            return activity

    return terminate_instance


def _make_describe_expiring(original: Callable[..., Any]) -> Callable[..., Any]:
    def describe(self: AutoScalingBackend, *args: Any, **kwargs: Any) -> Any:
        with _LIFECYCLE_LOCK:
            _expire_waits(self)
            return original(self, *args, **kwargs)

    return describe


def _make_delete_group(original: Callable[..., Any]) -> Callable[..., Any]:
    def delete_auto_scaling_group(self: AutoScalingResponse) -> Any:
        """AWS: refused while instances remain, unless ForceDelete (which waits on no hook)."""
        name = self._get_param("AutoScalingGroupName")
        force = self._get_bool_param("ForceDelete", False)
        backend = self.autoscaling_backend
        with _LIFECYCLE_LOCK:
            _expire_waits(backend)
            group = backend.autoscaling_groups.get(name)
            if group is None:
                return original(self)  # moto's "not found" ValidationError
            if group.instance_states and not force:
                raise _ResourceInUse(
                    "You cannot delete an AutoScalingGroup while there are instances or "
                    "pending Spot instance request(s) still in the group."
                )
            for state in list(group.instance_states):
                _terminate(group, state)
            answer = original(self)
            for hook in backend.describe_lifecycle_hooks(as_name=name):
                backend.delete_lifecycle_hook(name, hook.name)
            return answer

    return delete_auto_scaling_group


def _lifecycle_params(response: AutoScalingResponse) -> tuple[str, str, str | None, str | None]:
    return (
        response._get_param("AutoScalingGroupName"),
        response._get_param("LifecycleHookName"),
        response._get_param("InstanceId"),
        response._get_param("LifecycleActionToken"),
    )


def _make_complete(original: Callable[..., Any]) -> Callable[..., Any]:
    def complete_lifecycle_action(self: AutoScalingResponse) -> Any:
        group_name, hook, instance_id, token = _lifecycle_params(self)
        result = self._get_param("LifecycleActionResult")
        with _LIFECYCLE_LOCK:
            _expire_waits(self.autoscaling_backend)
            group = self.autoscaling_backend.autoscaling_groups.get(group_name)
            state = _find_state(group, instance_id, token)
            wait = wait_of(state) if state is not None else None
            if wait is not None and wait.hook != hook:
                subject = f"instance ID {instance_id}" if instance_id else f"token {token}"
                raise ValidationError(
                    f"No active Lifecycle Action found with {subject} "
                    f"(it waits on hook {wait.hook!r}, not {hook!r})"
                )
            answer = original(self)  # validates and records in the server's ledger
            if wait is not None and group is not None and state is not None:
                _finish_wait(group, state, result)
            return answer

    return complete_lifecycle_action


def _make_heartbeat(original: Callable[..., Any]) -> Callable[..., Any]:
    def record_lifecycle_action_heartbeat(self: AutoScalingResponse) -> Any:
        group_name, hook, instance_id, token = _lifecycle_params(self)
        with _LIFECYCLE_LOCK:
            group = self.autoscaling_backend.autoscaling_groups.get(group_name)
            state = _find_state(group, instance_id, token)
            wait = wait_of(state) if state is not None else None
            answer = original(self)
            if wait is not None and wait.hook == hook:
                wait.deadline = time.monotonic() + wait.heartbeat_timeout
            return answer

    return record_lifecycle_action_heartbeat


def _register_image(self: AmisResponse) -> ActionResult:
    """moto's RegisterImage, plus the image tags of ``TagSpecifications`` (AWS applies them)."""
    name = self._get_param("Name")
    description = self._get_param("Description", "")
    self.error_on_dryrun()
    image = self.ec2_backend.register_image(name, description)
    tags = convert_tag_spec(self._get_param("TagSpecifications", [])).get("image", {})
    if tags:
        self.ec2_backend.create_tags([image.id], tags)
    return ActionResult({"ImageId": image.id})


def _make_create_template_version(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_launch_template_version(self: LaunchTemplates) -> Any:
        """``SourceVersion``: the new version starts from the source's data (AWS)."""
        source = self._get_param("SourceVersion")
        answer = original(self)
        if source:
            name = self._get_param("LaunchTemplateName")
            template = (
                self.ec2_backend.get_launch_template_by_name(name)
                if name
                else self.ec2_backend.get_launch_template(self._get_param("LaunchTemplateId"))
            )
            created: LaunchTemplateVersion = template.latest_version()
            base = template.get_version(source).data
            for key, value in base.items():
                created.data.setdefault(key, copy.deepcopy(value))  # same dict as the answer's
            created.instance_tags = convert_tag_spec(
                created.data.get("TagSpecifications", [])
            ).get("instance", {})
        return answer

    return create_launch_template_version


def _delete_launch_template_versions(self: LaunchTemplates) -> Any:
    """moto lacks it. A deleted version is marked, not removed (moto numbers versions by
    their place in a list), and asking for it afterwards fails as on AWS; the default
    version cannot be deleted."""
    name = self._get_param("LaunchTemplateName")
    template = (self.ec2_backend.get_launch_template_by_name(name) if name
                else self.ec2_backend.get_launch_template(self._get_param("LaunchTemplateId")))
    deleted: set[int] = template.__dict__.setdefault(_DELETED_VERSIONS, set())
    done, refused = [], []
    for version in self._get_param("LaunchTemplateVersions", []) or self._get_param("Versions", []):
        number = int(version)
        entry = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name, "VersionNumber": number}
        if number == template.default_version_number or not 1 <= number <= len(template.versions) or \
                number in deleted:
            refused.append({**entry, "ResponseError": {"Code": "launchTemplateVersionDoesNotExist"
                                                       if number != template.default_version_number
                                                       else "launchTemplateVersionIsDefault",
                                                       "Message": f"version {number} cannot be deleted"}})
        else:
            deleted.add(number)
            done.append(entry)
    return ActionResult({"SuccessfullyDeletedLaunchTemplateVersions": done,
                         "UnsuccessfullyDeletedLaunchTemplateVersions": refused})


def _make_get_version(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_version(self: Any, num: Any) -> Any:
        version = original(self, num)
        if version.number in self.__dict__.get(_DELETED_VERSIONS, set()):
            from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound
            raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)
        return version

    return get_version


_DELETED_VERSIONS = "_unified_harness_deleted_versions"


# --- forced target health (for the load balancer's fail-open) -------------------------

_REASONS = {
    "unhealthy": ("Target.FailedHealthChecks", "Health checks failed"),
    "initial": ("Elb.RegistrationInProgress", "Target registration is in progress"),
    "unavailable": ("Elb.InternalError", "Target health is unavailable"),
}


def _make_health_for(original: Callable[..., Any]) -> Callable[..., Any]:
    def health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> Any:
        forced = self.__dict__.get(_HEALTH, {}).get(target["Id"])
        registered = self.targets.get(target["Id"])
        if forced is None or registered is None:
            return original(self, target, ec2_backend)
        code, description = _REASONS.get(forced, (None, None))
        return FakeHealthStatus(
            registered["Id"], registered["Port"], self.health_check_port, forced, code, description
        )

    return health_for


def set_target_health(target_group_arn: str, target_id: str, state: str | None) -> None:
    """Force what DescribeTargetHealth says of a *registered* target (None: moto's own).

    moto never runs health checks (a registered running instance is ``healthy`` at once);
    this lets a test make targets ``unhealthy`` (or ``initial``) and watch the load
    balancer's answer, e.g. its fail-open. Deregistering still drains as usual.
    """
    if state is not None and state not in _REASONS and state != "healthy":
        raise ValueError(f"state must be one of {sorted(_REASONS)} or 'healthy', not {state!r}")
    _, _, _, region, account, _ = target_group_arn.split(":", 5)
    group = elbv2_backends[account][region].target_groups.get(target_group_arn)
    if group is None:
        raise KeyError(f"no target group {target_group_arn} in moto")
    forced: dict[str, str] = group.__dict__.setdefault(_HEALTH, {})
    if state is None:
        forced.pop(target_id, None)
    else:
        forced[target_id] = state


# --------------------------------------------------------------------------------------
# The installer
# --------------------------------------------------------------------------------------


def install_fleet_patches() -> None:
    """Install every patch above (idempotent; call after ``install_lifecycle_actions``,
    whose two methods the lifecycle wrappers wrap)."""
    major = moto.__version__.split(".", 1)[0]
    if major != "5":
        raise RuntimeError(
            f"tests/harness/moto_fleet.py patches moto 5 internals; moto {moto.__version__} "
            "is installed: pin moto[server]>=5.2,<6"
        )
    _patch(AutoScalingResponse, "create_auto_scaling_group", _make_create_group)
    _patch(AutoScalingResponse, "delete_auto_scaling_group", _make_delete_group)
    _patch(AutoScalingResponse, "complete_lifecycle_action", _make_complete)
    _patch(AutoScalingResponse, "record_lifecycle_action_heartbeat", _make_heartbeat)
    _patch(FakeAutoScalingGroup, "set_desired_capacity", _make_set_desired_capacity)
    _patch(FakeAutoScalingGroup, "replace_autoscaling_group_instances", _make_replace_instances)
    _patch(AutoScalingBackend, "notify_terminate_instances", _make_notify_terminate)
    _patch(AutoScalingBackend, "terminate_instance", _make_terminate_instance)
    _patch(AutoScalingBackend, "describe_auto_scaling_instances", _make_describe_expiring)
    _patch(AutoScalingBackend, "describe_auto_scaling_groups", _make_describe_expiring)
    _patch(LaunchTemplates, "create_launch_template_version", _make_create_template_version)
    if not getattr(LaunchTemplates.__dict__.get("delete_launch_template_versions"), _MARK, False):
        setattr(_delete_launch_template_versions, _MARK, True)
        LaunchTemplates.delete_launch_template_versions = _delete_launch_template_versions  # type: ignore[attr-defined]
    _patch(LaunchTemplate, "get_version", _make_get_version)
    _patch(FakeTargetGroup, "health_for", _make_health_for)
    current = InstanceState.__dict__["launch_template"]
    if not getattr(current.fget, _MARK, False):
        prop = _instance_launch_template(current)
        setattr(prop.fget, _MARK, True)
        InstanceState.launch_template = prop  # type: ignore[method-assign,assignment]
    if not getattr(AmisResponse.__dict__["register_image"], _MARK, False):
        setattr(_register_image, _MARK, True)
        AmisResponse.register_image = _register_image  # type: ignore[method-assign]


__all__ = [
    "GROUP_TAG",
    "LAUNCHING",
    "LEAVING_STATES",
    "LIVE_STATES",
    "TERMINATING",
    "LifecycleWait",
    "install_fleet_patches",
    "set_target_health",
    "wait_of",
]
