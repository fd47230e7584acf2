"""`agent watch`: a small daemon that drains this instance before AWS takes it away.

Every few seconds (token reused) it asks IMDS for a spot interruption notice
(`spot/instance-action`) and for the Auto Scaling target lifecycle state becoming
`Terminated` (scale-in, or the group replacing an interrupted spot instance). On
either, once per event (remembered in the state file, so a restarted watch does not act
twice): stop a boot still running (SIGTERM: it abandons its launch hook), deregister,
wait for draining within the time left, stop the services gracefully (SIGTERM, then
their stop timeout), then the databases and supervisord, and for a termination
complete the terminating lifecycle hook with CONTINUE, sending heartbeats while
draining and stopping run.

It stays small: boto3 is imported only when an event arrives, not in the polling loop.

Deadlines: each poll (the token if due, the notice, the lifecycle state, with their
retries) ends within `poll_budget(interval)` (the interval, at least 2 s), however
IMDS answers, even a byte at a time (`Imds.budget`), so a poll that goes wrong is over
before the next is due and a notice posted meanwhile is seen by the next one. SIGTERM
(systemd stopping the unit) ends a poll or the pause between polls at once
(`agent.deadline.cancel`); once an event is being acted on, SIGTERM lets the drain and
the stop finish first, then the watch exits.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from agent.aws.imds import Imds
from agent.deadline import Cancelled, Deadline, cancel
from agent.errors import AgentError
from agent.local import lock, state
from agent.local.layout import Layout

log = logging.getLogger("agent.watch")
POLL_SECONDS = 5.0
MIN_POLL_BUDGET = 2.0  # seconds a poll may take when the interval is shorter (a loaded box)
SAFETY_MARGIN = 10.0  # seconds kept in hand to take the lock before a spot instance is taken away


@dataclass(frozen=True)
class Event:
    kind: str                 # "spot" or "terminating"
    key: str                  # identifies the event, so it is acted on once
    seconds_left: float | None = None


def check(imds: Imds, now: datetime | None = None) -> Event | None:
    """One look at IMDS; a spot notice wins over a lifecycle change."""
    notice = imds.spot_action()
    if notice:
        return spot_event(notice, now or datetime.now(timezone.utc))
    if imds.lifecycle_state() == "Terminated":
        return Event("terminating", "terminating")
    return None


def spot_event(notice: str, now: datetime) -> Event:
    """The event of a spot notice (`{"action": "terminate", "time": "...Z"}`): the time
    left until `time`. A notice that cannot be read is still a notice: it is taken to
    leave the full two minutes, and keyed by its text so it is acted on once."""
    try:
        data = json.loads(notice)
        when = datetime.strptime(data["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        left = (when - now).total_seconds()
        return Event("spot", f"spot:{data.get('action', 'terminate')}:{data['time']}", max(0.0, left))
    except (ValueError, KeyError, TypeError):
        return Event("spot", f"spot:{notice.strip()[:80]}", 120.0)


def drain_budget(event: Event, stop_seconds: float, configured: float | None) -> float | None:
    """How long draining may take: a spot notice leaves ~2 minutes for draining and the
    services' stop timeout together (`agent.ops.drain_cap`, the one rule for a stop
    short of time)."""
    from agent.ops import drain_cap
    limit = configured
    if event.seconds_left is not None:
        budget = drain_cap(event.seconds_left, stop_seconds)
        limit = budget if limit is None else min(limit, budget)
    return limit


def act(layout: Layout, event: Event, drain_limit: float | None, say: Callable[[str], None],
        imds: Imds | None = None) -> None:
    """Drain, stop, complete the terminating hook: once per event."""
    from agent import ops
    from agent.aws import lifecycle  # boto3 only now

    # A restart may hold the lock; a spot notice can wait only as long as its two
    # minutes allow, a scale-in as long as its hook does. A boot is not waited for: it
    # is stopped (it abandons its launch hook) and the instance drained.
    wait = max(5.0, event.seconds_left - SAFETY_MARGIN) if event.seconds_left is not None else 900.0
    with lock.exclusive(layout, f"watch ({event.kind})", wait=wait, preempt=("boot",), say=say):
        try:
            current = state.load(layout) or state.State()
        except state.StateError as exc:  # what runs is found from supervisord all the same
            say(f"warning: {exc.lines[0]}")
            current = state.State()
        if event.key in current.handled_events:
            return
        services = current.services
        stop_seconds = max((float(p.stop_seconds) for p in current.programs), default=30.0)
        limit = drain_budget(event, stop_seconds, drain_limit)
        ident = current.identity
        if ident is None and imds is not None and event.kind == "terminating":
            ident = _identity(imds)  # the boot never finished: ask who this instance is
        hook = None
        if event.kind == "terminating" and ident is not None and ident.group:
            try:
                hook = lifecycle.find_hook(ident.group, ident.instance_id, ident.region, lifecycle.TERMINATING)
            except AgentError as exc:  # drain anyway: a missing hook must not cost requests
                say(f"cannot read the terminating hook ({exc}); draining without it")
        say(f"{event.kind}: draining (limit {limit if limit is not None else 'the load balancer delay'}s), "
            f"then stopping {', '.join(services) or 'nothing'}")
        with hook.heartbeats() if hook is not None else nullcontext():
            ops.stop_locked(layout, current, limit, say)
            say(f"stopped {', '.join(services) or 'nothing'} and supervisord")
        if hook is not None:
            hook.complete("CONTINUE")
            say(f"lifecycle hook {hook.name}: CONTINUE")
        current = state.load(layout) or current
        current.handled_events = [*current.handled_events, event.key]
        state.save(layout, current)


def _identity(imds: Imds) -> state.IdentityRecord | None:
    """Who this instance is, from IMDS (its group from the aws:autoscaling:groupName tag)."""
    from agent.aws import ec2, lifecycle
    try:
        who = imds.identity()
        tags = who.tags if who.tags is not None else ec2.instance_tags(who.instance_id, who.region)
    except AgentError as exc:
        log.warning("watch: cannot tell who this instance is: %s", exc)
        return None
    return state.IdentityRecord(who.instance_id, who.region, who.availability_zone, tags.get(lifecycle.GROUP_TAG))


def poll_budget(interval: float) -> float:
    """How long one poll may take: the interval, but at least MIN_POLL_BUDGET, so a
    short test interval on a loaded machine still leaves IMDS time to answer."""
    return max(interval, MIN_POLL_BUDGET)


def run(layout: Layout, interval: float = POLL_SECONDS, drain_limit: float | None = None,
        once: bool = False, say: Callable[[str], None] = print, imds: Imds | None = None) -> int:
    """Poll until stopped (SIGTERM/SIGINT) or, with `once`, after one look."""
    budget = poll_budget(interval)
    imds = imds or Imds(deadline=budget, timeout=1.0)
    stopping, acting = threading.Event(), threading.Event()

    def stop_watching(*_: object) -> None:
        stopping.set()
        if not acting.is_set():  # an event being acted on is finished first
            cancel("stopped by SIGTERM")

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_watching)
    current = state.load(layout)
    handled = set(current.handled_events if current else [])
    say(f"watching for spot interruptions and scale-in every {interval:g}s")
    failed = False
    try:
        while not stopping.is_set():
            pause = Deadline(interval)
            failed = not look(layout, imds, budget, handled, acting, drain_limit, say)
            if once or stopping.is_set():
                break
            pause.sleep(pause.remaining())
    except Cancelled:
        pass  # SIGTERM between events: nothing is half done
    return 1 if once and failed else 0


def look(layout: Layout, imds: Imds, budget: float, handled: set[str], acting: threading.Event,
         drain_limit: float | None, say: Callable[[str], None]) -> bool:
    """One poll within `budget`, and the action on a new event (`acting` set meanwhile);
    False after a hiccup (IMDS, AWS), which is logged: the next poll tries again."""
    try:
        with imds.budget(budget):
            event = check(imds)
        if event is not None and event.key not in handled:
            say(f"event: {event.kind}" + (f", {event.seconds_left:.0f}s left" if event.seconds_left is not None else ""))
            acting.set()
            try:
                act(layout, event, drain_limit, say, imds)
            finally:
                acting.clear()
            handled.add(event.key)
        return True
    except Cancelled:
        raise
    except AgentError as exc:
        log.warning("watch: %s", str(exc).splitlines()[0])
        return False
