"""Test harness: the fake outside world the agent and `unified` talk to.

``moto_server`` runs moto on loopback (plus the Auto Scaling lifecycle calls moto lacks,
fault injection and a per-action call log) and ``moto_fleet`` patches moto's Auto
Scaling, images and launch templates for the deploy tests; ``imds`` emulates IMDSv2
with its token rules; ``haproxy`` and ``alb`` stand in for a target group and an ALB
listener; ``fleet`` turns every instance moto launches into a real agent, and
``deploy_env`` seeds an environment's fixed parts for ``unified``; ``load`` drives wrk;
``iam`` judges calls against an IAM policy; ``fixtures`` exposes them to pytest.
Nothing here is imported by the agent or by ``unified``: they reach these servers only
through ``AWS_ENDPOINT_URL`` and ``AWS_EC2_METADATA_SERVICE_ENDPOINT``, exactly as they
would reach AWS.
"""
