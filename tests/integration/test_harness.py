"""Tests of the test harness itself: if these fail, no agent test result means anything.

They also pin the moto behaviours the harness documents (ASG tags, target health), so a
moto upgrade that changes them fails here first rather than inside an agent test.
"""

from __future__ import annotations

import subprocess
import sys
import time

import botocore.utils
import pytest
import requests
from botocore.exceptions import ClientError

from tests.harness.fixtures import ImdsFactory
from tests.harness.imds import TOKEN_HEADER, TTL_HEADER, ImdsEmulator, InstanceIdentity
from tests.harness.moto_server import ACCOUNT_ID, ApiCall, MotoServer, seed_instance

# Harmless when tests/conftest.py registers the plugin too: pytest loads it once.
pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.integration

TOKEN_UUID = "0b8a5b4e-1f0e-4a47-9d5c-2f3b8f6c1a2d"  # lifecycle tokens are UUIDs
SERVICE_TAGS = {"unified:mode": "staging", "unified:service": "api-web"}


def token(emulator: ImdsEmulator, ttl: int = 60) -> str:
    reply = requests.put(
        f"{emulator.url}/latest/api/token", headers={TTL_HEADER: str(ttl)}, timeout=2
    )
    reply.raise_for_status()
    return reply.text


def get(
    emulator: ImdsEmulator, path: str, tok: str | None = None, timeout: float = 2
) -> requests.Response:
    headers = {TOKEN_HEADER: tok} if tok else {}
    return requests.get(f"{emulator.url}/latest/{path}", headers=headers, timeout=timeout)


@pytest.fixture
def plain_imds(imds: ImdsFactory) -> ImdsEmulator:
    return imds(InstanceIdentity("i-0123456789abcdef0", tags=dict(SERVICE_TAGS)))


# --- IMDSv2 token rules -----------------------------------------------------------------


def test_metadata_needs_a_token(plain_imds: ImdsEmulator) -> None:
    assert get(plain_imds, "meta-data/instance-id").status_code == 401  # IMDSv1 refused
    assert get(plain_imds, "meta-data/instance-id", "not-a-token").status_code == 401
    reply = get(plain_imds, "meta-data/instance-id", token(plain_imds))
    assert (reply.status_code, reply.text) == (200, "i-0123456789abcdef0")


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "1.5", "sixty"])
def test_token_ttl_must_be_1_to_21600(plain_imds: ImdsEmulator, ttl: str | None) -> None:
    headers = {} if ttl is None else {TTL_HEADER: ttl}
    reply = requests.put(f"{plain_imds.url}/latest/api/token", headers=headers, timeout=2)
    assert reply.status_code == 400


def test_token_put_through_a_proxy_is_forbidden(plain_imds: ImdsEmulator) -> None:
    headers = {TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.1"}
    reply = requests.put(f"{plain_imds.url}/latest/api/token", headers=headers, timeout=2)
    assert reply.status_code == 403


def test_token_expires_after_its_ttl(plain_imds: ImdsEmulator) -> None:
    tok = token(plain_imds, ttl=1)
    assert get(plain_imds, "meta-data/instance-id", tok).status_code == 200
    time.sleep(1.1)
    assert get(plain_imds, "meta-data/instance-id", tok).status_code == 401


def test_botocore_imds_client_works_against_the_emulator(plain_imds: ImdsEmulator) -> None:
    fetcher = botocore.utils.InstanceMetadataRegionFetcher(
        timeout=1, num_attempts=1, base_url=plain_imds.url
    )
    assert fetcher.retrieve_region() == "us-east-1"
    put, get_ = plain_imds.requests
    assert (put.method, put.path, put.status) == ("PUT", "/latest/api/token", 200)
    assert (get_.method, get_.status, get_.had_token) == ("GET", 200, True)


def test_request_log_never_holds_a_token(plain_imds: ImdsEmulator) -> None:
    tok = token(plain_imds)
    assert get(plain_imds, "meta-data/instance-id", tok).status_code == 200
    assert tok not in repr(plain_imds.requests)
    assert [r.had_token for r in plain_imds.requests] == [False, True]


# --- metadata paths ---------------------------------------------------------------------


def test_tags_from_moto_reach_imds_live(moto_server: MotoServer, imds: ImdsFactory) -> None:
    seeded = seed_instance(moto_server, tags={**SERVICE_TAGS, "has space": "x"})
    emulator = imds(seeded)
    tok = token(emulator)
    keys = get(emulator, "meta-data/tags/instance", tok).text.split("\n")
    assert sorted(keys) == ["unified:mode", "unified:service"]  # "has space" is not servable
    assert get(emulator, "meta-data/tags/instance/unified:service", tok).text == "api-web"

    ec2 = moto_server.client("ec2")
    ec2.create_tags(
        Resources=[seeded.instance_id], Tags=[{"Key": "unified:mode", "Value": "production"}]
    )
    assert get(emulator, "meta-data/tags/instance/unified:mode", tok).text == "production"
    assert get(emulator, "meta-data/tags/instance/nope", tok).status_code == 404


def test_tags_off_means_404(plain_imds: ImdsEmulator) -> None:
    plain_imds.tags_enabled = False
    tok = token(plain_imds)
    assert get(plain_imds, "meta-data/tags/instance", tok).status_code == 404
    assert get(plain_imds, "meta-data/tags/instance/unified:mode", tok).status_code == 404
    assert "tags/" not in get(plain_imds, "meta-data/", tok).text.split("\n")


def test_identity_placement_and_listing(moto_server: MotoServer, imds: ImdsFactory) -> None:
    seeded = seed_instance(moto_server, tags=SERVICE_TAGS)
    emulator = imds(seeded)
    tok = token(emulator)
    document = get(emulator, "dynamic/instance-identity/document", tok).json()
    assert document["instanceId"] == seeded.instance_id
    assert (document["region"], document["availabilityZone"]) == ("us-east-1", "us-east-1a")
    assert (document["accountId"], document["privateIp"]) == (ACCOUNT_ID, seeded.private_ip)
    assert get(emulator, "meta-data/placement/region", tok).text == "us-east-1"
    assert get(emulator, "meta-data/placement/availability-zone", tok).text == "us-east-1a"
    listing = get(emulator, "meta-data/", tok).text.split("\n")
    assert {"instance-id", "placement/", "tags/"} <= set(listing)
    assert "autoscaling/" not in listing  # not in a group
    assert get(emulator, "meta-data/no-such-thing", tok).status_code == 404


def test_spot_notice_and_lifecycle_state(moto_server: MotoServer, imds: ImdsFactory) -> None:
    seeded = seed_instance(moto_server, tags=SERVICE_TAGS, auto_scaling_group="asg-web")
    emulator = imds(seeded)
    tok = token(emulator)
    assert get(emulator, "meta-data/spot/instance-action", tok).status_code == 404
    assert get(emulator, "meta-data/autoscaling/target-lifecycle-state", tok).text == "InService"

    emulator.set_spot_action("terminate", in_seconds=120)
    emulator.set_lifecycle_state("Terminated")
    notice = get(emulator, "meta-data/spot/instance-action", tok).json()
    assert notice["action"] == "terminate" and notice["time"].endswith("Z")
    assert get(emulator, "meta-data/autoscaling/target-lifecycle-state", tok).text == "Terminated"


# --- IMDS faults ------------------------------------------------------------------------


def test_imds_fault_window_then_recovery(plain_imds: ImdsEmulator) -> None:
    tok = token(plain_imds)
    plain_imds.fail_for(0.3, status=503)
    assert get(plain_imds, "meta-data/instance-id", tok).status_code == 503
    time.sleep(0.35)
    assert get(plain_imds, "meta-data/instance-id", tok).status_code == 200


def test_imds_hang_makes_clients_time_out(plain_imds: ImdsEmulator) -> None:
    tok = token(plain_imds)
    plain_imds.hang_for(0.5)
    with pytest.raises(requests.Timeout):
        get(plain_imds, "meta-data/instance-id", tok, timeout=0.1)
    time.sleep(0.5)
    assert get(plain_imds, "meta-data/instance-id", tok).status_code == 200


# --- Auto Scaling lifecycle calls -------------------------------------------------------


def test_complete_lifecycle_action_is_recorded_once(moto_server: MotoServer) -> None:
    seeded = seed_instance(moto_server, tags=SERVICE_TAGS, auto_scaling_group="asg-web")
    autoscaling = moto_server.client("autoscaling")
    args = {
        "AutoScalingGroupName": "asg-web",
        "LifecycleHookName": "launching",
        "InstanceId": seeded.instance_id,
        "LifecycleActionResult": "CONTINUE",
    }
    autoscaling.complete_lifecycle_action(**args)
    [record] = moto_server.lifecycle_actions
    assert record["action"] == "CompleteLifecycleAction"
    assert {k: record[k] for k in args} == args and record["LifecycleActionToken"] is None

    with pytest.raises(ClientError) as again:  # AWS: the action is gone once completed
        autoscaling.complete_lifecycle_action(**args)
    assert again.value.response["Error"]["Code"] == "ValidationError"
    assert len(moto_server.lifecycle_actions) == 1


@pytest.mark.parametrize(
    "override",
    [{"LifecycleHookName": "no-such-hook"}, {"InstanceId": "i-00000000000000000"}],
)
def test_complete_lifecycle_action_validates_like_aws(
    moto_server: MotoServer, override: dict[str, str]
) -> None:
    seeded = seed_instance(moto_server, auto_scaling_group="asg-web")
    args = {
        "AutoScalingGroupName": "asg-web",
        "LifecycleHookName": "launching",
        "InstanceId": seeded.instance_id,
        "LifecycleActionResult": "ABANDON",
        **override,
    }
    with pytest.raises(ClientError) as refused:
        moto_server.client("autoscaling").complete_lifecycle_action(**args)
    error = refused.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
        "ValidationError",
        400,
    )
    assert moto_server.lifecycle_actions == []


def test_heartbeat_is_recorded(moto_server: MotoServer) -> None:
    seed_instance(moto_server, auto_scaling_group="asg-web")
    moto_server.client("autoscaling").record_lifecycle_action_heartbeat(
        AutoScalingGroupName="asg-web",
        LifecycleHookName="terminating",
        LifecycleActionToken=TOKEN_UUID,
    )
    [record] = moto_server.lifecycle_actions
    assert record["action"] == "RecordLifecycleActionHeartbeat"
    assert (record["LifecycleActionToken"], record["LifecycleActionResult"]) == (TOKEN_UUID, None)


# --- throttling and the call log --------------------------------------------------------


def test_throttling_is_absorbed_by_standard_retries(moto_server: MotoServer) -> None:
    seeded = seed_instance(moto_server, target_group="stg-api-web")
    moto_server.inject_throttling("RegisterTargets", 1)
    elbv2 = moto_server.client("elbv2", retries={"mode": "standard"})
    reply = elbv2.register_targets(
        TargetGroupArn=seeded.target_group_arn, Targets=[{"Id": seeded.instance_id}]
    )
    assert reply["ResponseMetadata"]["RetryAttempts"] == 1
    assert moto_server.call_count("RegisterTargets") == 2


@pytest.mark.parametrize(
    ("service", "call", "code", "status"),
    [
        ("ec2", lambda c: c.describe_instances(), "RequestLimitExceeded", 503),
        ("autoscaling", lambda c: c.describe_auto_scaling_groups(), "Throttling", 400),
        ("ssm", lambda c: c.get_parameters_by_path(Path="/unified"), "ThrottlingException", 400),
    ],
)
def test_throttling_speaks_each_protocol(
    moto_server: MotoServer, service: str, call: object, code: str, status: int
) -> None:
    moto_server.inject_throttling(None, 1)  # whatever comes next
    client = moto_server.client(service, retries={"mode": "standard", "total_max_attempts": 1})
    with pytest.raises(ClientError) as throttled:
        call(client)  # type: ignore[operator]
    error = throttled.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    call(client)  # type: ignore[operator]  # the fault was used up


def test_harness_traffic_is_not_counted(moto_server: MotoServer) -> None:
    seeded = seed_instance(
        moto_server, target_group="stg-api-web", classic_elb="clb-web", auto_scaling_group="asg-web"
    )
    assert moto_server.calls == []
    moto_server.client("ec2").describe_instances(InstanceIds=[seeded.instance_id])
    assert moto_server.calls == [ApiCall("ec2", "DescribeInstances")]


def test_env_lets_a_subprocess_reach_moto(moto_server: MotoServer, aws_env: dict[str, str]) -> None:
    code = "import boto3; print(boto3.client('sts').get_caller_identity()['Account'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=aws_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.strip() == ACCOUNT_ID
    assert moto_server.calls == [ApiCall("sts", "GetCallerIdentity")]


# --- moto facts the harness documents ---------------------------------------------------


def test_moto_facts_asg_tags_and_target_health(moto_server: MotoServer) -> None:
    seeded = seed_instance(
        moto_server,
        tags=SERVICE_TAGS,
        auto_scaling_group="asg-web",
        target_group="stg-api-web",
        deregistration_delay=30,
    )
    ec2, elbv2 = moto_server.client("ec2"), moto_server.client("elbv2")
    instance = ec2.describe_instances(InstanceIds=[seeded.instance_id])["Reservations"][0][
        "Instances"
    ][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["aws:autoscaling:groupName"] == "asg-web"
    assert tags["unified:service"] == "api-web"  # group tag with PropagateAtLaunch

    arn = seeded.target_group_arn
    attributes = elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "30"} in attributes
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": seeded.instance_id}])
    [health] = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    assert health["TargetHealth"]["State"] == "healthy"  # no "initial" in moto
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": seeded.instance_id}])
    assert elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"] == []
    [gone] = elbv2.describe_target_health(TargetGroupArn=arn, Targets=[{"Id": seeded.instance_id}])[
        "TargetHealthDescriptions"
    ]
    assert gone["TargetHealth"]["State"] == "unused"  # no "draining" in moto


def test_injected_error_can_target_one_service(moto_server: MotoServer) -> None:
    moto_server.inject_error(
        "DescribeTags",
        status=500,
        code="InternalFailure",
        message="boom",
        service="elasticloadbalancing",
    )
    no_retry = {"mode": "standard", "total_max_attempts": 1}
    moto_server.client("ec2", retries=no_retry).describe_tags()  # same action, other service
    with pytest.raises(ClientError) as failed:
        moto_server.client("elbv2", retries=no_retry).describe_tags(ResourceArns=["arn:aws:x"])
    assert failed.value.response["Error"]["Code"] == "InternalFailure"
