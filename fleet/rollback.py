"""`unified rollback ENV SERVICE [--to DEPLOY]`: back to an earlier version, safely.

- **Warm** (a pair whose standby still runs): its instances are checked healthy, the
  routes' weights go back to its colour (one call per route), and the version that was
  live becomes the standby. Seconds.
- **Cold** (a group kept at zero, or one target group, or a worker): the kept group is
  given the idle colour, scaled up to the live size, and verified exactly as a deploy
  verifies a new group; then the switch, as a deploy's.

The current version is never taken out before the one rolled back to serves. A rollback
is recorded in the history like a deploy (kind "rollback"), under the lock.
"""

from __future__ import annotations

import time

from agent import deadline
from agent.config.catalog import Catalog
from agent.deadline import Deadline
from agent.errors import AgentError, BadInput
from fleet import deploy, groups, history, lock, names, preflight, verify
from fleet.deploy import Attempt, Context, Options, Outcome, Timer
from fleet.groups import Group
from fleet.history import Release
from fleet.inventory import ServiceState
from fleet.lock import Locks


def run(catalog: Catalog, env: str, service: str, to: str | None, options: Options, command: str,
        say: deploy.Say) -> Outcome:
    [chosen] = preflight.chosen_services(catalog, env, [service])
    if to is not None and not names.is_deploy_id(to):
        raise BadInput(f"--to {to!r}: expected a deploy id like 20261128t120102-3fa9 (see `unified releases`)")
    parts = preflight.check(catalog, env, [chosen], None)
    try:  # nonsense is refused before the lock, the first write...
        _target(deploy.read_only(parts, env, chosen), to)
    except BadInput:  # ...unless a deploy holds it: what is kept changes when it ends; wait or say busy
        if chosen not in lock.holders(parts.table, env):
            raise
    rollback_id, who = names.new_deploy_id(), names.operator()
    with Locks(parts.table, env, [chosen], rollback_id, command, who, options.lease, options.wait_lock, say) as locks:
        ctx = Context(catalog, env, parts, locks, options, say, rollback_id, who, command)
        part = parts.services[chosen]
        locks.phase(f"{chosen}: recover")
        state = deploy.recover(ctx, part)
        target = _target(state, to)
        return _roll_back(ctx, part, state, target)


def _target(state: ServiceState, to: str | None) -> Group:
    """The group to go back to: `to`'s, or the standby, or the newest kept group."""
    if state.live is None:
        raise BadInput(f"{state.service} has no live version to roll back from (see `unified releases`)")
    if to is not None:
        if state.live.deploy_id == to:
            raise BadInput(f"deploy {to} of {state.service} is the live version already")
        found = [g for g in (state.standby, *state.kept) if g is not None and g.deploy_id == to]
        if not found:
            kept = ", ".join(g.deploy_id for g in (state.standby, *state.kept) if g is not None) or "none"
            raise BadInput(f"deploy {to} of {state.service} is not kept any more (kept: {kept})")
        return found[0]
    for candidate in (state.standby, *state.kept):
        if candidate is not None:
            return candidate
    raise BadInput(f"{state.service}: no earlier version is kept to roll back to")


def _roll_back(ctx: Context, part: preflight.ServiceParts, state: ServiceState, target: Group) -> Outcome:
    name, say = part.name, ctx.say
    assert state.live is not None
    original = next((r for r in state.history if r.group == target.name and r.kind == "deploy"), None)
    warm = part.pair and state.standby is not None and target == state.standby and len(target.in_service) > 0
    colour = state.idle_colour if part.pair else None
    release = Release(service=name, deploy_id=ctx.deploy_id, kind="rollback", image=original.image if original else "?",
                      who=ctx.who, started=time.time(), group=target.name,
                      commits=original.commits if original else {}, target_group=colour,
                      previous=state.live.deploy_id, detail=f"back to {target.deploy_id}")
    history.save(ctx.parts.table, ctx.env, release)
    timer = Timer(release)
    switched: float | None = None
    try:
        if warm:
            with timer("switch"):
                ctx.locks.phase(f"{name}: switch (warm)")
                ids = [i.instance_id for i in target.in_service]
                assert colour is not None
                verify.wait_healthy(part.target_groups[colour], colour, ids, Deadline(ctx.options.verify_timeout),
                                    say, name)
                groups.cancel_scale_down(target.name)  # it serves again: no end to its standby
                deploy.switch(ctx, part, state, target.name, colour)
        else:
            _cold(ctx, part, state, target, colour, timer)
        switched = time.monotonic()
        say(f"{name}: all traffic on {target.name} ({target.deploy_id})")
        with timer("standby"):
            ctx.locks.phase(f"{name}: standby")
            state.standby = None if target == state.standby else state.standby
            deploy.after_switch(ctx, part, state, release)
    except AgentError as failure:
        return deploy.conclude(ctx, release, switched, failure)
    return deploy.conclude(ctx, release, switched, None, f"{name}: rolled back to {target.deploy_id} ({target.name})")


def _cold(ctx: Context, part: preflight.ServiceParts, state: ServiceState, target: Group, colour: str | None,
          timer: Timer) -> None:
    """Scale the kept group up and verify it as a deploy would; then switch. A failure
    scales it back to zero (it is kept, not deleted) and switches nothing."""
    name, say = part.name, ctx.say
    assert state.live is not None
    low, high, desired = state.live.min, state.live.max, state.live.desired
    if state.standby is not None and state.standby != target:
        deploy.vacate_idle_colour(ctx, part, state)
    attempt = _Restore(ctx, part, state, target)
    with attempt:
        with timer("boot"):
            ctx.locks.phase(f"{name}: boot (cold)")
            if colour is not None and target.target_group != colour:
                groups.tag(target.name, {names.TARGET_GROUP_TAG: colour})
            groups.cancel_scale_down(target.name)
            groups.resize(target.name, desired, low, high)
            say(f"{name}: {target.name} scaled up to {desired} (cold rollback)")
            instances = verify.wait_in_service(target.name, desired, Deadline(ctx.options.boot_timeout), say, name)
        with timer("verify"):
            ctx.locks.phase(f"{name}: verify")
            deploy._verify(ctx, part, colour, instances, attempt)
        with timer("switch"):
            ctx.locks.phase(f"{name}: switch")
            deploy.switch(ctx, part, state, target.name, colour)
            attempt.switched = True


class _Restore(Attempt):
    """A cold rollback that fails puts the kept group back to zero (kept, not deleted)."""

    def __init__(self, ctx: Context, part: preflight.ServiceParts, state: ServiceState, target: Group):
        super().__init__(ctx, part, Release(part.name, ctx.deploy_id, "rollback", "", ctx.who, 0.0, target.name))
        self.target = target

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        from fleet import routing
        say = self.ctx.say
        with deadline.heard():
            if self.rule is not None:
                deploy._undo(say, "removing the candidate route", routing.delete_rule, self.rule)
                self.rule = None
            if kind is not None and not self.switched:
                say(f"{self.part.name}: nothing switched; {self.target.name} goes back to zero")
                deploy._undo(say, f"scaling {self.target.name} back to zero", groups.resize, self.target.name, 0, 0)
