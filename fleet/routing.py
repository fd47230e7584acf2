"""The ALB's routes to a service: the listener actions and rules that forward to its
target groups, their weights, and the candidate route of a deploy.

A blue/green pair is two target groups behind one forward action, weighted; the live
group is the one with the weight. The switch moves the whole weight in one call per
route (ModifyListener or ModifyRule), so each route flips atomically. The candidate
route is a rule at the lowest free priority, which must come before the service's own
rule (a listener's default action comes after every rule), that forwards only requests
carrying `X-Unified-Candidate: <env>.<service>.<deploy id>` to the idle group: the tool's
probes reach the new version, customers cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.errors import BadInput
from fleet import aws, names


@dataclass(frozen=True)
class Route:
    """One forward action to a service's target groups."""

    listener_arn: str
    rule_arn: str | None              # None: the listener's default action
    weights: dict[str, int]           # target group ARN -> weight
    priority: str = "default"
    other_actions: tuple[dict[str, Any], ...] = ()  # kept as they are (authenticate, ...)

    @property
    def where(self) -> str:
        return "default action" if self.rule_arn is None else f"rule {self.priority}"


@dataclass(frozen=True)
class LoadBalancer:
    arn: str
    dns_name: str
    listeners: tuple[dict[str, Any], ...]


def load_balancer(name: str) -> LoadBalancer:
    client = aws.client("elbv2")
    found = aws.call(f"finding the load balancer {name}", client.describe_load_balancers,
                     Names=[name])["LoadBalancers"]
    arn = found[0]["LoadBalancerArn"]
    listeners = aws.call(f"reading the listeners of {name}", client.describe_listeners,
                         LoadBalancerArn=arn)["Listeners"]
    return LoadBalancer(arn, found[0].get("DNSName", ""), tuple(listeners))


def target_group_arns(group_names: list[str]) -> dict[str, str]:
    """name -> ARN; BadInput naming every group that does not exist."""
    client = aws.client("elbv2")
    arns: dict[str, str] = {}
    missing = []
    for name in group_names:
        try:
            found = aws.call(f"finding the target group {name}", client.describe_target_groups, Names=[name])
            arns[name] = found["TargetGroups"][0]["TargetGroupArn"]
        except aws.AwsError as exc:
            if exc.code != "TargetGroupNotFound":
                raise
            missing.append(name)
    if missing:
        raise BadInput(f"target group(s) {', '.join(missing)} not found")
    return arns


def _forwards(actions: list[dict[str, Any]]) -> tuple[dict[str, int], tuple[dict[str, Any], ...]]:
    weights: dict[str, int] = {}
    others = []
    for action in actions:
        if action.get("Type") != "forward":
            others.append(action)
            continue
        config = action.get("ForwardConfig", {}).get("TargetGroups")
        if config:
            weights.update({t["TargetGroupArn"]: int(t.get("Weight", 1)) for t in config})
        elif action.get("TargetGroupArn"):
            weights[action["TargetGroupArn"]] = 1
    return weights, tuple(others)


def routes_to(lb: LoadBalancer, arns: set[str]) -> list[Route]:
    """Every route of the load balancer that forwards to one of `arns`."""
    routes = []
    for listener in lb.listeners:
        weights, others = _forwards(listener.get("DefaultActions", []))
        if set(weights) & arns:
            routes.append(Route(listener["ListenerArn"], None, weights, "default", others))
        for rule in _rules(listener["ListenerArn"]):
            if rule.get("IsDefault"):
                continue
            weights, others = _forwards(rule.get("Actions", []))
            if set(weights) & arns and not _is_candidate(rule):
                routes.append(Route(listener["ListenerArn"], rule["RuleArn"], weights, rule["Priority"], others))
    return routes


def _rules(listener_arn: str) -> list[dict[str, Any]]:
    """Every rule of a listener, all pages (a listener may hold more than one page)."""
    paginator = aws.client("elbv2").get_paginator("describe_rules")
    pages = aws.call("reading the listener rules", lambda: list(paginator.paginate(ListenerArn=listener_arn)))
    return [rule for page in pages for rule in page.get("Rules", [])]


def _is_candidate(rule: dict[str, Any]) -> bool:
    return any(c.get("Field") == "http-header" and
               c.get("HttpHeaderConfig", {}).get("HttpHeaderName", "").lower() == names.CANDIDATE_HEADER.lower()
               for c in rule.get("Conditions", []))


def candidate_rules(lb: LoadBalancer) -> list[tuple[str, str]]:
    """(rule ARN, header value) of every candidate route left on the load balancer."""
    found = []
    for listener in lb.listeners:
        for rule in _rules(listener["ListenerArn"]):
            if _is_candidate(rule):
                values = [v for c in rule.get("Conditions", []) for v in c.get("HttpHeaderConfig", {}).get("Values", [])]
                found.append((rule["RuleArn"], values[0] if values else ""))
    return found


def set_weights(route: Route, weights: dict[str, int]) -> None:
    """Put the whole weight where `weights` says, in one call (atomic for the route)."""
    forward = {"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights.items()]}}
    actions = [*route.other_actions, forward]
    client = aws.client("elbv2")
    if route.rule_arn is None:
        aws.call("switching the listener's default action", client.modify_listener,
                 ListenerArn=route.listener_arn, DefaultActions=actions)
    else:
        aws.call(f"switching listener rule {route.priority}", client.modify_rule, RuleArn=route.rule_arn,
                 Actions=actions)


def add_candidate(route: Route, value: str, target_group_arn: str) -> str:
    """A rule at the lowest free priority of the route's listener, before the route's
    own rule (BadInput when no free priority comes before it): requests with the
    candidate header's `value` go to `target_group_arn`. Its ARN."""
    client = aws.client("elbv2")
    rules = _rules(route.listener_arn)
    taken = {int(r["Priority"]) for r in rules if str(r.get("Priority", "")).isdigit()}
    priority = next(p for p in range(1, 50001) if p not in taken)
    if route.rule_arn is not None and priority > int(route.priority):
        raise BadInput(f"no free rule priority before the service's rule {route.priority} on its listener: "
                       "free one (priorities 1 and up) for the candidate route")
    made = aws.call("adding the candidate route", client.create_rule, ListenerArn=route.listener_arn,
                    Priority=priority,
                    Conditions=[{"Field": "http-header", "HttpHeaderConfig": {
                        "HttpHeaderName": names.CANDIDATE_HEADER, "Values": [value]}}],
                    Actions=[{"Type": "forward", "TargetGroupArn": target_group_arn}])
    return str(made["Rules"][0]["RuleArn"])


def delete_rule(rule_arn: str) -> None:
    try:
        aws.call("removing the candidate route", aws.client("elbv2").delete_rule, RuleArn=rule_arn)
    except aws.AwsError as exc:
        if exc.code != "RuleNotFound":
            raise


def target_health(target_group_arn: str, instance_ids: list[str]) -> dict[str, tuple[str, str]]:
    """instance id -> (state, reason) for exactly these instances."""
    client = aws.client("elbv2")
    found = aws.call("reading target health", client.describe_target_health, TargetGroupArn=target_group_arn)
    health = {d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason", ""))
              for d in found.get("TargetHealthDescriptions", [])}
    return {i: health.get(i, ("unused", "not registered")) for i in instance_ids}


def registered(target_group_arn: str) -> set[str]:
    """The instance ids registered in a target group (leaving ones excluded)."""
    client = aws.client("elbv2")
    found = aws.call("reading target health", client.describe_target_health, TargetGroupArn=target_group_arn)
    return {d["Target"]["Id"] for d in found.get("TargetHealthDescriptions", [])
            if d["TargetHealth"]["State"] not in ("draining", "unused")}
