"""What a service has in an environment now: its groups, which one is live, which is
the warm standby, which are kept for rollback, and which are left over from a deploy
that died. Read from AWS and the release history, never from local files.

What AWS says wins over what the tool wrote: a deploy can die between its switch and
its record, and a tag can be edited by hand.

- A blue/green pair: the listener's weights say which target group is live, and the
  instances registered in it say which group serves: the newest group with instances
  there (recorded or not: a deploy killed right after its switch is still seen as live,
  and its record is mended). The standby is the group whose instances are in the other
  target group. The groups' colour tags are used only where nothing is registered.
- One target group, a classic ELB, a worker: the switch scales the old group to zero,
  so the live group is the newest that still has instances wanted: one whose release
  succeeded, or else (the deploy died after its switch) the newest of any.

A group is never counted as left over while it is the one that serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet import groups, history
from fleet.groups import Group
from fleet.history import Release
from fleet.preflight import ServiceParts


@dataclass
class ServiceState:
    service: str
    groups: list[Group]
    history: list[Release]
    live: Group | None = None
    standby: Group | None = None
    live_colour: str | None = None      # a pair's weighted target group (name)
    idle_colour: str | None = None
    unrecorded_live: bool = False       # live by the weights, but its deploy never recorded success
    leftovers: list[Group] = field(default_factory=list)   # half-made by a deploy that died, or failed
    kept: list[Group] = field(default_factory=list)        # once live, kept for cold rollbacks (newest first)

    @property
    def surplus(self) -> list[Group]:
        """Kept groups that still have instances wanted (a deploy died before it scaled
        the old version down): they go to zero, drained, and stay kept."""
        return [g for g in self.kept if g.desired > 0]

    def release_of(self, group: Group) -> Release | None:
        return next((r for r in self.history if r.group == group.name and r.kind == "deploy"), None)

    def succeeded(self, group: Group) -> bool:
        return any(r.group == group.name and r.result == history.SUCCEEDED for r in self.history)


def read(env: str, part: ServiceParts, all_groups: list[Group], releases: list[Release],
         registered: dict[str, set[str]] | None = None) -> ServiceState:
    """`registered`: target group name -> the instance ids registered in it (a pair)."""
    mine = [g for g in all_groups if g.service == part.name]
    state = ServiceState(part.name, mine, [r for r in releases if r.service == part.name])
    if part.pair:
        _pair(state, part, registered or {})
    else:
        serving = [g for g in mine if g.desired > 0]
        recorded = [g for g in serving if state.succeeded(g)]
        if recorded:
            state.live = recorded[-1]
        elif serving:
            state.live, state.unrecorded_live = serving[-1], True
    for group in mine:
        if group in (state.live, state.standby):
            continue
        (state.kept if state.succeeded(group) else state.leftovers).append(group)
    state.kept.sort(key=lambda g: g.deploy_id, reverse=True)
    return state


def _pair(state: ServiceState, part: ServiceParts, registered: dict[str, set[str]]) -> None:
    by_arn = {arn: name for name, arn in part.target_groups.items()}
    weights = part.routes[0].weights if part.routes else {}
    live_arn = max(weights, key=lambda arn: weights[arn]) if weights else None
    state.live_colour = by_arn.get(live_arn) if live_arn else None
    state.idle_colour = next((n for n in part.target_groups if n != state.live_colour), None)
    serving = [g for g in state.groups if g.desired > 0 or g.instances]

    def in_colour(colour: str | None) -> list[Group]:
        ids = registered.get(colour or "", set())
        found = [g for g in serving if ids & {i.instance_id for i in g.instances}]
        return found or [g for g in serving if g.target_group == colour and not _registered_elsewhere(g, registered)]

    live = in_colour(state.live_colour)
    recorded = [g for g in live if state.succeeded(g)]
    if recorded:
        state.live = recorded[-1]
    elif live:
        state.live, state.unrecorded_live = live[-1], True
    standby = [g for g in in_colour(state.idle_colour) if state.succeeded(g) and g is not state.live and g.desired > 0]
    state.standby = standby[-1] if standby else None


def _registered_elsewhere(group: Group, registered: dict[str, set[str]]) -> bool:
    ids = {i.instance_id for i in group.instances}
    return any(ids & members for members in registered.values())


def all_groups(env: str) -> list[Group]:
    return groups.groups(env)
