"""Test harness: the fake outside world the agent talks to.

``moto_server`` runs moto on loopback (plus the Auto Scaling lifecycle calls moto lacks,
fault injection and a per-action call log), ``imds`` emulates IMDSv2 with its token
rules, and ``fixtures`` exposes both to pytest. Nothing here is imported by the agent:
the agent reaches these servers only through ``AWS_ENDPOINT_URL`` and
``AWS_EC2_METADATA_SERVICE_ENDPOINT``, exactly as it would reach AWS.
"""
