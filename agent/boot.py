"""`agent boot`: make this box what its tags (or flags) say, top to bottom.

    identify (IMDS) -> role (flags or tags, untrusted, checked) -> facts (tools, users,
    secrets, SSM config vars) -> plan (pure) -> apply (supervisord, local databases,
    readiness) -> join the load balancers and complete the launch hook

Review mode is the same path with no registrations, no SSM and no hook: a review tag
on an instance and `--mode review` differ only in that the first asks IMDS who it is.
Everything from the identity on runs inside a `Membership`, so any failure (a bad
tag, a service that never gets ready, SIGTERM) completes the launch hook with ABANDON
and leaves nothing registered.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent import facts as machine
from agent import role as roles
from agent.aws import clients, ec2, lifecycle, ssm
from agent.aws.imds import Identity, Imds
from agent.aws.lb import kinds
from agent.aws.lb.kinds import LoadBalancer
from agent.aws.membership import Drained, Membership
from agent.config import catalog as catalogs
from agent.config.catalog import Catalog
from agent.errors import AgentError, BadInput
from agent.local import lock, state
from agent.local.apply import Box, start_supervisord_early
from agent.local.layout import Layout
from agent.local.state import IdentityRecord, RegistrationRecord, State, StepRecord
from agent.plan import Plan, make_plan
from agent.role import Role

log = logging.getLogger("agent.boot")
Say = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    """What `agent boot` was asked: flags override tags."""

    services: Path | None = None
    mode: str | None = None
    service: str | None = None
    imds_deadline: float = 60.0
    heartbeat_interval: float | None = None


@dataclass(frozen=True)
class Who:
    """What IMDS says this instance is (tags are untrusted until `role.resolve`)."""

    identity: Identity
    tags: dict[str, str]

    @property
    def group(self) -> str | None:
        return self.tags.get(lifecycle.GROUP_TAG)


def boot(layout: Layout, request: Request, say: Say = print) -> State:
    """Boot this box; raises AgentError (BadInput for bad flags, tags or files). Once
    IMDS has named the instance, a failure first completes the launch hook with ABANDON
    (`Membership`); flags are checked before IMDS is asked, so bad ones complete no hook."""
    if request.service is not None and request.mode is None:
        raise BadInput("--service needs --mode (staging or production)")
    if request.mode is not None:  # flags are checked before anything asks IMDS or writes
        catalog = load_catalog(layout, request.services)
        role = roles.resolve(catalog, request.mode, request.service)
        if role.mode == "review":
            require_checkouts(layout, catalog, role)
    with lock.exclusive(layout, "boot"):
        current = state.load_or_set_aside(layout, say) or State()
        who = None if request.mode == "review" else identify(Imds(deadline=request.imds_deadline))
        group = who.group if who is not None and current.hook_completed != who.identity.instance_id else None
        with Membership(group, who.identity.instance_id if who else "", who.identity.region if who else "",
                        say, request.heartbeat_interval) as member:
            catalog = load_catalog(layout, request.services)
            role = role_of(catalog, who, request)
            if role.mode == "review":
                member.leave_group()
            require_checkouts(layout, catalog, role)
            early = start_supervisord_early(layout)  # only once the tags are known to be good
            env = catalog.environments.get(role.mode)
            config = {}
            if who is not None and role.mode != "review" and env is not None and role.service:
                config = ssm.config_vars(env.config_path, role.service, who.identity.region)
            facts = machine.gather(layout, catalog, role, generate_secrets=role.mode == "review", config_vars=config)
            plan = make_plan(catalog, role, layout, facts)
            box = Box(layout, plan, facts, say, supervisord=early)
            setup = member.hold()
            if setup is not None:
                refusal = setup.refusal()
                if refusal is not None:
                    raise AgentError(refusal)
                current.warnings = setup.warnings([(r.kind, r.name) for r in plan.registrations])
                for warning in current.warnings:
                    log.warning("%s", warning)
            balancers = [kinds.for_record(r) for r in registrations(plan, who, current)]
            known = frozenset(kinds.for_record(r).description for r in current.registrations)
            if current.registrations and box.pending_changes():
                # a re-boot with new config restarts the service: out of the load balancer first
                with Drained(balancers, None, say, register_after=False):
                    current = box.boot(current)
            else:
                current = box.boot(current)
            # recorded before registering: a crash in between must still leave stop and
            # watch knowing what to deregister
            _record(layout, current, balancers)
            joined = member.join(balancers, role.service or "", known)
            current.steps = [*current.steps, *(StepRecord(name, round(seconds, 3)) for name, seconds in joined)]
        _record(layout, current, balancers)  # with what the load balancers told us (ARNs)
        current.config_path, current.config_keys = (plan.config_path, sorted(config)) if config else (None, [])
        if who is not None:
            current.hook_completed = who.identity.instance_id if who.group else None
            current.identity = IdentityRecord(who.identity.instance_id, who.identity.region,
                                              who.identity.availability_zone, who.group)
        state.save(layout, current)
        return current


def identify(imds: Imds) -> Who:
    """The instance id, region, zone and tags, from IMDS (tags from ec2:DescribeTags
    where instance metadata tags are off). AWS clients are made meanwhile."""
    identity = imds.identity()
    # in the order boot needs them: ec2 (tags off), SSM (config, on the critical path), hooks, ELB
    services = (["ec2"] if identity.tags is None else []) + ["ssm", "autoscaling", "elbv2"]
    clients.prewarm(identity.region, services)
    tags = identity.tags
    if tags is None:
        log.info("instance metadata tags are disabled; reading tags with ec2:DescribeTags")
        tags = ec2.instance_tags(identity.instance_id, identity.region)
    return Who(identity, tags)


def role_of(catalog: Catalog, who: Who | None, request: Request) -> Role:
    """From the flags if given, else from the instance's tags (untrusted: checked)."""
    tags = who.tags if who is not None else {}
    pair, release, deploy = (tags.get(roles.TARGET_GROUP_TAG), tags.get(roles.RELEASE_TAG),
                             tags.get(roles.DEPLOY_TAG))
    if request.mode is not None:
        return roles.resolve(catalog, request.mode, request.service, target_group=pair, release=release,
                             deploy=deploy)
    assert who is not None
    return roles.resolve(catalog, tags.get(roles.MODE_TAG), tags.get(roles.SERVICE_TAG),
                         source=f"tags {roles.MODE_TAG}/{roles.SERVICE_TAG} of {who.identity.instance_id}",
                         target_group=pair, release=release, deploy=deploy)


def load_catalog(layout: Layout, services: Path | None) -> Catalog:
    """services.yaml of this box. A file byte-identical to the one the bake validated
    (its digest is in the manifest) skips the schema pass."""
    try:
        validated = json.loads(layout.manifest.read_text()).get("services_digest")
    except (OSError, ValueError, AttributeError):
        validated = None
    return catalogs.load(services or layout.default_services, validated_digest=validated)


def require_checkouts(layout: Layout, catalog: Catalog, role: Role) -> None:
    """Refuse before starting anything if a service's code is not under the root."""
    names = catalog.services if role.mode == "review" else [role.service]
    missing = sorted({catalog.services[n].repo for n in names
                      if n is not None and not layout.repo_dir(catalog.services[n].repo).is_dir()})
    if missing:
        raise BadInput(f"repos not baked under {layout.repos}: {', '.join(missing)}; "
                       f"run `agent bake --root {layout.root}` first")


def registrations(plan: Plan, who: Who | None, current: State) -> list[RegistrationRecord]:
    """The plan's registrations for this instance, with what earlier boots learnt (a
    target group's ARN) so a reboot does not look it up again."""
    if who is None:
        return []
    known = {(r.kind, r.name): r for r in current.registrations}
    records = []
    for reg in plan.registrations:
        record = RegistrationRecord(reg.kind, reg.name, reg.port, who.identity.instance_id, who.identity.region)
        before = known.get((reg.kind, reg.name))
        if before is not None and (before.port, before.instance_id) == (reg.port, record.instance_id):
            record = before
        records.append(record)
    return records


def _record(layout: Layout, current: State, balancers: list[LoadBalancer]) -> None:
    current.registrations = [lb.record for lb in balancers]
    state.save(layout, current)
