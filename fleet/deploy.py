"""`unified deploy ENV --image AMI [SERVICE ...]`: a verified blue/green swap per service.

    preflight (reads only) -> lock (every service, name order, a lease)
    per service:
      recover   what a dead deploy left: half-made groups drained and deleted, stray
                candidate routes removed, a switch it made but never recorded, recorded
      group     a launch template version with the image, a new group sized like the
                live one (tags: mode, service, deploy id, the idle colour of a pair)
      release   a service with a release command: the group starts with one instance,
                tagged to run it; the rest follow once it has (once per deploy, before
                the new version takes traffic)
      boot      every instance InService: its agent booted, registered, completed the hook
      verify    target health of exactly the new instances; N answers 2xx in a row on
                each verify path through the candidate route (a pair)
      switch    a pair: the routes' weights to the new colour, one call per route; one
                target group or a worker: the old group scales to zero, drained by its agents
      standby   a pair's old group stays warm (full size, weight 0) for standby_minutes,
                then AWS scales it to zero (a scheduled action); groups beyond `retain`
                are deleted, never the live one or the last standby

A failure before the switch switches nothing: the candidate route, the new group (its
instances drained by their agents) and its launch template version go, and the exit
code is 1, with the failing instance and its agent's reason. After the switch (the
probes through the live route, the standby's schedule, pruning) the new version serves:
its release is recorded `succeeded` with "switched, then failed: ..." (the next deploy
must not take it for a leftover), and the exit code is 5, with the rollback command.
Every step after preflight runs inside the lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from agent.config.catalog import Catalog
from agent import deadline
from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from fleet import aws, groups, history, inventory, names, preflight, routing, verify
from fleet.groups import Group
from fleet.history import Release
from fleet.inventory import ServiceState
from fleet.lock import Locks
from fleet.preflight import Parts, ServiceParts

Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    probe_url: str | None = None       # where this machine reaches the listener (default: the ALB's DNS name)
    wait_lock: float = 0.0
    lease: float = 120.0
    boot_timeout: float = 900.0        # for the new instances to be InService
    verify_timeout: float = 120.0      # for health and the probes
    drain_timeout: float = 900.0       # for a removed group's instances to drain and go


@dataclass
class Outcome:
    service: str
    ok: bool
    message: str
    switched: bool = False
    release: Release | None = None
    switched_at: float | None = None     # time.monotonic() when all traffic was on it


@dataclass
class Context:
    catalog: Catalog
    env: str
    parts: Parts
    locks: Locks
    options: Options
    say: Say
    deploy_id: str
    who: str
    command: str
    commits: dict[str, str] = field(default_factory=dict)


def run(catalog: Catalog, env: str, image: str, services: list[str], options: Options, command: str,
        say: Say) -> list[Outcome]:
    """Deploy `image` to each service; the outcomes (a failed service does not stop the
    others: each is switched, or not, on its own)."""
    chosen = preflight.chosen_services(catalog, env, services)
    say(f"preflight: {env}, image {image}, {', '.join(chosen)}")
    parts = preflight.check(catalog, env, chosen, image)
    deploy_id, who = names.new_deploy_id(), names.operator()
    say(f"deploy {deploy_id} by {who}")
    with Locks(parts.table, env, chosen, deploy_id, command, who, options.lease, options.wait_lock, say) as locks:
        ctx = Context(catalog, env, parts, locks, options, say, deploy_id, who, command, image_commits(image))
        return [deploy_service(ctx, parts.services[name], image) for name in chosen]


def image_commits(image: str) -> dict[str, str]:
    """repo -> commit, from the image's `unified:commit:<repo>` tags (packer/scripts/tag-ami.sh)."""
    found = aws.call(f"reading image {image}", aws.client("ec2").describe_images, ImageIds=[image])["Images"]
    tags = {t["Key"]: t["Value"] for t in found[0].get("Tags", [])} if found else {}
    return {k.split(":", 2)[2]: v for k, v in tags.items() if k.startswith("unified:commit:")}


def current(ctx: Context, part: ServiceParts) -> ServiceState:
    return read_only(ctx.parts, ctx.env, part.name)


def read_only(parts: Parts, env: str, service: str) -> ServiceState:
    """What the service has now, read from AWS and the history (no write)."""
    part = parts.services[service]
    releases = history.releases(parts.table, env, service)
    registered: dict[str, set[str]] = {}
    if part.pair:  # the weights may have moved since preflight (a recovery): read them again
        assert parts.load_balancer is not None
        part.routes = routing.routes_to(parts.load_balancer, set(part.target_groups.values()))
        registered = {name: routing.registered(arn) for name, arn in part.target_groups.items()}
    return inventory.read(env, part, inventory.all_groups(env), releases, registered)


def deploy_service(ctx: Context, part: ServiceParts, image: str) -> Outcome:
    name, say = part.name, ctx.say
    ctx.locks.phase(f"{name}: recover")
    state = recover(ctx, part)
    vacate_idle_colour(ctx, part, state)
    sizes = _sizes(ctx, part, state.live)
    colour = state.idle_colour if part.pair else None
    release = Release(service=name, deploy_id=ctx.deploy_id, kind="deploy", image=image, who=ctx.who,
                      started=time.time(), group=names.group_name(ctx.env, name, ctx.deploy_id),
                      commits=ctx.commits, target_group=colour, previous=state.live.deploy_id if state.live else None)
    history.save(ctx.parts.table, ctx.env, release)
    timer = Timer(release)
    attempt = Attempt(ctx, part, release)
    switched_at = None
    try:
        with attempt:
            with timer("group"):
                ctx.locks.phase(f"{name}: group")
                release.template_version = groups.add_template_version(
                    ctx.parts.template, image, ctx.parts.fleet.instance_profile_of(name), ctx.deploy_id, name)
                attempt.template_version = release.template_version
                first = 1 if part.service.release else sizes[2]
                tags = names.group_tags(ctx.env, name, ctx.deploy_id, colour)
                if part.service.release:
                    tags[names.RELEASE_TAG] = ctx.deploy_id
                attempt.group = release.group  # before the call: its answer may be lost while AWS made it
                groups.create(release.group, ctx.parts.template.template_id, release.template_version,
                              (min(sizes[0], first), sizes[1], first), ctx.parts.fleet.subnets, tags,
                              ctx.parts.fleet.instance_types, ctx.parts.fleet.on_demand_base)
                say(f"{name}: group {release.group} ({sizes[2]} instances, launch template version "
                    f"{release.template_version}" + (f", joining {colour}" if colour else "") + ")")
            boot = Deadline(ctx.options.boot_timeout)
            if part.service.release:
                with timer("release"):
                    ctx.locks.phase(f"{name}: release")
                    say(f"{name}: the first instance runs the release: {part.service.release}")
                    verify.wait_in_service(release.group, 1, boot, say, name)
                    groups.remove_tag(release.group, names.RELEASE_TAG)
                    groups.resize(release.group, sizes[2], sizes[0], sizes[1])
            with timer("boot"):
                ctx.locks.phase(f"{name}: boot")
                instances = verify.wait_in_service(release.group, sizes[2], boot, say, name)
            with timer("verify"):
                ctx.locks.phase(f"{name}: verify")
                _verify(ctx, part, colour, instances, attempt)
            with timer("switch"):
                ctx.locks.phase(f"{name}: switch")
                switch(ctx, part, state, release.group, colour)
                switched_at, attempt.switched = time.monotonic(), True
        with timer("standby"):
            ctx.locks.phase(f"{name}: standby")
            after_switch(ctx, part, state, release)
    except AgentError as failure:
        return conclude(ctx, release, switched_at, failure)
    return conclude(ctx, release, switched_at, None,
                    f"{name}: {image} serves ({release.group})",
                    f"{name}: deployed {image} ({release.group}) in {sum(release.phases.values()):.1f}s")


def conclude(ctx: Context, release: Release, switched_at: float | None, failure: AgentError | None,
             done: str = "", said: str = "") -> Outcome:
    """The record and the outcome of a deploy or a rollback. A failure after its switch
    is recorded as live, with why (else the next deploy would take what serves for a
    leftover), and is told apart from one that switched nothing (exit 5, not 1)."""
    name = release.service
    if failure is None:
        history.finish(ctx.parts.table, ctx.env, release, history.SUCCEEDED)
        if said:
            ctx.say(said)
        return Outcome(name, True, done, True, release, switched_at)
    why = failure.lines[0]
    if switched_at is not None:
        history.finish(ctx.parts.table, ctx.env, release, history.SUCCEEDED, f"switched, then failed: {why}")
        ctx.say(f"{name}: switched to {release.group}, then FAILED: {why}")
        return Outcome(name, False, f"switched to {release.group} (it serves), then failed: {why}",
                       True, release, switched_at)
    history.finish(ctx.parts.table, ctx.env, release, history.FAILED, why)
    ctx.say(f"{name}: FAILED: {why}")
    return Outcome(name, False, why, False, release)


class Timer:
    """Seconds per phase, kept in the release record."""

    def __init__(self, release: Release):
        self.release = release

    def __call__(self, phase: str) -> "_Phase":
        return _Phase(self.release, phase)


class _Phase:
    def __init__(self, release: Release, phase: str):
        self.release, self.phase = release, phase

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.release.phases[self.phase] = round(time.monotonic() - self.started, 3)


class Attempt:
    """Until the switch, what the deploy made is undone on any failure: the candidate
    route removed, the new group scaled to zero (its agents drain and stop), deleted,
    and its launch template version deleted. Nothing that served before is touched."""

    def __init__(self, ctx: Context, part: ServiceParts, release: Release):
        self.ctx, self.part, self.release = ctx, part, release
        self.group: str | None = None
        self.template_version: int | None = None
        self.rule: str | None = None
        self.switched = False

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Each step of the undoing on its own: one that fails is said (the next deploy
        finishes it) and never hides why the deploy failed."""
        say = self.ctx.say
        with deadline.heard():  # a SIGTERM ended the deploy: its undoing still waits for what it undoes
            if self.rule is not None:
                _undo(say, "removing the candidate route", routing.delete_rule, self.rule)
                self.rule = None
            if kind is None or self.switched:
                return
            say(f"{self.part.name}: nothing switched; removing what this deploy made")
            if self.group is not None:
                _undo(say, f"removing {self.group}", remove_group, self.ctx, self.group, say)
            if self.template_version is not None:
                _undo(say, "deleting its launch template version", groups.delete_template_version,
                      self.ctx.parts.template.template_id, str(self.template_version))


def _undo(say: Say, what: str, fn: Callable[..., None], *args: object) -> None:
    try:
        fn(*args)
    except AgentError as exc:
        say(f"{what} failed too ({exc.lines[0]}); the next deploy finishes it")


def remove_group(ctx: Context, name: str, say: Say) -> None:
    """Its instances drained away (`remove_instances`), then the group deleted."""
    if remove_instances(ctx, name) is not None:
        groups.delete(name)
    say(f"removed {name}")


def _sizes(ctx: Context, part: ServiceParts, live: Group | None) -> tuple[int, int, int]:
    """Like the live group (so an Auto Scaling policy's decision carries over), or as
    `scale` says for a first deploy."""
    if live is not None and live.desired > 0:
        return live.min, live.max, live.desired
    scale = part.service.scale[ctx.env]
    return scale.min, scale.max, scale.desired


def probe_url(ctx: Context) -> str:
    if ctx.options.probe_url:
        return ctx.options.probe_url
    lb = ctx.parts.load_balancer
    assert lb is not None
    port = lb.listeners[0].get("Port", 80) if lb.listeners else 80
    scheme = "https" if lb.listeners and lb.listeners[0].get("Protocol") == "HTTPS" else "http"
    return f"{scheme}://{lb.dns_name}:{port}"


def _verify(ctx: Context, part: ServiceParts, colour: str | None, instances: list[str], attempt: Attempt) -> None:
    if not part.target_groups:
        return  # a worker, or a classic ELB: InService means its agent saw it healthy
    group_name = colour or next(iter(part.target_groups))
    deadline = Deadline(ctx.options.verify_timeout)
    verify.wait_healthy(part.target_groups[group_name], group_name, instances, deadline, ctx.say, part.name)
    if not part.pair or not part.service.verify_paths:
        return
    header = names.candidate_value(ctx.env, part.name, ctx.deploy_id)
    attempt.rule = routing.add_candidate(part.routes[0], header, part.target_groups[group_name])
    count = max(ctx.parts.fleet.verify_count, 2 * len(instances))  # every instance answers, twice over
    verify.probe(probe_url(ctx), part.service.verify_paths, count, header, deadline, ctx.say, part.name)


def switch(ctx: Context, part: ServiceParts, state: ServiceState, new_group: str, colour: str | None) -> None:
    """Traffic to the new version."""
    if part.pair:
        assert colour is not None
        target = part.target_groups[colour]
        for route in part.routes:
            routing.set_weights(route, {arn: (100 if arn == target else 0) for arn in route.weights})
        ctx.say(f"{part.name}: switched {len(part.routes)} route(s) to {colour}")
    elif state.live is not None:
        ctx.say(f"{part.name}: the new group serves; the old one ({state.live.name}) goes to zero, drained")
        groups.resize(state.live.name, 0, 0)


def after_switch(ctx: Context, part: ServiceParts, state: ServiceState, release: Release) -> None:
    """The old live group becomes the warm standby (a pair) or is kept at zero; the
    previous standby goes to zero; groups beyond `retain` go."""
    fleet = ctx.parts.fleet
    if part.pair and state.live is not None:
        groups.schedule_scale_down(state.live.name, fleet.standby_minutes)
        ctx.say(f"{part.name}: {state.live.name} stays warm as the standby for {fleet.standby_minutes} min")
    if part.pair and part.service.verify_paths:
        verify.probe(probe_url(ctx), part.service.verify_paths, ctx.parts.fleet.verify_count, None,
                     Deadline(ctx.options.verify_timeout), ctx.say, part.name)
    prune(ctx, part)


def vacate_idle_colour(ctx: Context, part: ServiceParts, state: ServiceState) -> None:
    """A pair's standby sits in the idle colour, where the new version goes: it goes to
    zero first (kept, for a cold rollback), and its instances are gone before anything
    joins that colour, or the probes, and after the switch customers, would reach both
    versions. It has no weight, so no customer request is in flight there: its agents
    drain at once."""
    if not part.pair or state.standby is None:
        return
    ctx.say(f"{part.name}: the standby {state.standby.name} leaves {state.idle_colour} for the new version "
            "(to zero, kept)")
    groups.cancel_scale_down(state.standby.name)
    remove_instances(ctx, state.standby.name)
    state.kept.insert(0, state.standby)
    state.standby = None


def remove_instances(ctx: Context, name: str) -> Group | None:
    """Scale to zero and wait for the instances to go (their agents drain them and
    complete the terminating hook); the group as it ends, None if gone."""
    groups.resize(name, 0, 0)

    def look() -> Group | None:
        found = groups.group(name)
        if found is not None:
            left = ", ".join(f"{i.instance_id} {i.lifecycle_state}" for i in found.instances)
            ctx.say(f"{name}: {len(found.instances)} instances draining" + (f" ({left})" if left else ""))
        return found

    left = poll(look, lambda g: g is None or not g.instances, Deadline(ctx.options.drain_timeout),
                Backoff(0.5, 1.5, 5.0))
    if left is not None and left.instances:
        raise AgentError(f"{name}: {len(left.instances)} instances still there after "
                         f"{ctx.options.drain_timeout:.0f}s; the next deploy will finish removing it")
    return left


def prune(ctx: Context, part: ServiceParts) -> None:
    """Keep `retain` groups at zero for cold rollbacks; delete older ones."""
    state = current(ctx, part)
    for old in state.kept[ctx.parts.fleet.retain:]:
        groups.delete(old.name)
        if old.template_id:
            groups.delete_template_version(old.template_id, old.template_version)
        ctx.say(f"{part.name}: deleted {old.name} (beyond the {ctx.parts.fleet.retain} kept)")


def recover(ctx: Context, part: ServiceParts) -> ServiceState:
    """Undo what a dead deploy left (this one holds the lock: nothing else is running)."""
    state = current(ctx, part)
    table = ctx.parts.table
    if state.unrecorded_live and state.live is not None:
        record = state.release_of(state.live)
        if record is not None:
            history.finish(table, ctx.env, record, history.SUCCEEDED, "recovered: its switch was made before "
                                                                      "its deploy stopped")
        ctx.say(f"{part.name}: {state.live.name} took traffic before its deploy stopped: recorded as live")
    if ctx.parts.load_balancer is not None:
        mine = names.candidate_value(ctx.env, part.name, "")
        for rule, value in routing.candidate_rules(ctx.parts.load_balancer):
            if value.startswith(mine):  # this environment's and this service's only: an ALB may be shared
                routing.delete_rule(rule)
                ctx.say(f"{part.name}: removed a candidate route left by deploy {value[len(mine):]}")
    for group in state.leftovers:
        ctx.say(f"{part.name}: {group.name} was left by deploy {group.deploy_id}; removing it")
        remove_group(ctx, group.name, ctx.say)
        if group.template_id:
            groups.delete_template_version(group.template_id, group.template_version)
    for group in state.surplus:
        ctx.say(f"{part.name}: {group.name} still has instances but serves no more; to zero (kept)")
        groups.cancel_scale_down(group.name)
        groups.resize(group.name, 0, 0)
    if state.standby is not None and (groups.standby_ends(state.standby.name) or float("inf")) <= time.time():
        ctx.say(f"{part.name}: the standby {state.standby.name} is past its time; to zero (kept)")
        groups.resize(state.standby.name, 0, 0)
    for record in state.history:
        if record.result == history.RUNNING and record.deploy_id != ctx.deploy_id:
            history.finish(table, ctx.env, record, history.INTERRUPTED, "its deploy stopped before it finished")
    if state.leftovers or state.unrecorded_live or state.surplus or state.standby is not None:
        state = current(ctx, part)
    return state

