"""The simulated fleet and its load balancer, tested through moto's API only.

What a deploy tool will be tested against must itself be proved: moto's Auto Scaling
lifecycle as patched (``tests/harness/moto_fleet.py``), the ALB stand-in
(``tests/harness/alb.py``: weights, header rules, fail-open, counters) and the fleet
(``tests/harness/fleet.py``: a real agent boots on every instance the group launches,
drains on scale-in, and nothing is left running). No deploy tool here: boto3 against the
MotoServer plays its part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import free_ports, git_commit_all, make_stack_repo, processes_under
from tests.harness.alb import AlbMirror, haproxy_weights, header_rule_regex
from tests.harness.fleet import FleetNetwork, SimulatedFleet, bake_image, seed_load_balancer
from tests.harness.moto_fleet import set_target_health
from tests.harness.moto_server import MotoServer

pytestmark = pytest.mark.integration

BLUE, GREEN = "fleet-blue", "fleet-green"
PRODUCTION_TAGS = [
    {"Key": "unified:mode", "Value": "production"},
    {"Key": "unified:service", "Value": "echo"},
]
CANDIDATE = "X-Unified-Candidate"
# The interpreter that runs the echo service. The agent runs services as the `unified`
# user when that user exists (as on the image; the Packer tests create it on this
# machine), and that user cannot reach an interpreter under /root (pyenv, 0700); echo
# needs nothing but the standard library.
SERVICE_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


# --- the two images: two versions of the code, baked ------------------------------------


def services_yaml(repo: Path, ref: str, target_group: str) -> str:
    """The echo service of the test repo at ``ref``, registering into ``target_group``."""
    return f"""\
version: 1
repos:
  shop: {{url: {repo}, ref: {ref}}}
services:
  echo:
    repo: shop
    command: {SERVICE_PYTHON} -m testapps.echo
    port: 8000
    health: {{path: /health, timeout: 20}}
    load_balancer:
      production: {{target_group: {target_group}}}
environments:
  production: {{config_path: /unified/production}}
"""


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, Path]]:
    """Baked roots: "v1" (echo VERSION 1, target group fleet-blue) and "v2" (VERSION 2,
    fleet-green), from two tags of one repository."""
    base = Path(tempfile.mkdtemp(prefix="unified-images-", dir="/tmp"))
    base.chmod(0o755)
    repo = make_stack_repo(base)
    subprocess.run(["git", "-C", str(repo), "tag", "v1"], check=True)
    echo = repo / "testapps/echo.py"
    echo.write_text(echo.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    git_commit_all(repo, "echo 2")
    subprocess.run(["git", "-C", str(repo), "tag", "v2"], check=True)
    yield {
        "v1": bake_image(base / "image-v1", services_yaml(repo, "v1", BLUE)),
        "v2": bake_image(base / "image-v2", services_yaml(repo, "v2", GREEN)),
    }
    subprocess.run(["rm", "-rf", str(base)], check=False)


# --- what a deploy tool would do with boto3 ---------------------------------------------


def register_ami(moto: MotoServer, name: str, version: str) -> str:
    ec2 = moto.client("ec2")
    return str(
        ec2.register_image(
            Name=name,
            TagSpecifications=[
                {"ResourceType": "image", "Tags": [{"Key": "unified:version", "Value": version}]}
            ],
        )["ImageId"]
    )


def hooks(launch_timeout: int = 120, terminate_timeout: int = 120) -> list[dict[str, Any]]:
    return [
        {
            "LifecycleHookName": "launching",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "HeartbeatTimeout": launch_timeout,
            "DefaultResult": "ABANDON",
        },
        {
            "LifecycleHookName": "terminating",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "HeartbeatTimeout": terminate_timeout,
            "DefaultResult": "CONTINUE",
        },
    ]


def create_group(
    moto: MotoServer,
    net: FleetNetwork,
    name: str,
    image_id: str,
    size: int,
    *,
    colour: str,
    lifecycle_hooks: list[dict[str, Any]] | None = None,
    instance_tags: list[dict[str, str]] = PRODUCTION_TAGS,
) -> str:
    """A launch template for ``image_id`` and a group of ``size`` using its $Latest."""
    template = moto.client("ec2").create_launch_template(
        LaunchTemplateName=f"{name}-template",
        LaunchTemplateData={
            "ImageId": image_id,
            "InstanceType": "t3.micro",
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": instance_tags}],
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    moto.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=size,
        VPCZoneIdentifier=net.zone_identifier,
        Tags=[{"Key": "unified:colour", "Value": colour, "PropagateAtLaunch": True}],
        LifecycleHookSpecificationList=hooks() if lifecycle_hooks is None else lifecycle_hooks,
    )
    return str(template)


def resize(moto: MotoServer, group: str, size: int) -> None:
    moto.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=group, MinSize=0, DesiredCapacity=size
    )


def lifecycle(moto: MotoServer, group: str) -> dict[str, str]:
    found = moto.client("autoscaling", internal=True).describe_auto_scaling_groups(
        AutoScalingGroupNames=[group]
    )["AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for g in found for i in g["Instances"]}


def target_health(moto: MotoServer, arn: str) -> dict[tuple[str, int], str]:
    found = moto.client("elbv2", internal=True).describe_target_health(TargetGroupArn=arn)
    return {
        (d["Target"]["Id"], d["Target"]["Port"]): d["TargetHealth"]["State"]
        for d in found["TargetHealthDescriptions"]
    }


def set_default_weights(moto: MotoServer, net: FleetNetwork, **weights: int) -> None:
    """The listener's default action: a weighted forward (keys are target group names
    with ``_`` for ``-``)."""
    moto.client("elbv2").modify_listener(
        ListenerArn=net.listener_arn,
        DefaultActions=[
            {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [
                        {"TargetGroupArn": net.target_groups[n.replace("_", "-")], "Weight": w}
                        for n, w in weights.items()
                    ]
                },
            }
        ],
    )


def add_candidate_rule(moto: MotoServer, net: FleetNetwork, group: str, values: list[str]) -> str:
    return str(
        moto.client("elbv2").create_rule(
            ListenerArn=net.listener_arn,
            Priority=10,
            Conditions=[
                {
                    "Field": "http-header",
                    "HttpHeaderConfig": {"HttpHeaderName": CANDIDATE, "Values": values},
                }
            ],
            Actions=[{"Type": "forward", "TargetGroupArn": net.target_groups[group]}],
        )["Rules"][0]["RuleArn"]
    )


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """GET on a fresh connection: (status, JSON body or {})."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def versions(url: str, count: int, headers: dict[str, str] | None = None) -> list[str]:
    """The ``version`` of ``count`` sequential answers (``"<status>"`` when not 200)."""
    answers = [http(f"{url}/health", headers) for _ in range(count)]
    return [body.get("version", "?") if status == 200 else str(status) for status, body in answers]


# --- the fleet, end to end ----------------------------------------------------------------


def test_a_group_boots_real_agents_serves_and_drains_on_scale_in(
    moto_server: MotoServer,
    images: dict[str, Path],
    fleet: Callable[..., SimulatedFleet],
    alb_mirror: Callable[..., AlbMirror],
    load: Any,
) -> None:
    net = seed_load_balancer(moto_server, [BLUE, GREEN], deregistration_delay=1)
    ami = register_ami(moto_server, "unified-v1", "1")
    mirror = alb_mirror(net.listener_arn)
    sim = fleet({ami: images["v1"]})
    t0 = time.monotonic()
    create_group(moto_server, net, "asg-blue", ami, 2, colour="blue")
    assert set(lifecycle(moto_server, "asg-blue").values()) == {"Pending:Wait"}

    booted = sim.wait_in_service("asg-blue", 2, timeout=90)
    print(f"2 instances booted and in service in {time.monotonic() - t0:.1f}s")
    ids = sorted(i.instance_id for i in booted)
    for instance in booted:
        assert instance.boot_code == 0 and instance.image_id == ami, sim.summary()
        assert instance.service == "echo" and instance.port is not None
        # it waited on the launch hook until its own agent, booting, completed it
        assert instance.happened_in_order(
            "launched (Pending:Wait)", "phase booting", "lifecycle InService"
        ), instance.events
    assert len({i.root for i in booted}) == len({i.port for i in booted}) == 2
    launches = sorted(
        (a["InstanceId"], a["LifecycleHookName"], a["LifecycleActionResult"])
        for a in moto_server.lifecycle_actions
    )
    assert launches == [(i, "launching", "CONTINUE") for i in ids]
    assert target_health(moto_server, net.target_groups[BLUE]) == {
        (i.instance_id, i.port): "healthy" for i in booted
    }
    # tags as AWS puts them: the group's name, its propagated tags, the template version
    described = moto_server.client("ec2", internal=True).describe_instances(InstanceIds=ids)
    for reservation in described["Reservations"]:
        for found in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in found["Tags"]}
            assert tags["aws:autoscaling:groupName"] == "asg-blue"
            assert tags["unified:colour"] == "blue" and tags["unified:service"] == "echo"
            assert tags["aws:ec2launchtemplate:version"] == "1"

    # through the load balancer: both instances serve, round robin
    mirror.wait_synced()
    answers = [http(f"{mirror.url}/health") for _ in range(6)]
    assert [status for status, _ in answers] == [200] * 6
    assert {body["version"] for _, body in answers} == {"1"}
    assert len({body["pid"] for _, body in answers}) == 2

    # scale-in under load: one instance drains while the other serves: nothing fails
    traffic = load(mirror.url, 6, 4, "/slow?ms=100")
    time.sleep(1.0)
    resize(moto_server, "asg-blue", 1)
    [leaving] = [i for i, s in lifecycle(moto_server, "asg-blue").items() if s == "Terminating:Wait"]
    sim.wait_gone([leaving], timeout=30)
    result = traffic.result(timeout=30)
    print(f"scale-in 2 -> 1 under load: {result.summary()}")
    assert result.failed == 0 and result.requests > 50, (result.summary(), mirror.transitions)
    gone = sim.instance(leaving)
    assert gone.happened_in_order(
        "lifecycle Terminating:Wait", "terminated", "agent stop exited 0", "phase gone"
    ), gone.events
    watch = gone.watch_log
    assert (
        watch.index("event: terminating")
        < watch.index("deregistered from target group fleet-blue")
        < watch.index("lifecycle hook terminating: CONTINUE")
    ), watch
    assert mirror.target_states(BLUE)[-2:] == [
        (f"{BLUE}/{leaving}:{gone.port}", "drain"),
        (f"{BLUE}/{leaving}:{gone.port}", "maint"),
    ]

    # to zero: the last agent drains too, the group is empty, nothing runs any more
    [last] = [i for i in ids if i != leaving]
    resize(moto_server, "asg-blue", 0)
    sim.wait_gone([last], timeout=30)
    assert lifecycle(moto_server, "asg-blue") == {}
    terminations = [
        (a["InstanceId"], a["LifecycleActionResult"])
        for a in moto_server.lifecycle_actions
        if a["LifecycleHookName"] == "terminating"
    ]
    assert terminations == [(leaving, "CONTINUE"), (last, "CONTINUE")]
    assert target_health(moto_server, net.target_groups[BLUE]) == {}
    for instance in sim.instances().values():
        assert instance.gone and not instance.root.exists()
        assert processes_under(instance.root) == []
    assert http(f"{mirror.url}/health")[0] == 503  # an empty target group: the ALB's 503
    moto_server.client("autoscaling").delete_auto_scaling_group(AutoScalingGroupName="asg-blue")
    assert sim.errors == [] and mirror.errors == []


def test_weights_and_a_header_rule_route_between_two_images(
    moto_server: MotoServer,
    images: dict[str, Path],
    fleet: Callable[..., SimulatedFleet],
    alb_mirror: Callable[..., AlbMirror],
    load: Any,
) -> None:
    net = seed_load_balancer(moto_server, [BLUE, GREEN], deregistration_delay=1)
    v1, v2 = register_ami(moto_server, "unified-v1", "1"), register_ami(moto_server, "unified-v2", "2")
    mirror = alb_mirror(net.listener_arn, target_groups=[net.target_groups[BLUE], net.target_groups[GREEN]])
    sim = fleet({v1: images["v1"], v2: images["v2"]})
    create_group(moto_server, net, "asg-blue", v1, 1, colour="blue")
    create_group(moto_server, net, "asg-green", v2, 1, colour="green")
    [blue] = sim.wait_in_service("asg-blue", 1, timeout=90)
    [green] = sim.wait_in_service("asg-green", 1, timeout=90)
    assert (blue.image_id, green.image_id) == (v1, v2)
    mirror.wait_synced()
    assert versions(mirror.url, 4) == ["1"] * 4  # the listener forwards to blue only

    # weights 3:1: exactly three blue answers in four (HAProxy's weighted round robin)
    set_default_weights(moto_server, net, fleet_blue=3, fleet_green=1)
    mirror.wait_synced()
    before = mirror.counters()
    seen = versions(mirror.url, 40)
    after = mirror.counters()
    # ten weighted rounds: 30/10, but for where in a round it began (one request at most)
    assert abs(seen.count("2") - 10) <= 1 and seen.count("1") + seen.count("2") == 40, seen
    assert after[BLUE].default - before[BLUE].default == seen.count("1")
    assert after[GREEN].default - before[GREEN].default == seen.count("2")

    # a candidate route: only requests carrying the header reach green
    set_default_weights(moto_server, net, fleet_blue=100, fleet_green=0)
    rule = add_candidate_rule(moto_server, net, GREEN, ["abc*"])
    mirror.wait_synced()
    before = mirror.counters()
    customers = versions(mirror.url, 20) + versions(mirror.url, 5, {CANDIDATE: "other"})
    candidates = versions(mirror.url, 10, {CANDIDATE: "ABC-123"})
    after = mirror.counters()
    assert customers == ["1"] * 25 and candidates == ["2"] * 10
    assert after[GREEN].default == before[GREEN].default  # zero customer requests on green
    assert after[GREEN].rules - before[GREEN].rules == 10
    moto_server.client("elbv2").delete_rule(RuleArn=rule)
    mirror.wait_synced()
    assert versions(mirror.url, 3, {CANDIDATE: "ABC-123"}) == ["1"] * 3
    assert mirror.rules() == []

    # the blue/green finish under load: half and half, all to green, blue scaled to zero
    set_default_weights(moto_server, net, fleet_blue=50, fleet_green=50)
    mirror.wait_synced()
    traffic = load(mirror.url, 6, 4, "/slow?ms=100")
    time.sleep(1.5)
    set_default_weights(moto_server, net, fleet_blue=0, fleet_green=100)
    mirror.wait_synced()
    blue_after_shift = mirror.counters()[BLUE].default
    resize(moto_server, "asg-blue", 0)
    sim.wait_gone([blue.instance_id], timeout=30)
    result = traffic.result(timeout=30)
    print(f"blue -> green, blue scaled to 0, under load: {result.summary()}")
    assert result.failed == 0 and result.requests > 50, (result.summary(), mirror.transitions)
    final = mirror.counters()
    assert final[BLUE].default == blue_after_shift  # nothing reached blue after the shift
    assert final[GREEN].default > 0 and final[GREEN].hrsp_5xx == final[BLUE].hrsp_5xx == 0
    assert "lifecycle hook terminating: CONTINUE" in sim.instance(blue.instance_id).watch_log
    assert sim.errors == [] and mirror.errors == []


def test_an_abandoned_launch_is_terminated_and_replaced(
    moto_server: MotoServer, images: dict[str, Path], fleet: Callable[..., SimulatedFleet]
) -> None:
    """The agent refuses a service tag it does not know: ABANDON, then AWS replaces it."""
    net = seed_load_balancer(moto_server, [BLUE])
    ami = register_ami(moto_server, "unified-v1", "1")
    sim = fleet({ami: images["v1"]})
    bad = [{"Key": "unified:mode", "Value": "production"}, {"Key": "unified:service", "Value": "nope"}]
    create_group(
        moto_server, net, "asg-bad", ami, 1, colour="blue",
        lifecycle_hooks=hooks()[:1], instance_tags=bad,
    )
    [first] = lifecycle(moto_server, "asg-bad")
    sim.wait_gone([first], timeout=60)
    abandoned = sim.instance(first)
    assert abandoned.boot_code == 2 and "ABANDON" in abandoned.boot_output, abandoned.boot_output
    replacement = sim.wait_for(
        lambda: [i for i in sim.of_group("asg-bad") if i.instance_id != first], 10,
        "a replacement launched",
    )[0]
    actions = [(a["InstanceId"], a["LifecycleActionResult"]) for a in moto_server.lifecycle_actions]
    assert actions[0] == (first, "ABANDON")
    state = moto_server.client("ec2", internal=True).describe_instances(InstanceIds=[first])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    resize(moto_server, "asg-bad", 0)  # no terminating hook: at once
    sim.wait_gone([replacement.instance_id], timeout=30)
    assert lifecycle(moto_server, "asg-bad") == {}


def test_an_image_without_root_never_boots_and_its_hook_times_out(
    moto_server: MotoServer, fleet: Callable[..., SimulatedFleet]
) -> None:
    """No agent at all: the launch hook's timeout ABANDONs, the group replaces it."""
    net = seed_load_balancer(moto_server, [BLUE])
    ami = register_ami(moto_server, "unified-unknown", "0")
    sim = fleet({})
    create_group(moto_server, net, "asg-x", ami, 1, colour="blue", lifecycle_hooks=[
        {**hooks()[0], "HeartbeatTimeout": 1}
    ])
    [first] = lifecycle(moto_server, "asg-x")
    sim.wait_gone([first], timeout=10)
    assert sim.instance(first).phase == "gone" and "no baked root" in str(sim.instance(first).error)
    assert sim.instance(first).boot_code is None
    sim.wait_for(lambda: len(sim.of_group("asg-x", include_gone=True)) >= 2, 5, "a replacement")
    moto_server.client("autoscaling").delete_auto_scaling_group(
        AutoScalingGroupName="asg-x", ForceDelete=True
    )
    sim.wait_for(lambda: all(i.gone for i in sim.instances().values()), 10, "all gone")
    assert moto_server.lifecycle_actions == []  # nobody completed anything: timeouts did


# --- moto as patched, without agents --------------------------------------------------------


@pytest.fixture
def network(moto_server: MotoServer) -> FleetNetwork:
    return seed_load_balancer(moto_server, [BLUE, GREEN])


def test_images_and_launch_template_versions(moto_server: MotoServer, network: FleetNetwork) -> None:
    ec2 = moto_server.client("ec2")
    ami = register_ami(moto_server, "unified-v2", "2")
    [image] = ec2.describe_images(Filters=[{"Name": "tag:unified:version", "Values": ["2"]}])["Images"]
    assert image["ImageId"] == ami and image["State"] == "available"
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]] == [ami]
    data = {
        "ImageId": "ami-00000000000000001",
        "InstanceType": "t3.micro",
        "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": PRODUCTION_TAGS}],
    }
    template = ec2.create_launch_template(LaunchTemplateName="lt-web", LaunchTemplateData=data)
    template_id = template["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(
        LaunchTemplateId=template_id, SourceVersion="1", LaunchTemplateData={"ImageId": ami}
    )
    [v2] = ec2.describe_launch_template_versions(
        LaunchTemplateId=template_id, Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    assert v2["VersionNumber"] == 2 and v2["DefaultVersion"] is False
    assert v2["LaunchTemplateData"] == {**data, "ImageId": ami}  # inherited from version 1
    autoscaling = moto_server.client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="asg-web",
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "2"},
        MinSize=0, MaxSize=2, DesiredCapacity=1, VPCZoneIdentifier=network.zone_identifier,
    )
    [instance] = autoscaling.describe_auto_scaling_instances()["AutoScalingInstances"]
    assert instance["LifecycleState"] == "InService"  # no hook: at once
    assert instance["LaunchTemplate"]["Version"] == "2"
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])
    found = described["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in found["Tags"]}
    assert found["ImageId"] == ami and tags["aws:ec2launchtemplate:version"] == "2"
    assert tags["unified:service"] == "echo"  # the template's TagSpecifications, inherited


def test_lifecycle_waits_complete_time_out_and_refuse_like_aws(
    moto_server: MotoServer, network: FleetNetwork
) -> None:
    autoscaling = moto_server.client("autoscaling")
    create_group(
        moto_server, network, "asg-web", "ami-00000000000000001", 2, colour="blue",
        lifecycle_hooks=hooks(launch_timeout=60, terminate_timeout=1),
    )
    a, b = sorted(lifecycle(moto_server, "asg-web"))
    assert lifecycle(moto_server, "asg-web") == {a: "Pending:Wait", b: "Pending:Wait"}

    def complete(instance: str, hook: str, result: str) -> None:
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName="asg-web", LifecycleHookName=hook,
            InstanceId=instance, LifecycleActionResult=result,
        )

    complete(a, "launching", "CONTINUE")
    complete(b, "launching", "ABANDON")
    states = lifecycle(moto_server, "asg-web")
    [c] = [i for i in states if i not in (a, b)]
    assert states == {a: "InService", c: "Pending:Wait"}  # b terminated, c replaces it
    with pytest.raises(ClientError) as twice:  # the action is gone once completed
        complete(a, "launching", "CONTINUE")
    assert "No active Lifecycle Action" in str(twice.value)

    with pytest.raises(ClientError) as refused:  # AWS: only with ForceDelete
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName="asg-web")
    assert refused.value.response["Error"]["Code"] == "ResourceInUse"

    resize(moto_server, "asg-web", 0)
    assert lifecycle(moto_server, "asg-web") == {a: "Terminating:Wait", c: "Terminating:Wait"}
    with pytest.raises(ClientError) as wrong:  # c waits on the terminating hook now
        complete(c, "launching", "CONTINUE")
    assert "waits on hook 'terminating'" in str(wrong.value)
    t0 = time.monotonic()
    for _ in range(3):  # heartbeats keep a (1 s timeout) waiting; c times out
        time.sleep(0.5)
        autoscaling.record_lifecycle_action_heartbeat(
            AutoScalingGroupName="asg-web", LifecycleHookName="terminating", InstanceId=a
        )
        lifecycle(moto_server, "asg-web")  # any read ends the waits that timed out
    assert lifecycle(moto_server, "asg-web") == {a: "Terminating:Wait"}
    assert time.monotonic() - t0 >= 1.5
    complete(a, "terminating", "CONTINUE")
    assert lifecycle(moto_server, "asg-web") == {}
    ec2 = moto_server.client("ec2", internal=True)
    reservations = ec2.describe_instances(InstanceIds=[a, b, c])["Reservations"]
    assert {i["State"]["Name"] for r in reservations for i in r["Instances"]} == {"terminated"}

    autoscaling.delete_auto_scaling_group(AutoScalingGroupName="asg-web")  # empty: allowed
    assert autoscaling.describe_lifecycle_hooks(AutoScalingGroupName="asg-web")["LifecycleHooks"] == []


def test_force_delete_and_terminate_in_group(moto_server: MotoServer, network: FleetNetwork) -> None:
    autoscaling = moto_server.client("autoscaling")
    create_group(moto_server, network, "asg-web", "ami-00000000000000001", 2, colour="blue",
                 lifecycle_hooks=hooks()[1:])  # a terminating hook only
    a, b = sorted(lifecycle(moto_server, "asg-web"))
    autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=a, ShouldDecrementDesiredCapacity=False
    )
    states = lifecycle(moto_server, "asg-web")
    [c] = [i for i in states if i not in (a, b)]
    assert states == {a: "Terminating:Wait", b: "InService", c: "InService"}
    autoscaling.delete_auto_scaling_group(AutoScalingGroupName="asg-web", ForceDelete=True)
    assert autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    reservations = moto_server.client("ec2", internal=True).describe_instances(
        InstanceIds=[a, b, c]
    )["Reservations"]
    assert {i["State"]["Name"] for r in reservations for i in r["Instances"]} == {"terminated"}


def test_listener_weights_rules_and_conditional_writes(
    moto_server: MotoServer, network: FleetNetwork
) -> None:
    """What moto already does right, pinned so that a moto upgrade cannot change it."""
    elbv2 = moto_server.client("elbv2")
    set_default_weights(moto_server, network, fleet_blue=90, fleet_green=10)
    rule = add_candidate_rule(moto_server, network, GREEN, ["abc*"])
    [listener] = elbv2.describe_listeners(ListenerArns=[network.listener_arn])["Listeners"]
    weights = listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]
    assert [(g["TargetGroupArn"], g["Weight"]) for g in weights] == [
        (network.target_groups[BLUE], 90), (network.target_groups[GREEN], 10)
    ]
    rules = elbv2.describe_rules(ListenerArn=network.listener_arn)["Rules"]
    assert [(r["Priority"], r["IsDefault"]) for r in rules] == [("10", False), ("default", True)]
    assert rules[0]["Conditions"][0]["HttpHeaderConfig"] == {
        "HttpHeaderName": CANDIDATE, "Values": ["abc*"]
    }
    elbv2.delete_rule(RuleArn=rule)
    assert len(elbv2.describe_rules(ListenerArn=network.listener_arn)["Rules"]) == 1

    dynamodb = moto_server.client("dynamodb")
    dynamodb.create_table(
        TableName="deploys",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    lock = {"pk": {"S": "lock#production"}, "sk": {"S": "lock"}}
    dynamodb.put_item(TableName="deploys", Item={**lock, "owner": {"S": "a"}},
                      ConditionExpression="attribute_not_exists(pk)")
    with pytest.raises(ClientError) as taken:
        dynamodb.put_item(TableName="deploys", Item={**lock, "owner": {"S": "b"}},
                          ConditionExpression="attribute_not_exists(pk)")
    assert taken.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    with pytest.raises(ClientError) as stolen:
        dynamodb.update_item(TableName="deploys", Key=lock, UpdateExpression="SET #o = :me",
                             ConditionExpression="#o = :me", ExpressionAttributeNames={"#o": "owner"},
                             ExpressionAttributeValues={":me": {"S": "b"}})
    assert stolen.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    for day in ("01", "02", "03"):
        dynamodb.put_item(TableName="deploys", Item={"pk": {"S": "history"}, "sk": {"S": f"2026-01-{day}"}})
    page = dynamodb.query(TableName="deploys", KeyConditionExpression="pk = :p",
                          ExpressionAttributeValues={":p": {"S": "history"}},
                          ScanIndexForward=False, Limit=2)
    assert [i["sk"]["S"] for i in page["Items"]] == ["2026-01-03", "2026-01-02"]
    assert page["LastEvaluatedKey"]["sk"]["S"] == "2026-01-02"


# --- the ALB stand-in, with plain backends ----------------------------------------------


@pytest.fixture
def echo_backends() -> Iterator[Callable[[int], list[int]]]:
    """Factory: ``echo_backends(n)`` starts n echo services on loopback; their ports."""
    started: list[subprocess.Popen[bytes]] = []

    def make(count: int) -> list[int]:
        ports = free_ports(count)
        for port in ports:
            started.append(subprocess.Popen(
                [sys.executable, "-m", "tests.apps.echo"],
                env={**os.environ, "PORT": str(port)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    http(f"http://127.0.0.1:{port}/health")
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"echo on {port} did not start"
                    time.sleep(0.05)
        return ports

    yield make
    for process in started:
        process.kill()
        process.wait(timeout=10)


def plain_instances(moto: MotoServer, net: FleetNetwork, count: int) -> list[str]:
    ec2 = moto.client("ec2", internal=True)
    reservation = ec2.run_instances(
        ImageId="ami-00000000000000001", MinCount=count, MaxCount=count, SubnetId=net.subnet_ids[0]
    )
    return [i["InstanceId"] for i in reservation["Instances"]]


def pids(url: str, count: int, headers: dict[str, str] | None = None) -> list[int | str]:
    answers = [http(f"{url}/health", headers) for _ in range(count)]
    return [body["pid"] if status == 200 else str(status) for status, body in answers]


def test_alb_mirror_weights_rules_and_counters(
    moto_server: MotoServer, network: FleetNetwork, echo_backends: Callable[[int], list[int]],
    alb_mirror: Callable[..., AlbMirror],
) -> None:
    elbv2 = moto_server.client("elbv2", internal=True)
    ids = plain_instances(moto_server, network, 3)
    ports = echo_backends(3)
    blue, green = network.target_groups[BLUE], network.target_groups[GREEN]
    elbv2.register_targets(TargetGroupArn=blue, Targets=[{"Id": ids[0], "Port": ports[0]},
                                                         {"Id": ids[1], "Port": ports[1]}])
    elbv2.register_targets(TargetGroupArn=green, Targets=[{"Id": ids[2], "Port": ports[2]}])
    mirror = alb_mirror(network.listener_arn)
    by_port = {p: http(f"http://127.0.0.1:{p}/health")[1]["pid"] for p in ports}
    first = pids(mirror.url, 6)
    assert sorted(set(first)) == sorted([by_port[ports[0]], by_port[ports[1]]])  # blue, both

    set_default_weights(moto_server, network, fleet_blue=0, fleet_green=1)
    mirror.wait_synced()
    assert pids(mirror.url, 4) == [by_port[ports[2]]] * 4  # weight 0: none
    set_default_weights(moto_server, network, fleet_blue=600, fleet_green=200)  # scaled: 256/85
    mirror.wait_synced()
    seen = pids(mirror.url, 341)
    # one weighted round (256 + 85 requests): exact but for where in the round it began
    assert abs(seen.count(by_port[ports[2]]) - 85) <= 1, seen
    assert mirror.weights()["r_default"] == {BLUE: 600, GREEN: 200}

    rule = add_candidate_rule(moto_server, network, GREEN, ["v?-*"])
    set_default_weights(moto_server, network, fleet_blue=1)
    mirror.wait_synced()
    before = mirror.counters()
    assert set(pids(mirror.url, 5, {CANDIDATE: "V2-a b"})) == {by_port[ports[2]]}
    assert by_port[ports[2]] not in pids(mirror.url, 5, {CANDIDATE: "v22"})  # ? is one character
    assert by_port[ports[2]] not in pids(mirror.url, 5, {f"{CANDIDATE}-Not": "v2-x"})
    after = mirror.counters()
    assert (after[GREEN].rules - before[GREEN].rules, after[GREEN].default - before[GREEN].default) == (5, 0)
    assert after[BLUE].default - before[BLUE].default == 10
    elbv2.delete_rule(RuleArn=rule)
    mirror.wait_synced()
    assert by_port[ports[2]] not in pids(mirror.url, 4, {CANDIDATE: "v2-x"})
    kinds = [t.kind for t in mirror.transitions]
    assert kinds.count("rules") == 2 and "weight" in kinds and mirror.errors == []


def test_alb_mirror_fails_open_drains_and_answers_503_when_empty(
    moto_server: MotoServer, network: FleetNetwork, echo_backends: Callable[[int], list[int]],
    alb_mirror: Callable[..., AlbMirror],
) -> None:
    elbv2 = moto_server.client("elbv2", internal=True)
    ids = plain_instances(moto_server, network, 2)
    ports = echo_backends(2)
    blue = network.target_groups[BLUE]
    elbv2.modify_target_group_attributes(TargetGroupArn=blue, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    elbv2.register_targets(TargetGroupArn=blue, Targets=[{"Id": i, "Port": p} for i, p in zip(ids, ports)])
    open_mirror = alb_mirror(network.listener_arn)
    closed_mirror = alb_mirror(network.listener_arn, fail_open=False)
    by_port = {p: http(f"http://127.0.0.1:{p}/health")[1]["pid"] for p in ports}

    set_target_health(blue, ids[0], "unhealthy")
    open_mirror.wait_synced(); closed_mirror.wait_synced()
    assert set(pids(open_mirror.url, 4)) == {by_port[ports[1]]}  # one healthy: only it
    set_target_health(blue, ids[1], "unhealthy")
    open_mirror.wait_synced(); closed_mirror.wait_synced()
    assert set(pids(open_mirror.url, 4)) == set(by_port.values())  # all unhealthy: fail open
    assert pids(closed_mirror.url, 2) == ["503", "503"]
    set_target_health(blue, ids[0], "initial")  # still registering: not routed, even open
    open_mirror.wait_synced()
    assert set(pids(open_mirror.url, 4)) == {by_port[ports[1]]}
    set_target_health(blue, ids[0], None)
    set_target_health(blue, ids[1], None)

    elbv2.deregister_targets(TargetGroupArn=blue, Targets=[{"Id": ids[0], "Port": ports[0]}])
    open_mirror.wait_synced()
    assert set(pids(open_mirror.url, 4)) == {by_port[ports[1]]}
    subject = f"{BLUE}/{ids[0]}:{ports[0]}"
    assert open_mirror.target_states(BLUE)[-1] == (subject, "drain")
    open_mirror.wait_synced(timeout=5)
    elbv2.deregister_targets(TargetGroupArn=blue, Targets=[{"Id": ids[1], "Port": ports[1]}])
    deadline = time.monotonic() + 5
    while target_health(moto_server, blue) and time.monotonic() < deadline:
        time.sleep(0.1)
    open_mirror.wait_synced()
    assert pids(open_mirror.url, 2) == ["503", "503"]  # an empty group: 503, like the ALB
    assert (subject, "maint") in open_mirror.target_states(BLUE)


def test_alb_helpers() -> None:
    assert haproxy_weights({"a": 90, "b": 10}) == {"a": 90, "b": 10}
    assert haproxy_weights({"a": 999, "b": 1, "c": 0}) == {"a": 256, "b": 1, "c": 0}
    regex = header_rule_regex("X-Unified-Candidate", ["a b", "c*"])
    assert " " not in regex and "\\\\x{20}" in regex and ".*" in regex
