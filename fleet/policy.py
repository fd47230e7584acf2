"""The least-privilege IAM policy of whoever runs `unified` for one environment (an
operator's role, a CI job's role), from services.yaml.

Writes are scoped to what the tool makes for this environment: groups named `ENV.*`
and tagged (on creation, and so afterwards) with its `unified:mode`, the versions of
its launch template, the rules and listeners of its load balancer, its table. Two
are not: `ec2:RunInstances` (on `*`: creating a group launches instances, as the
caller) and `iam:PassRole` (any role, but only to EC2: the services' instance roles).
Reads are on `*` where AWS offers no scoping. The integration tests check every call the tool made
against this policy with the IAM-aware test double.
"""

from __future__ import annotations

from typing import Any

from agent.config.catalog import Catalog, Fleet
from agent.errors import BadInput

READS = [
    "ec2:DescribeImages", "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSubnets", "ec2:DescribeInstances",
    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScheduledActions",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "iam:GetInstanceProfile",
]


def deployer(catalog: Catalog, env: str, account: str = "*", region: str = "*") -> dict[str, Any]:
    environment = catalog.environments.get(env)
    if environment is None or environment.fleet is None:
        raise BadInput(f"no environment {env!r} with a fleet section in {catalog.path}")
    fleet: Fleet = environment.fleet
    lb = fleet.load_balancer
    mode = {"aws:ResourceTag/unified:mode": env}
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Read", "Effect": "Allow", "Action": READS, "Resource": "*"},
        {"Sid": "VersionsOfThisEnvironmentsLaunchTemplate", "Effect": "Allow",
         "Action": ["ec2:CreateLaunchTemplateVersion", "ec2:DeleteLaunchTemplateVersions"],
         "Resource": f"arn:aws:ec2:{region}:{account}:launch-template/*", "Condition": {"StringEquals": mode}},
        # Creating a group from the launch template launches instances with it, as the
        # caller, with the services' instance roles.
        {"Sid": "LaunchFromTheTemplate", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"},
        {"Sid": "PassTheServicesInstanceRoles", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": f"arn:aws:iam::{account}:role/*",
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "CreateThisEnvironmentsGroups", "Effect": "Allow",
         "Action": ["autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags"],
         "Resource": f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{env}.*",
         "Condition": {"StringEquals": {"aws:RequestTag/unified:mode": env}}},
        {"Sid": "ChangeThisEnvironmentsGroups", "Effect": "Allow",
         "Action": ["autoscaling:UpdateAutoScalingGroup", "autoscaling:DeleteAutoScalingGroup",
                    "autoscaling:DeleteTags", "autoscaling:CreateOrUpdateTags",
                    "autoscaling:PutScheduledUpdateGroupAction", "autoscaling:DeleteScheduledAction"],
         "Resource": f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{env}.*",
         "Condition": {"StringEquals": mode}},
        {"Sid": "RouteThroughThisEnvironmentsLoadBalancer", "Effect": "Allow",
         "Action": ["elasticloadbalancing:ModifyListener", "elasticloadbalancing:CreateRule"],
         "Resource": f"arn:aws:elasticloadbalancing:{region}:{account}:listener/app/{lb}/*"},
        {"Sid": "ItsRules", "Effect": "Allow",
         "Action": ["elasticloadbalancing:ModifyRule", "elasticloadbalancing:DeleteRule"],
         "Resource": f"arn:aws:elasticloadbalancing:{region}:{account}:listener-rule/app/{lb}/*"},
        {"Sid": "LocksAndHistory", "Effect": "Allow",
         "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem",
                    "dynamodb:Query", "dynamodb:DescribeTable"],
         "Resource": f"arn:aws:dynamodb:{region}:{account}:table/{fleet.table}"},
    ]}
