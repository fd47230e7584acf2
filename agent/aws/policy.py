"""The least-privilege IAM policy of one service's instance role, from services.yaml.

One instance profile per service (the deploy tool sets it per Auto Scaling group): an
instance of `shop-api` can read `shop-api`'s config vars and no other service's, can
register only with `shop-api`'s load balancers, and can complete only the lifecycle
hooks of groups tagged for `shop-api` in its environment. A compromised service then
reaches its own resources, not every service's.

Pure: a function of the catalog and where (account, region) the policy is for. The
actions listed are exactly the calls the agent makes (the integration tests check each
call against this policy with an IAM-aware test double, and that another service's
are denied).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.errors import BadInput

if TYPE_CHECKING:
    from agent.config.catalog import Catalog

READ_ANYWHERE = [  # AWS offers no resource scoping for these reads
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeInstanceHealth",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "autoscaling:DescribeLifecycleHooks",
    "autoscaling:DescribeAutoScalingGroups",
    "ec2:DescribeTags",
]


def instance_role(catalog: Catalog, mode: str, service: str, account: str = "*", region: str = "*",
                  kms_key: str | None = None) -> dict[str, Any]:
    """The policy document for `service` in `mode` (staging or production)."""
    if mode not in catalog.environments:
        raise BadInput(f"no environment {mode!r} in {catalog.path}; expected one of: "
                       f"{', '.join(catalog.environments) or '(none declared)'}")
    if service not in catalog.services:
        raise BadInput(f"no service {service!r} in {catalog.path}; expected one of: {', '.join(catalog.services)}")
    path = f"{catalog.environments[mode].config_path.rstrip('/')}/{service}"
    statements: list[dict[str, Any]] = [
        {"Sid": "ConfigVarsOfThisService", "Effect": "Allow", "Action": "ssm:GetParametersByPath",
         "Resource": [f"arn:aws:ssm:{region}:{account}:parameter{path}",
                      f"arn:aws:ssm:{region}:{account}:parameter{path}/*"]},
        {"Sid": "DecryptConfigVarsThroughSsm", "Effect": "Allow", "Action": "kms:Decrypt",
         "Resource": kms_key or f"arn:aws:kms:{region}:{account}:key/*",
         "Condition": {"StringLike": {"kms:ViaService": f"ssm.{region}.amazonaws.com"}}},
        {"Sid": "ReadLoadBalancersAndGroups", "Effect": "Allow", "Action": READ_ANYWHERE, "Resource": "*"},
    ]
    lb = catalog.services[service].load_balancer.get(mode)
    if lb is not None and lb.kind in ("target_group", "target_groups"):
        statements.append({
            "Sid": "RegisterOnlyWithThisServicesTargetGroups", "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            "Resource": [f"arn:aws:elasticloadbalancing:{region}:{account}:targetgroup/{name}/*" for name in lb.names]})
    elif lb is not None:
        statements.append({
            "Sid": "RegisterOnlyWithThisServicesClassicElb", "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                       "elasticloadbalancing:DeregisterInstancesFromLoadBalancer"],
            "Resource": [f"arn:aws:elasticloadbalancing:{region}:{account}:loadbalancer/{name}" for name in lb.names]})
    statements.append({
        "Sid": "SayWhyABootFailed", "Effect": "Allow", "Action": "ec2:CreateTags",
        "Resource": f"arn:aws:ec2:{region}:{account}:instance/*",
        # its own service's instances only, and no tag but the one the deploy tool reads
        "Condition": {"StringEquals": {"ec2:ResourceTag/unified:mode": mode,
                                       "ec2:ResourceTag/unified:service": service},
                      "ForAllValues:StringEquals": {"aws:TagKeys": ["unified:boot-error"]}}})
    statements.append({
        "Sid": "CompleteOnlyThisServicesLifecycleHooks", "Effect": "Allow",
        "Action": ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
        "Resource": f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/*",
        # the groups' tags, which the instance role cannot change (no CreateOrUpdateTags)
        "Condition": {"StringEquals": {"autoscaling:ResourceTag/unified:mode": mode,
                                       "autoscaling:ResourceTag/unified:service": service}}})
    return {"Version": "2012-10-17", "Statement": statements}
