"""Verifying a new group before any customer request reaches it.

1. Every instance the group launches must get InService (its agent completed the launch
   hook with CONTINUE). An instance that is terminated instead (its agent ABANDONed, or
   the hook timed out) fails the deploy at once, with the agent's reason: the agent tags
   its instance `unified:boot-error` before it abandons (the one EC2 write its role may
   make, docs/deploy.md).
2. The target group must say healthy for exactly the new instance ids.
3. Through the candidate route (the deploy's header), every verify path must answer 2xx
   `count` times in a row: an ALB fails open when all its targets are unhealthy, so
   health alone proves nothing.

Every wait has a deadline and says what it waits for on stderr.
"""

from __future__ import annotations

from typing import Callable

from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from fleet import aws, groups, names, routing

Say = Callable[[str], None]


class VerifyFailed(AgentError):
    """The new version is not fit to serve. Before the switch nothing is switched (exit 1);
    raised by the probes through the live route after it, the new version serves (exit 5)."""


def boot_error(instance_id: str) -> str:
    """Why an instance's agent gave up (its `unified:boot-error` tag), or what EC2 says."""
    ec2 = aws.client("ec2")
    try:
        found = aws.call(f"reading instance {instance_id}", ec2.describe_instances, InstanceIds=[instance_id])
    except aws.AwsError as exc:
        return f"(could not read the instance: {exc.code})"
    for reservation in found.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if tags.get(names.BOOT_ERROR_TAG):
                return repr(tags[names.BOOT_ERROR_TAG])[1:-1]  # untrusted: shown escaped, one line
            state = instance.get("StateReason", {}).get("Message") or instance.get("State", {}).get("Name", "?")
            return f"no reason from its agent (instance {state}; the launch hook may have timed out)"
    return "no reason from its agent (the instance is gone)"


def wait_in_service(name: str, desired: int, deadline: Deadline, say: Say, service: str) -> list[str]:
    """The ids of `desired` InService instances, or VerifyFailed naming an instance that
    was terminated on the way and its agent's reason."""
    seen: set[str] = set()
    failed: list[str] = []

    def look() -> groups.Group | None:
        group = groups.group(name)
        if group is None:
            return None
        current = {i.instance_id for i in group.instances if not i.lifecycle_state.startswith("Terminat")}
        failed.extend(sorted(seen - current - set(failed)))
        seen.update(current)
        ready = len(group.in_service)
        booting = ", ".join(f"{i.instance_id} {i.lifecycle_state}" for i in group.instances
                            if i.lifecycle_state != "InService")
        say(f"{service}: {ready}/{desired} instances in service" + (f" ({booting})" if booting else ""))
        return group

    # quick at first (a fast boot is seen at once), then every few seconds (a slow one
    # costs a call per poll, and real instances take minutes)
    group = poll(look, lambda g: bool(failed) or (g is not None and len(g.in_service) >= desired), deadline,
                 Backoff(0.2, 1.3, 3.0))
    if failed:
        instance = failed[0]
        raise VerifyFailed(f"{service}: instance {instance} failed to boot: {boot_error(instance)}")
    if group is None or len(group.in_service) < desired:
        have = len(group.in_service) if group else 0
        raise VerifyFailed(f"{service}: {have}/{desired} instances in service after {deadline.seconds:.0f}s")
    return [i.instance_id for i in group.in_service][:desired]


def wait_healthy(target_group_arn: str, target_group: str, instance_ids: list[str], deadline: Deadline,
                 say: Say, service: str) -> None:
    def look() -> dict[str, tuple[str, str]]:
        health = routing.target_health(target_group_arn, instance_ids)
        healthy = sum(1 for state, _ in health.values() if state == "healthy")
        say(f"{service}: {healthy}/{len(instance_ids)} healthy in target group {target_group}")
        return health

    health = poll(look, lambda h: all(s == "healthy" for s, _ in h.values()), deadline, Backoff(0.5, 1.5, 3.0))
    sick = {i: h for i, h in health.items() if h[0] != "healthy"}
    if sick:
        instance, (state, reason) = next(iter(sorted(sick.items())))
        raise VerifyFailed(f"{service}: instance {instance} is {state} in target group {target_group} ({reason}); "
                           f"its agent: {boot_error(instance)}")


def probe(url: str, paths: tuple[str, ...], count: int, header: str | None, deadline: Deadline, say: Say,
          service: str) -> None:
    """Each path answers 2xx `count` times in a row (requests carry the candidate header
    when `header` is given), or VerifyFailed with the last answer."""
    import requests
    import urllib3
    session = requests.Session()
    session.trust_env = False
    headers = {names.CANDIDATE_HEADER: header} if header else {}
    for path in paths:
        streak = [0]
        last = ["no answer"]

        def attempt() -> int:
            try:  # at least half a second: the last try lands on the deadline itself
                answer = session.get(url.rstrip("/") + path, headers=headers,
                                     timeout=max(0.5, min(5.0, deadline.remaining())))
                last[0] = f"HTTP {answer.status_code}"
                streak[0] = streak[0] + 1 if 200 <= answer.status_code < 300 else 0
            except (requests.RequestException, ValueError, urllib3.exceptions.HTTPError) as exc:
                last[0] = exc.__class__.__name__
                streak[0] = 0
            return streak[0]

        # no pause after a 2xx (a streak is asked in a row); backing off after anything else
        got = poll(attempt, lambda n: n >= count, deadline, Backoff(0.1, 1.5, 1.0),
                   hint=lambda n: 0.0 if n > 0 else None)
        if got < count:
            hint = "" if last[0].startswith("HTTP") else f"; is {url} reachable from here? (--probe-url)"
            raise VerifyFailed(f"{service}: GET {path} through the {'candidate' if header else 'live'} route did "
                               f"not answer 2xx {count} times in a row within {deadline.seconds:.0f}s "
                               f"(last: {last[0]}{hint})")
        say(f"{service}: GET {path}: {count} answers 2xx in a row" + (" (candidate route)" if header else ""))
    session.close()
