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
from tests.harness.moto_server import (
    ACCOUNT_ID,
    ApiCall,
    MotoServer,
    SeededInstance,
    seed_group,
    seed_instance,
)

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
    moto_server.emulate_draining = False  # plain moto, as documented (reset() restores it)
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


# --- ELBv2 draining (the harness's, moto has none) --------------------------------------


def health(
    moto: MotoServer, seeded: SeededInstance, port: int | None = None
) -> tuple[list[tuple[str, str, str | None]], tuple[str, str | None]]:
    """(the unfiltered listing as (id, state, reason), and the instance asked for by id)."""
    elbv2 = moto.client("elbv2", internal=True)
    arn = seeded.target_group_arn
    listing = [
        (d["Target"]["Id"], d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
        for d in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    ]
    target = {"Id": seeded.instance_id, **({"Port": port} if port else {})}
    [one] = elbv2.describe_target_health(TargetGroupArn=arn, Targets=[target])[
        "TargetHealthDescriptions"
    ]
    return listing, (one["TargetHealth"]["State"], one["TargetHealth"].get("Reason"))


def test_deregistered_target_drains_for_the_delay_then_is_gone(moto_server: MotoServer) -> None:
    """Draining lasts the deregistration delay. Each read is timed (sent, answered) and
    judged alone, so no assertion races the delay's end: a read answered before the
    delay can have ended must say draining, one sent after it must have ended must say
    gone, and nothing flaps in between."""
    delay = 2.0
    seeded = seed_instance(moto_server, target_group="stg-api-web", deregistration_delay=int(delay))
    elbv2, me = moto_server.client("elbv2"), seeded.instance_id
    internal = moto_server.client("elbv2", internal=True)
    target = [{"Id": me, "Port": 8000}]
    elbv2.register_targets(TargetGroupArn=seeded.target_group_arn, Targets=target)
    assert health(moto_server, seeded) == ([(me, "healthy", None)], ("healthy", None))

    sent_deregister = time.monotonic()
    elbv2.deregister_targets(TargetGroupArn=seeded.target_group_arn, Targets=target)
    deregistered = time.monotonic()
    draining = [(me, "draining", "Target.DeregistrationInProgress")]
    reads: list[tuple[float, float, list[tuple[str, str, str | None]]]] = []
    while time.monotonic() - deregistered < 10:  # bounded: the delay is 2 s
        sent = time.monotonic()
        listing = [(d["Target"]["Id"], d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
                   for d in internal.describe_target_health(
                       TargetGroupArn=seeded.target_group_arn)["TargetHealthDescriptions"]]
        reads.append((sent, time.monotonic(), listing))
        if not listing and sent > deregistered + delay:
            break
        time.sleep(0.1)
    listings = [listing for _, _, listing in reads]
    assert listings[-1] == [], listings[-1]
    assert all(listing in (draining, []) for listing in listings), listings
    first_gone = listings.index([])
    assert all(listing == [] for listing in listings[first_gone:]), "a target came back from gone"
    for sent, answered, listing in reads:
        if answered < sent_deregister + delay:
            assert listing == draining, (answered - sent_deregister, listing)
        if sent > deregistered + delay:
            assert listing == [], (sent - deregistered, listing)
    # once gone, asked by id it is unused and not registered (a stable state: read once)
    assert health(moto_server, seeded, port=8000)[1] == ("unused", "Target.NotRegistered")
    # What the agent does, counted: one deregistration; the harness's reads are not.
    assert [c.action for c in moto_server.calls] == ["RegisterTargets", "DeregisterTargets"]


def test_registering_a_draining_target_makes_it_healthy_at_once(moto_server: MotoServer) -> None:
    seeded = seed_instance(moto_server, target_group="stg-api-web", deregistration_delay=30)
    elbv2, arn, me = moto_server.client("elbv2"), str(seeded.target_group_arn), seeded.instance_id
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    assert health(moto_server, seeded)[1] == ("draining", "Target.DeregistrationInProgress")
    assert 29 < moto_server.draining_targets(arn)[me] <= 30

    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    assert health(moto_server, seeded) == ([(me, "healthy", None)], ("healthy", None))
    assert moto_server.draining_targets(arn) == {}
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me}])  # drains anew
    assert health(moto_server, seeded)[1][0] == "draining"


def test_draining_details_like_aws(moto_server: MotoServer) -> None:
    """Default delay 300 s; 0 means none; deregistering again is not an error (AWS: "If
    the specified target does not exist, the action returns successfully") and does not
    restart the delay; a port the target was not registered on is not draining."""
    seeded = seed_instance(moto_server, target_group="stg-api-web")  # default delay
    elbv2, arn, me = moto_server.client("elbv2"), str(seeded.target_group_arn), seeded.instance_id
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": me, "Port": 8000}])
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me, "Port": 8000}])
    left = moto_server.draining_targets(arn)[me]
    assert 299 < left <= 300
    time.sleep(0.05)
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me, "Port": 8000}])
    assert moto_server.draining_targets(arn)[me] < left  # not restarted
    assert health(moto_server, seeded, port=8000)[1][0] == "draining"
    assert health(moto_server, seeded, port=9999)[1][0] == "unused"
    with pytest.raises(ClientError) as unknown:  # an id that is no instance at all
        elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0000000000000dead"}])
    assert unknown.value.response["Error"]["Code"] == "InvalidTarget"

    moto_server.end_draining(arn)  # what AWS does early when nothing is in flight
    assert health(moto_server, seeded) == ([], ("unused", "Target.NotRegistered"))
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me}])  # not registered: fine

    elbv2.modify_target_group_attributes(
        TargetGroupArn=arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}],
    )
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    assert health(moto_server, seeded) == ([], ("unused", "Target.NotRegistered"))


def test_draining_survives_faults_and_reset(moto_server: MotoServer) -> None:
    seeded = seed_instance(moto_server, target_group="stg-api-web", deregistration_delay=60)
    arn, me = seeded.target_group_arn, seeded.instance_id
    elbv2 = moto_server.client("elbv2", retries={"mode": "standard"})
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    moto_server.inject_throttling("DeregisterTargets", 1)
    reply = elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": me}])
    assert reply["ResponseMetadata"]["RetryAttempts"] == 1
    assert moto_server.call_count("DeregisterTargets") == 2
    assert health(moto_server, seeded)[1][0] == "draining"
    moto_server.emulate_draining = False
    moto_server.reset()  # forgets the group, and restores emulate_draining
    assert moto_server.emulate_draining is True


def test_seed_group_puts_two_instances_behind_one_target_group(
    moto_server: MotoServer, imds: ImdsFactory
) -> None:
    first, second = seed_group(
        moto_server,
        size=2,
        tags=SERVICE_TAGS,
        auto_scaling_group="asg-web",
        target_group="stg-api-web",
        deregistration_delay=2,
    )
    assert first.instance_id != second.instance_id
    for shared in ("target_group_arn", "auto_scaling_group_name", "vpc_id", "launch_hook_name"):
        assert getattr(first, shared) == getattr(second, shared) is not None
    group = moto_server.client("autoscaling", internal=True).describe_auto_scaling_groups(
        AutoScalingGroupNames=["asg-web"]
    )["AutoScalingGroups"][0]
    assert sorted(i["InstanceId"] for i in group["Instances"]) == sorted(
        [first.instance_id, second.instance_id]
    )

    emulators = [imds(first), imds(second)]
    for seeded, emulator in zip((first, second), emulators):
        tok = token(emulator)
        assert get(emulator, "meta-data/instance-id", tok).text == seeded.instance_id
        assert get(emulator, "meta-data/tags/instance/unified:service", tok).text == "api-web"
        assert get(emulator, "meta-data/tags/instance/aws:autoscaling:groupName", tok).text == (
            "asg-web"
        )
        assert get(emulator, "meta-data/autoscaling/target-lifecycle-state", tok).text == (
            "InService"
        )
    emulators[0].set_lifecycle_state("Terminated")  # each emulator is its own instance
    assert (
        get(emulators[1], "meta-data/autoscaling/target-lifecycle-state", token(emulators[1])).text
        == "InService"
    )

    elbv2, arn = moto_server.client("elbv2"), first.target_group_arn
    elbv2.register_targets(
        TargetGroupArn=arn,
        Targets=[{"Id": first.instance_id, "Port": 8001}, {"Id": second.instance_id, "Port": 8002}],
    )
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": first.instance_id, "Port": 8001}])
    listing = {
        (d["Target"]["Id"], d["Target"]["Port"]): d["TargetHealth"]["State"]
        for d in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    }
    assert listing == {
        (first.instance_id, 8001): "draining",
        (second.instance_id, 8002): "healthy",
    }
    plain = seed_group(moto_server, size=3, tags={"unified:mode": "review"})
    assert len({p.instance_id for p in plain}) == 3 and plain[0].auto_scaling_group_name is None
