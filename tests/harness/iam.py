"""An IAM-aware test double: does an identity policy allow a request?

moto does not check resources or conditions, so this evaluates what our policies use,
the way IAM does for a single identity policy: an explicit Deny wins; otherwise some
Allow statement must match the action (`Action`/`NotAction`, with `*` and `?`), the
resource (`Resource`/`NotResource`, ARN wildcards) and every condition (StringEquals,
StringLike, StringNotEquals, ArnLike, ArnEquals, Bool, each with `...IfExists`; a key
missing from the request fails a condition, as in IAM). Unknown operators raise, so a
policy using one is never judged by accident.

`requests_of(moto)` turns what the code under test sent to the moto server into
`Request`s: the IAM action, the resource ARN(s) the call touches, and the condition
keys IAM would see (a group's tags for lifecycle calls).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Mapping

from .moto_server import ACCOUNT_ID, RESOURCE_ID, RESOURCE_TAGS, MotoServer

@dataclass(frozen=True)
class Request:
    action: str                                    # "elasticloadbalancing:RegisterTargets"
    resources: tuple[str, ...] = ("*",)
    context: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)  # a tuple: a multi-valued key


def _listify(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _arn_like(pattern: str, value: str) -> bool:
    """ARN matching is per colon-separated part, each with wildcards."""
    p_parts, v_parts = pattern.split(":", 5), value.split(":", 5)
    return len(p_parts) == len(v_parts) and all(_like(p, v) for p, v in zip(p_parts, v_parts))


OPERATORS = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got != want,
    "StringLike": lambda want, got: _like(want, got),
    "ArnLike": lambda want, got: _arn_like(want, got),
    "ArnEquals": lambda want, got: want == got,
    "Bool": lambda want, got: want.lower() == got.lower(),
}


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]],
                     context: Mapping[str, str | tuple[str, ...]]) -> bool:
    for operator, tests in conditions.items():
        quantifier, _, name = operator.rpartition(":")   # ForAllValues: / ForAnyValue: on multi-valued keys
        base, if_exists = (name[:-8], True) if name.endswith("IfExists") else (name, False)
        if base not in OPERATORS or quantifier not in ("", "ForAllValues", "ForAnyValue"):
            raise ValueError(f"condition operator {operator} is not modelled by this test double")
        for key, wanted in tests.items():
            if key not in context:
                if if_exists or quantifier == "ForAllValues":  # IAM: ForAllValues holds for no values
                    continue
                return False
            got = context[key]
            values = list(got) if isinstance(got, tuple) else [got]
            negative = base.startswith("StringNot")

            def one(value: str) -> bool:
                results = [OPERATORS[base](w, value) for w in _listify(wanted)]
                return all(results) if negative else any(results)

            if quantifier == "ForAllValues":
                if not all(one(v) for v in values):
                    return False
            elif quantifier == "ForAnyValue":
                if not any(one(v) for v in values):
                    return False
            elif isinstance(got, tuple) or not one(values[0]):
                return False  # a plain operator on a multi-valued key does not match
    return True


def _matches(statement: Mapping[str, Any], request: Request, resource: str) -> bool:
    if "Action" in statement:
        if not any(_like(a.lower(), request.action.lower()) for a in _listify(statement["Action"])):
            return False
    elif any(_like(a.lower(), request.action.lower()) for a in _listify(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(r == "*" or _arn_like(r, resource) for r in _listify(statement["Resource"])):
            return False
    elif any(r == "*" or _arn_like(r, resource) for r in _listify(statement["NotResource"])):
        return False
    return _conditions_hold(statement.get("Condition", {}), request.context)


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    """True when `policy` allows `request` on every resource it touches."""
    statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
    for resource in request.resources:
        if any(s["Effect"] == "Deny" and _matches(s, request, resource) for s in statements):
            return False
        if not any(s["Effect"] == "Allow" and _matches(s, request, resource) for s in statements):
            return False
    return True


# -- what the code under test sent, as IAM sees it ------------------------------------------


def requests_of(moto: MotoServer, since: int = 0) -> list[Request]:
    """Every request the code under test made (from `since`, an index into
    `moto.requests`), as IAM requests."""
    return [to_request(moto, r.service, r.action, r.params) for r in moto.requests[since:]]


def to_request(moto: MotoServer, service: str, action: str, params: Mapping[str, Any]) -> Request:
    region, account = moto.region, ACCOUNT_ID
    name = f"{service}:{action}"  # SigV4 service names are IAM's action prefixes
    if action == "GetParametersByPath":
        return Request(name, (f"arn:aws:ssm:{region}:{account}:parameter{str(params['Path']).rstrip('/')}",))
    if action in ("RegisterTargets", "DeregisterTargets"):
        return Request(name, (str(params["TargetGroupArn"]),))
    if action in ("RegisterInstancesWithLoadBalancer", "DeregisterInstancesFromLoadBalancer"):
        return Request(name, (f"arn:aws:elasticloadbalancing:{region}:{account}:loadbalancer/"
                              f"{params['LoadBalancerName']}",))
    if service == "autoscaling" and params.get("AutoScalingGroupName"):
        group = str(params["AutoScalingGroupName"])
        tags = params.get(RESOURCE_TAGS, {})  # as the request found them
        requested = _request_tags(params)
        context: dict[str, str | tuple[str, ...]] = {
            **{f"autoscaling:ResourceTag/{k}": v for k, v in tags.items()},
            **{f"aws:ResourceTag/{k}": v for k, v in tags.items()},
            **{f"aws:RequestTag/{k}": v for k, v in requested.items()}}
        if requested:
            context["aws:TagKeys"] = tuple(requested)
        return Request(name, (f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:"
                              f"autoScalingGroupName/{group}",), context)
    if action in ("CreateOrUpdateTags", "DeleteTags"):
        group = str(params.get("Tags.member.1.ResourceId", ""))
        tags = params.get(RESOURCE_TAGS, {})
        requested = _request_tags(params)
        return Request(name, (f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:"
                              f"autoScalingGroupName/{group}",),
                       {**{f"aws:ResourceTag/{k}": v for k, v in tags.items()},
                        **{f"aws:RequestTag/{k}": v for k, v in requested.items()}})
    if action in ("ModifyListener", "CreateRule"):
        return Request(name, (str(params["ListenerArn"]),))
    if action in ("ModifyRule", "DeleteRule"):
        return Request(name, (str(params["RuleArn"]),))
    if service == "dynamodb" and action != "ListTables":
        return Request(name, (f"arn:aws:dynamodb:{region}:{account}:table/{params.get('TableName')}",))
    if action in ("CreateLaunchTemplateVersion", "DeleteLaunchTemplateVersions"):
        tags = params.get(RESOURCE_TAGS, {})
        return Request(name, (f"arn:aws:ec2:{region}:{account}:launch-template/{params.get(RESOURCE_ID)}",),
                       {f"aws:ResourceTag/{k}": v for k, v in tags.items()})
    if action == "CreateTags":
        keys = tuple(v for k, v in params.items() if k.startswith("Tag.") and k.endswith(".Key"))
        instances = [v for k, v in params.items() if k.startswith("ResourceId.")]
        tags = moto.instance_tags(instances[0]) if instances else {}
        return Request(name, tuple(f"arn:aws:ec2:{region}:{account}:instance/{i}" for i in instances),
                       {"aws:TagKeys": keys, **{f"ec2:ResourceTag/{k}": v for k, v in tags.items()}})
    return Request(name)  # reads: no resource scoping


def _request_tags(params: Mapping[str, Any]) -> dict[str, str]:
    """Tags a query-protocol request sets (Tags.member.N.Key/Value)."""
    tags = {}
    for key, value in params.items():
        if key.startswith("Tags.member.") and key.endswith(".Key"):
            tags[str(value)] = str(params.get(key[:-4] + ".Value", ""))
    return tags
