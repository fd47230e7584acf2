"""Staging and production: one instance becomes one service and takes traffic.

identity (IMDS) -> role from tags (untrusted, checked) -> config vars (SSM) -> the
service under supervisord, ready -> registered and healthy in its load balancer ->
launch lifecycle hook completed with CONTINUE. Any failure after the hook is known
completes it with ABANDON (the group replaces the instance) and leaves nothing
registered. Restart and stop drain from the load balancer first.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

from agent import aws, ec2, lifecycle, ops, role, ssm, state
from agent.boot import Box, start_supervisord_early
from agent.catalog import Catalog
from agent.elb import LoadBalancer, Target
from agent.errors import AgentError
from agent.imds import Identity, Imds
from agent.paths import Layout
from agent.plan import Inputs, Plan, Role, make_plan

log = logging.getLogger("agent.instance")
HEALTH_TIMEOUT = 300.0


@dataclass
class Who:
    identity: Identity
    tags: dict[str, str]

    @property
    def group(self) -> str | None:
        return self.tags.get(lifecycle.GROUP_TAG)


def who_am_i(imds: Imds) -> Who:
    identity = imds.identity()
    # in the order boot needs them: ec2 (tags off), SSM (config, on the critical path), hooks, ELB
    services = (["ec2"] if identity.tags is None else []) + ["ssm", "autoscaling", "elbv2"]
    aws.prewarm(identity.region, services)
    tags = identity.tags
    if tags is None:  # instance metadata tags are off: one ec2:DescribeTags call
        log.info("instance metadata tags are disabled; reading tags with ec2:DescribeTags")
        tags = ec2.instance_tags(identity.instance_id, identity.region)
    return Who(identity, tags)


def role_from(catalog: Catalog, who: Who, mode: str | None, service: str | None) -> Role:
    """Flags win over tags; tags are checked exactly like flags (they are untrusted)."""
    if mode is not None:
        return role.resolve(catalog, mode, service)
    return role.resolve(catalog, who.tags.get(role.MODE_TAG), who.tags.get(role.SERVICE_TAG),
                        source=f"tags {role.MODE_TAG}/{role.SERVICE_TAG} of {who.identity.instance_id}")


def targets(plan: Plan, instance_id: str, region: str, known: list[dict[str, Any]]) -> list[Target]:
    remembered = {(t.get("target_group"), t.get("classic_elb")): t.get("target_group_arn") for t in known}
    return [Target(instance_id, r.port, region, r.target_group,
                   remembered.get((r.target_group, r.classic_elb)), r.classic_elb) for r in plan.registrations]


def boot(layout: Layout, load_catalog: Callable[[], Catalog], inputs_for: Callable[[Catalog, Role, dict[str, str]], Inputs],
         mode: str | None, service: str | None, checkouts: Callable[[Catalog, Role], None] | None = None,
         say: Callable[[str], None] = print, imds: Imds | None = None,
         heartbeat_interval: float | None = None) -> state.State:
    """Boot this instance for its tags. Raises AgentError (BadInput for bad tags/files)
    after completing the launch hook with ABANDON."""
    imds = imds or Imds()
    who = who_am_i(imds)
    current = state.load(layout) or state.State()
    pool = ThreadPoolExecutor(2, thread_name_prefix="boot-aws")
    hook_lookup = None
    if who.group and current.hook_completed != who.identity.instance_id:
        hook_lookup = pool.submit(lifecycle.find_hook, who.group, who.identity.instance_id, who.identity.region,
                                  lifecycle.LAUNCHING)
    hook = None
    registered: list[LoadBalancer] = []
    try:
        with ExitStack() as stack:
            stack.callback(pool.shutdown)
            catalog = load_catalog()
            the_role = role_from(catalog, who, mode, service)
            if checkouts is not None:
                checkouts(catalog, the_role)
            early = start_supervisord_early(layout)  # only once the tags are known to be good
            config: dict[str, str] = {}
            config_path = catalog.environments.get(the_role.mode)
            if the_role.mode != "review" and config_path and the_role.service:
                config = ssm.config_vars(config_path, the_role.service, who.identity.region)
            inputs = inputs_for(catalog, the_role, config)
            plan = make_plan(catalog, the_role, layout, inputs)
            box = Box(layout, plan, inputs, say)
            box.early_supervisord = early
            hook = hook_lookup.result() if hook_lookup is not None else None
            if hook is not None:
                stack.enter_context(hook.heartbeats(heartbeat_interval))
            if current.registrations and box.pending_changes():
                # a re-boot with new config restarts the service: out of the load balancer first
                with Drained(layout, None, say, register_after=False):
                    current = box.boot()
            else:
                current = box.boot()
            lbs = [LoadBalancer(t) for t in targets(plan, who.identity.instance_id, who.identity.region,
                                                   current.registrations)]
            for lb in lbs:
                lb.resolve()
            # recorded before registering: a crash in between must still leave stop and
            # watch knowing what to deregister
            current.registrations = [lb.target.to_json() for lb in lbs]
            state.save(layout, current)
            for lb in lbs:
                lb.register()
                registered.append(lb)
                lb.wait_healthy(HEALTH_TIMEOUT)
                say(f"{the_role.service}: healthy in {lb.target.name}")
            current.config = {"path": config_path, "keys": sorted(config)} if config else {}
        if hook is not None:
            hook.complete("CONTINUE")
            say(f"lifecycle hook {hook.name}: CONTINUE")
        current.hook_completed = who.identity.instance_id if who.group else None
        current.identity = {"instance_id": who.identity.instance_id, "region": who.identity.region,
                            "availability_zone": who.identity.availability_zone, "group": who.group}
        state.save(layout, current)
        return current
    except Exception as failure:  # any failure: nothing stays registered, the group replaces us
        if hook is None and hook_lookup is not None and hook_lookup.exception() is None:
            hook = hook_lookup.result()
        for lb in registered:
            _quietly(lb.deregister, f"deregistering from {lb.target.name}")
        if hook is not None:
            _quietly(lambda: hook.complete("ABANDON"), f"completing {hook.name} with ABANDON")
            if isinstance(failure, AgentError):
                failure.lines = [*failure.lines, f"lifecycle hook {hook.name}: ABANDON (the group will "
                                                 f"replace {who.identity.instance_id})"]
        raise


def _quietly(action: Callable[[], Any], what: str) -> None:
    try:
        action()
    except Exception as exc:  # already failing: report, but keep the first error
        log.error("%s failed too: %s", what, exc)


class Drained:
    """Out of every load balancer while the body runs; back in (and healthy) after.

    Deregisters, waits for the target group's deregistration delay (bounded by
    `drain_limit`) so requests in flight finish, then yields; on the way out registers
    again and waits for health, so `agent restart` never drops a request.
    """

    def __init__(self, layout: Layout, drain_limit: float | None, say: Callable[[str], None],
                 register_after: bool = True):
        current = state.load(layout)
        self.lbs = [LoadBalancer(Target(**t)) for t in (current.registrations if current else [])]
        self.limit, self.say, self.register_after = drain_limit, say, register_after

    def __enter__(self) -> "Drained":
        for lb in self.lbs:
            lb.deregister()
            limit = lb.drain_seconds()
            if self.limit is not None:
                limit = min(limit, self.limit)
            waited = lb.wait_drained(limit)
            self.say(f"deregistered from {lb.target.name}; drained in {waited:.1f}s (limit {limit:.0f}s)")
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if not self.register_after or kind is not None:
            return  # a failed restart stays out of the load balancer: better than errors
        for lb in self.lbs:
            lb.register()
            lb.wait_healthy(HEALTH_TIMEOUT)
            self.say(f"registered again with {lb.target.name}; healthy")


def restart(layout: Layout, names: list[str], drain_limit: float | None, say: Callable[[str], None] = print) -> None:
    with Drained(layout, drain_limit, say):
        ops.restart(layout, names, say)


def stop(layout: Layout, services: list[str], drain_limit: float | None, say: Callable[[str], None] = print) -> None:
    with Drained(layout, drain_limit, say, register_after=False):
        ops.stop_all(layout, services)

