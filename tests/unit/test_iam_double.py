"""The IAM-aware test double judges like IAM on what our policies use: if it were
lenient, the per-service policy tests would prove nothing."""

from __future__ import annotations

import pytest

from tests.harness.iam import Request, allowed

ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/prod-web/0123"


def policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: str | list[str], resource: str | list[str] = "*", **condition: dict) -> dict:
    statement = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def test_nothing_is_allowed_unless_a_statement_allows_it() -> None:
    assert not allowed(policy(), Request("ec2:DescribeTags"))
    assert not allowed(policy(allow("ec2:DescribeInstances")), Request("ec2:DescribeTags"))
    assert allowed(policy(allow("ec2:Describe*")), Request("ec2:DescribeTags"))
    assert allowed(policy(allow("EC2:describetags")), Request("ec2:DescribeTags"))  # actions ignore case


def test_resources_match_arn_wildcards_part_by_part() -> None:
    p = policy(allow("elasticloadbalancing:RegisterTargets",
                     "arn:aws:elasticloadbalancing:*:123456789012:targetgroup/prod-web/*"))
    assert allowed(p, Request("elasticloadbalancing:RegisterTargets", (ARN,)))
    assert not allowed(p, Request("elasticloadbalancing:RegisterTargets", (ARN.replace("prod-web", "prod-webx"),)))
    assert not allowed(p, Request("elasticloadbalancing:RegisterTargets", (ARN.replace("123456789012", "999"),)))
    # every resource a request touches must be allowed
    assert not allowed(p, Request("elasticloadbalancing:RegisterTargets", (ARN, ARN.replace("web", "api"))))


def test_an_explicit_deny_wins() -> None:
    p = policy(allow("ssm:*"), {"Effect": "Deny", "Action": "ssm:PutParameter", "Resource": "*"})
    assert allowed(p, Request("ssm:GetParametersByPath"))
    assert not allowed(p, Request("ssm:PutParameter"))


@pytest.mark.parametrize(("context", "expected"), [
    ({"autoscaling:ResourceTag/unified:service": "web"}, True),
    ({"autoscaling:ResourceTag/unified:service": "api"}, False),
    ({}, False),  # a key the request lacks fails the condition
])
def test_string_conditions(context: dict, expected: bool) -> None:
    p = policy(allow("autoscaling:CompleteLifecycleAction",
                     StringEquals={"autoscaling:ResourceTag/unified:service": "web"}))
    assert allowed(p, Request("autoscaling:CompleteLifecycleAction", context=context)) is expected


def test_for_all_values_on_a_multi_valued_key() -> None:
    p = policy(allow("ec2:CreateTags", **{"ForAllValues:StringEquals": {"aws:TagKeys": ["unified:boot-error"]}}))
    assert allowed(p, Request("ec2:CreateTags", context={"aws:TagKeys": ("unified:boot-error",)}))
    assert not allowed(p, Request("ec2:CreateTags", context={"aws:TagKeys": ("unified:boot-error", "Name")}))
    assert not allowed(p, Request("ec2:CreateTags", context={"aws:TagKeys": ("unified:service",)}))


def test_an_operator_it_does_not_model_is_refused_not_guessed() -> None:
    p = policy(allow("ec2:CreateTags", NumericLessThan={"ec2:Size": "3"}))
    with pytest.raises(ValueError, match="not modelled"):
        allowed(p, Request("ec2:CreateTags", context={"ec2:Size": "1"}))
