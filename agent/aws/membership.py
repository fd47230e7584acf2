"""Taking part in an Auto Scaling group and its load balancers, as things with a lifetime.

`Membership` wraps a boot: the launch hook is looked up as soon as the instance knows
its group, kept alive with heartbeats while the box starts, and completed with
CONTINUE once every load balancer sees the instance healthy. Any failure inside it (a
bad tag, a service that never gets ready, SIGTERM) deregisters what it registered,
tags the instance with the reason (`unified:boot-error`, for the deploy tool) and
completes the hook with ABANDON, so the group replaces the instance.

`Drained` wraps a restart or a stop: out of every load balancer (and drained) while
the body runs, back in and healthy after (a restart; a stop stays out).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Callable

from agent.aws import ec2, lifecycle
from agent.aws.lb import kinds
from agent.aws.lb.kinds import LoadBalancer
from agent.errors import AgentError

log = logging.getLogger("agent.membership")
Say = Callable[[str], None]


class Membership:
    """The launch hook of `instance_id` in `group` (None: not in a group, or its hook
    was already completed by an earlier boot) and the load balancers joined."""

    def __init__(self, group: str | None, instance_id: str, region: str, say: Say,
                 heartbeat_interval: float | None = None):
        self.instance_id, self.region, self.say, self.heartbeat_interval = instance_id, region, say, heartbeat_interval
        self.joined: list[LoadBalancer] = []
        self._stack = ExitStack()
        self._hook: lifecycle.Hook | None = None
        self._lookup: Future[lifecycle.GroupSetup] | None = None
        if group is not None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="hook-lookup")
            self._lookup = pool.submit(lifecycle.read_group, group, instance_id, region)
            pool.shutdown(wait=False)

    def __enter__(self) -> Membership:
        return self

    def leave_group(self) -> None:
        """Take no part in the group's lifecycle (a review box): its hook is left alone."""
        self._lookup = None

    def hold(self) -> lifecycle.GroupSetup | None:
        """Wait for the group lookup, then keep the launch hook alive until the
        membership ends. The group's setup, to check (None: not in a group, or its hook
        was completed by an earlier boot)."""
        if self._lookup is None:
            return None
        setup = self._lookup.result()
        if self._hook is None and setup.launch_hook is not None:
            self._hook = setup.launch_hook
            self._stack.enter_context(self._hook.heartbeats(self.heartbeat_interval))
        return setup

    def join(self, balancers: list[LoadBalancer], service: str,
             known: frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        """Register with each load balancer and wait until it sees the instance healthy,
        as long as its own health check can take (`health_wait_seconds`), with the hook
        kept alive meanwhile. Where an earlier boot registered (`known`: descriptions),
        the instance is registered again only if the load balancer no longer has it.
        The steps taken, for the boot's timeline: (what, seconds)."""
        steps = []
        for lb in balancers:
            registered = lb.description not in known or lb.state() in ("unused", "draining")
            if registered:
                lb.register()
            self.joined.append(lb)
            allowed = lb.health_wait_seconds()
            seconds = kinds.wait_healthy(lb, allowed)
            self.say(f"{service}: healthy in {lb.description} ({seconds:.1f}s; allowed {allowed:.0f}s)")
            if registered:
                steps.append((f"healthy in {lb.description} (allowed {allowed:.0f}s)", seconds))
        return steps

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()  # heartbeats stop before the hook is completed
        if exc is None:
            self.hold()
            hook = self._hook
            if hook is not None:
                hook.complete("CONTINUE")
                self.say(f"lifecycle hook {hook.name}: CONTINUE")
            return
        for lb in self.joined:
            _quietly(lb.deregister, f"deregistering from {lb.description}")
        if self.instance_id:  # on EC2: the deploy tool shows this as the reason
            reason = exc.lines[0] if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"
            _quietly(lambda: ec2.say_why_boot_failed(self.instance_id, self.region, reason),
                     "tagging the instance with why its boot failed")
        hook = self._hook
        if hook is None and self._lookup is not None:
            setup = _quietly(self._lookup.result, "reading the launch hook")
            hook = setup.launch_hook if setup is not None else None
        if hook is not None:
            _quietly(lambda: hook.complete("ABANDON"), f"completing {hook.name} with ABANDON")
            if isinstance(exc, AgentError):
                exc.lines = [*exc.lines, f"lifecycle hook {hook.name}: ABANDON (the group will replace "
                                         f"{self.instance_id})"]


class Drained:
    """Out of every load balancer while the body runs; back in (and healthy) after.

    Deregisters, waits for the load balancer's own drain time (bounded by
    `drain_limit`) so requests in flight finish, then yields; on the way out registers
    again and waits for health, so `agent restart` drops no request (unless the drain
    was cut short by `drain_limit`, which it says). A failed body, or `register_after`
    False (a stop), leaves the instance out.
    """

    def __init__(self, balancers: list[LoadBalancer], drain_limit: float | None, say: Say,
                 register_after: bool = True):
        self.balancers, self.limit, self.say, self.register_after = balancers, drain_limit, say, register_after

    def __enter__(self) -> Drained:
        for lb in self.balancers:
            lb.deregister()
            limit = lb.drain_seconds()
            if self.limit is not None:
                limit = min(limit, self.limit)
            drained = kinds.wait_drained(lb, limit)
            cut = "" if drained.complete else " (cut short: requests still in flight may fail)"
            self.say(f"deregistered from {lb.description}; drained in {drained.seconds:.1f}s "
                     f"(limit {limit:.0f}s){cut}")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self.register_after or kind is not None:
            return  # a failed restart stays out of the load balancer: better than errors
        for lb in self.balancers:
            lb.register()
            kinds.wait_healthy(lb)
            self.say(f"registered again with {lb.description}; healthy")


def _quietly(action: Callable[[], Any], what: str) -> Any:
    try:
        return action()
    except Exception as exc:  # already failing: report, but keep the first error
        log.error("%s failed too: %s", what, exc)
        return None
