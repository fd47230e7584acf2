"""Staging/production for real: IMDSv2 emulator, moto over HTTP, real supervisord.

Each test seeds moto with an instance (launched by an Auto Scaling group with a launch
hook), points the agent at the IMDS emulator for that instance, and runs `agent boot`
without --mode, exactly as the systemd unit does on an instance.
"""

from __future__ import annotations

import json
import stat
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Agent, echo_service, free_ports, processes_under
from tests.harness.fixtures import subprocess_env
from agent.aws.policy import instance_role
from agent.config import catalog
from tests.harness import iam
from tests.harness.moto_server import ACCOUNT_ID, MotoServer, seed_instance

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-'quoted' $HOME, 100% ☃"


def services_yaml(repo: Path, port: int, health_path: str = "/health", timeout: int = 20,
                  start_delay: float = 0, stop_seconds: int = 30) -> str:
    lb = "    load_balancer:\n      production: {target_group: prod-echo}\n      staging: {classic_elb: stg-echo}\n"
    env = f"    env: {{LOG_LEVEL: info, START_DELAY: '{start_delay}'}}\n"
    entry = echo_service("echo", port, env=env, extra=lb + f"    stop_seconds: {stop_seconds}\n")
    entry = entry.replace("health: {path: /health, timeout: 20}", f"health: {{path: {health_path}, timeout: {timeout}}}")
    return f"""\
version: 1
repos:
  shop: {{url: {repo}, ref: main}}
services:
{entry}  other:
    repo: shop
    command: sleep 1000
environments:
  staging: {{config_path: /unified/staging}}
  production: {{config_path: /unified/production}}
"""


def seed(moto: MotoServer, tags: dict[str, str], **options: Any) -> Any:
    seeded = seed_instance(moto, tags=tags, target_group="prod-echo", auto_scaling_group="asg-echo",
                           deregistration_delay=2, **options)
    ssm = moto.client("ssm", internal=True)
    ssm.put_parameter(Name="/unified/production/echo/SECRET_TOKEN", Value=SECRET, Type="SecureString")
    ssm.put_parameter(Name="/unified/production/echo/LOG_LEVEL", Value="debug", Type="String")
    return seeded


def prepare(agent: Agent, repo: Path, moto: MotoServer, emulator: Any, **yaml: Any) -> int:
    port = free_ports(1)[0]
    agent.services = agent.root / "services.yaml"
    agent.services.write_text(services_yaml(repo, port, **yaml))
    agent.env = subprocess_env(moto, emulator)
    agent("bake", check=True)
    return port


def target_health(moto: MotoServer, arn: str) -> list[tuple[str, str]]:
    found = moto.client("elbv2", internal=True).describe_target_health(TargetGroupArn=arn)
    return [(d["Target"]["Id"], d["TargetHealth"]["State"]) for d in found["TargetHealthDescriptions"]]


def get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


PRODUCTION = {"unified:mode": "production", "unified:service": "echo"}
def assert_allowed_by_the_service_policy(moto: MotoServer, since: int, agent: Agent, mode: str = "production",
                                         service: str = "echo") -> None:
    """Every AWS call the agent made since `since` is allowed by the instance-role policy
    `agent policy` writes for its service (judged by the IAM-aware test double)."""
    assert agent.services is not None
    policy = instance_role(catalog.load(agent.services), mode, service, ACCOUNT_ID, moto.region)
    requests = iam.requests_of(moto, since)
    assert requests, "no AWS call to check"
    for request in requests:
        assert iam.allowed(policy, request), f"{request} is not allowed by the policy of {service} in {mode}"


def test_production_boot_registers_and_continues(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                 new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    emulator = imds(seeded)
    port = prepare(new_root, shop_repo, moto_server, emulator)
    before = len(moto_server.calls)
    result = new_root("boot")
    assert result.returncode == 0, result.stderr
    calls = [c.action for c in moto_server.calls[before:]]
    # the budget with IMDS tags on: config vars, the group (hooks, setup), the target
    # group, register, health, the hook
    assert len(calls) <= 7, calls
    assert_allowed_by_the_service_policy(moto_server, before, new_root)
    assert target_health(moto_server, seeded.target_group_arn) == [(seeded.instance_id, "healthy")]
    actions = moto_server.lifecycle_actions
    assert [(a["LifecycleHookName"], a["LifecycleActionResult"]) for a in actions] == [("launching", "CONTINUE")]
    assert calls.index("RegisterTargets") < calls.index("CompleteLifecycleAction")
    # the health wait came from the target group's health check (ALB defaults: (5 + 1) x 30 s + 30 s)
    assert "healthy in target group prod-echo (allowed 210s)" in [s["name"] for s in new_root.status()[1]["steps"]]
    # only the tagged service runs, with its config vars; SSM overrides plain env
    code, report = new_root.status()
    assert code == 0 and [p["name"] for p in report["programs"]] == ["echo"]
    assert get(port, "/env?key=SECRET_TOKEN")["value"] == SECRET
    assert get(port, "/env?key=LOG_LEVEL")["value"] == "debug"
    # every IMDS call carried a token; no IMDSv1
    assert all(r.had_token for r in emulator.requests if r.method == "GET")


def test_a_secret_reaches_the_process_and_nowhere_else(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                       new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    port = prepare(new_root, shop_repo, moto_server, imds(seeded))
    boot = new_root("boot", check=True)
    status = new_root("status")
    status_json = new_root("status", "--json")
    assert get(port, "/env?key=SECRET_TOKEN")["value"] == SECRET
    needle = "s3cr3t".encode()
    holders = [p for p in new_root.root.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert [p.relative_to(new_root.root) for p in holders] == [Path("etc/unified/programs/echo.env")]
    assert stat.S_IMODE(holders[0].stat().st_mode) == 0o600
    for output in (boot.stdout, boot.stderr, status.stdout, status_json.stdout, status.stderr):
        assert "s3cr3t" not in output
    assert "SECRET_TOKEN" in status.stdout  # keys are shown, values never


@pytest.mark.parametrize("service_tag", [
    "nope",                                   # not in services.yaml
    "echo\n[program:evil]\ncommand=/bin/sh",  # smuggling a supervisord section
    "echo; touch /tmp/pwned",                 # shell metacharacters
    "../echo",
    "echo\n",                                 # near misses: the tag is compared as IMDS sends it
    " echo",
    "Echo",
])
def test_bad_service_tags_abandon_with_nothing_started(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                        new_root: Agent, service_tag: str) -> None:
    seeded = seed(moto_server, {"unified:mode": "production", "unified:service": service_tag})
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    result = new_root("boot")
    assert result.returncode == 2, result.stderr
    assert "unified:service" in result.stderr and "is not in" in result.stderr and "ABANDON" in result.stderr
    # the untrusted value is shown escaped on one line, never as a line of its own
    assert "Traceback" not in result.stderr and "\n[program:evil]" not in result.stderr
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]
    assert target_health(moto_server, seeded.target_group_arn) == []
    assert not (new_root.root / "etc/unified/supervisord.conf").exists()
    assert processes_under(new_root.root) == []


@pytest.mark.parametrize("name", ["SUPERVISOR_SERVER_URL", "UNIFIED_COMMAND", "PORT"])
def test_a_config_var_the_agent_relies_on_is_refused_at_ssm_read(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                                  new_root: Agent, name: str) -> None:
    seeded = seed(moto_server, PRODUCTION)
    moto_server.client("ssm", internal=True).put_parameter(
        Name=f"/unified/production/echo/{name}", Value="unix:///tmp/elsewhere.sock", Type="String")
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    result = new_root("boot")
    assert result.returncode == 2 and f"/unified/production/echo/{name}" in result.stderr, result.stderr
    assert "are the agent's" in result.stderr and "ABANDON" in result.stderr
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]
    assert target_health(moto_server, seeded.target_group_arn) == []


def test_a_group_set_up_wrong_is_warned_of_once_in_the_log_and_in_status(moto_server: MotoServer, imds: Any,
                                                                          shop_repo: Path, new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION, terminate_hook=None)
    moto_server.client("autoscaling", internal=True).attach_load_balancer_target_groups(
        AutoScalingGroupName=seeded.auto_scaling_group_name, TargetGroupARNs=[seeded.target_group_arn])
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    result = new_root("boot", check=True)
    assert "has no terminating lifecycle hook" in result.stderr, result.stderr
    assert "has target group prod-echo attached" in result.stderr
    again = new_root("boot", check=True)
    assert "warning" not in again.stderr.lower()  # said once, on the first boot
    code, report = new_root.status()
    assert code == 0 and len(report["warnings"]) == 2
    assert "warning: group asg-echo has no terminating lifecycle hook" in new_root("status").stdout


def test_a_group_with_a_warm_pool_is_refused_with_the_reason(moto_server: MotoServer, imds: Any,
                                                               shop_repo: Path, new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    moto_server.client("autoscaling", internal=True).put_warm_pool(
        AutoScalingGroupName=seeded.auto_scaling_group_name, MinSize=1)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    result = new_root("boot")
    assert result.returncode == 1 and "has a warm pool" in result.stderr and "ABANDON" in result.stderr
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]
    assert target_health(moto_server, seeded.target_group_arn) == []


def test_the_service_policy_denies_what_belongs_to_another_service(moto_server: MotoServer, imds: Any,
                                                                     shop_repo: Path, new_root: Agent) -> None:
    """The policy of `echo` against the same calls made for `other`: every one denied
    (and the calls for `echo` allowed, so a policy that denies everything fails here)."""
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    assert new_root.services is not None
    policy = instance_role(catalog.load(new_root.services), "production", "echo", ACCOUNT_ID, moto_server.region)
    own = {r.action: r for r in iam.requests_of(moto_server)}
    for action in ("ssm:GetParametersByPath", "elasticloadbalancing:RegisterTargets",
                   "autoscaling:CompleteLifecycleAction"):
        assert iam.allowed(policy, own[action]), own[action]
    region, account = moto_server.region, ACCOUNT_ID
    others = [
        iam.Request("ssm:GetParametersByPath", (f"arn:aws:ssm:{region}:{account}:parameter/unified/production/other",)),
        iam.Request("ssm:GetParametersByPath", (f"arn:aws:ssm:{region}:{account}:parameter/unified/production",)),
        iam.Request("ssm:GetParametersByPath", (f"arn:aws:ssm:{region}:{account}:parameter/unified/staging/echo",)),
        iam.Request("elasticloadbalancing:RegisterTargets",
                    (f"arn:aws:elasticloadbalancing:{region}:{account}:targetgroup/prod-other/0123456789abcdef",)),
        iam.Request("elasticloadbalancing:DeregisterTargets",
                    (f"arn:aws:elasticloadbalancing:{region}:{account}:targetgroup/prod-echo-x/0123456789abcdef",)),
        iam.Request("autoscaling:CompleteLifecycleAction", own["autoscaling:CompleteLifecycleAction"].resources,
                    {"autoscaling:ResourceTag/unified:mode": "production",
                     "autoscaling:ResourceTag/unified:service": "other"}),
        iam.Request("autoscaling:CompleteLifecycleAction", own["autoscaling:CompleteLifecycleAction"].resources,
                    {"autoscaling:ResourceTag/unified:mode": "staging",
                     "autoscaling:ResourceTag/unified:service": "echo"}),
        iam.Request("autoscaling:CompleteLifecycleAction", own["autoscaling:CompleteLifecycleAction"].resources, {}),
        iam.Request("autoscaling:CreateOrUpdateTags"),
        iam.Request("ssm:PutParameter", (f"arn:aws:ssm:{region}:{account}:parameter/unified/production/echo/X",)),
    ]
    for request in others:
        assert not iam.allowed(policy, request), f"{request} should be denied to echo"


def test_bad_mode_tag_is_refused(moto_server: MotoServer, imds: Any, shop_repo: Path, new_root: Agent) -> None:
    seeded = seed(moto_server, {"unified:mode": "Production", "unified:service": "echo"})
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    result = new_root("boot")
    assert result.returncode == 2 and "'Production' is not one of" in result.stderr
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]


def test_a_service_that_never_gets_ready_abandons(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                   new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded), health_path="/never", timeout=3)
    result = new_root("boot")
    assert result.returncode == 1
    assert "echo" in result.stderr and "not ready" in result.stderr and "ABANDON" in result.stderr
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]
    assert target_health(moto_server, seeded.target_group_arn) == []
    code, report = new_root.status()
    assert code == 3 and "echo" in report["last_error"]
    # why, for the deploy tool: a tag on the instance itself, the one EC2 write its role may make
    reason = moto_server.instance_tags(seeded.instance_id)["unified:boot-error"]
    assert "echo" in reason and "not ready" in reason and len(reason) <= 256
    assert_allowed_by_the_service_policy(moto_server, 0, new_root)


def test_imds_unreachable_fails_clearly_after_its_deadline(shop_repo: Path, new_root: Agent,
                                                           moto_server: MotoServer) -> None:
    dead_port = free_ports(1)[0]  # nothing listens there
    prepare(new_root, shop_repo, moto_server, None)
    new_root.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{dead_port}"
    t0 = time.monotonic()
    result = new_root("boot", "--imds-deadline", "3")
    elapsed = time.monotonic() - t0
    assert result.returncode == 1 and 3 <= elapsed < 20
    assert f"127.0.0.1:{dead_port}" in result.stderr and "did not answer" in result.stderr
    assert "Traceback" not in result.stderr
    assert "/3s" in result.stderr  # each failed try is logged with elapsed/deadline


def test_tags_off_in_imds_fall_back_to_describe_tags(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                     new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    port = prepare(new_root, shop_repo, moto_server, imds(seeded, tags_enabled=False))
    before = len(moto_server.calls)
    new_root("boot", check=True)
    calls = [c.action for c in moto_server.calls[before:]]
    assert "DescribeTags" in calls and len(calls) <= 8, calls
    assert_allowed_by_the_service_policy(moto_server, before, new_root)
    assert get(port, "/health")["ok"]


def test_restart_deregisters_and_drains_before_it_stops(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                        new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    port = prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    old_pid = get(port, "/health")["pid"]
    before = len(moto_server.calls)
    result = new_root("restart", "--drain-timeout", "1", check=True)
    lines = result.stdout.splitlines()
    drained = next(i for i, l in enumerate(lines) if l.startswith("deregistered from target group prod-echo"))
    restarted = next(i for i, l in enumerate(lines) if l.startswith("echo: restarted"))
    again = next(i for i, l in enumerate(lines) if l.startswith("registered again"))
    assert drained < restarted < again
    calls = [c.action for c in moto_server.calls[before:]]
    assert calls[0] == "DeregisterTargets" and "RegisterTargets" in calls
    assert_allowed_by_the_service_policy(moto_server, before, new_root)
    assert calls.index("DeregisterTargets") < calls.index("RegisterTargets")
    assert get(port, "/health")["pid"] != old_pid
    assert target_health(moto_server, seeded.target_group_arn) == [(seeded.instance_id, "healthy")]


def sigterms(agent: Agent, program: str = "echo") -> list[float]:
    """When the service got SIGTERM (time.monotonic(), from its log)."""
    log = (agent.root / f"var/log/unified/{program}.log").read_text()
    return [float(line.split()[2].rstrip(":")) for line in log.splitlines() if line.startswith("SIGTERM at ")]


def assert_stopped_only_once_drained(moto: MotoServer, agent: Agent, seeded: Any) -> None:
    """The service got SIGTERM only after its last drain had run its whole delay."""
    [*_, (target, began, ends)] = moto.drain_history(seeded.target_group_arn)
    [*_, stopped] = sigterms(agent)
    assert target == seeded.instance_id
    assert stopped >= ends, f"SIGTERM {ends - stopped:.2f}s before the drain ended (began {stopped - began:.2f}s before)"


def test_restart_and_stop_wait_for_the_whole_drain(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                   new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)  # a deregistration delay of 2 s
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    new_root("restart", check=True)
    assert_stopped_only_once_drained(moto_server, new_root, seeded)
    new_root("stop", check=True)
    assert len(sigterms(new_root)) == 2
    assert_stopped_only_once_drained(moto_server, new_root, seeded)


def test_a_failure_after_registering_deregisters_and_abandons(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                              new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    # registered, then the load balancer cannot say whether it is healthy
    moto_server.inject_error("DescribeTargetHealth", 50, status=400, code="AccessDenied", message="denied")
    result = new_root("boot")
    assert result.returncode == 1 and "AccessDenied" in result.stderr, result.stderr
    calls = [c.action for c in moto_server.calls]
    assert calls.index("RegisterTargets") < calls.index("DeregisterTargets"), calls
    moto_server.clear_faults()
    assert target_health(moto_server, seeded.target_group_arn) in ([], [(seeded.instance_id, "draining")])
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]


def test_second_boot_registers_once_and_skips_the_completed_hook(moto_server: MotoServer, imds: Any,
                                                                 shop_repo: Path, new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    before = len(moto_server.calls)
    new_root("boot", check=True)
    calls = [c.action for c in moto_server.calls[before:]]
    assert "CompleteLifecycleAction" not in calls and "DescribeLifecycleHooks" not in calls
    assert "RegisterTargets" not in calls, calls  # still registered: not registered again
    assert moto_server.call_count("RegisterTargets") == 1
    assert target_health(moto_server, seeded.target_group_arn) == [(seeded.instance_id, "healthy")]
    assert len(moto_server.lifecycle_actions) == 1


def test_stop_deregisters_first(moto_server: MotoServer, imds: Any, shop_repo: Path, new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    result = new_root("stop", "--drain-timeout", "1", check=True)
    assert result.stdout.index("deregistered from") < result.stdout.index("stopped everything")
    # maybe still draining (2 s delay, we waited at most 1 s), as on AWS: out of rotation either way
    assert target_health(moto_server, seeded.target_group_arn) in ([], [(seeded.instance_id, "draining")])
    assert processes_under(new_root.root) == []


def test_heartbeats_keep_the_hook_alive_during_a_slow_start(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                             new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded), start_delay=2.5)
    new_root("boot", "--heartbeat-interval", "0.5", check=True)
    kinds = [a["action"] for a in moto_server.lifecycle_actions]
    assert kinds.count("RecordLifecycleActionHeartbeat") >= 3, kinds
    assert kinds[-1] == "CompleteLifecycleAction"


def test_throttling_is_absorbed_by_boto3_retries(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                 new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    moto_server.inject_throttling("RegisterTargets", 2)
    moto_server.inject_throttling("GetParametersByPath", 2)
    new_root("boot", check=True)
    assert moto_server.call_count("RegisterTargets") == 3
    assert target_health(moto_server, seeded.target_group_arn) == [(seeded.instance_id, "healthy")]


def test_staging_registers_with_a_classic_elb(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                              new_root: Agent) -> None:
    seeded = seed_instance(moto_server, tags={"unified:mode": "staging", "unified:service": "echo"},
                           classic_elb="stg-echo", auto_scaling_group="asg-echo")
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    before = len(moto_server.calls)
    new_root("boot", check=True)
    # the wait came from the classic ELB's health check (its defaults: (10 + 1) x 30 s + 30 s)
    steps = [step["name"] for step in new_root.status()[1]["steps"]]
    assert "healthy in classic ELB stg-echo (allowed 360s)" in steps, steps
    assert_allowed_by_the_service_policy(moto_server, before, new_root, mode="staging")
    elb = moto_server.client("elb", internal=True)
    states = elb.describe_instance_health(LoadBalancerName="stg-echo")["InstanceStates"]
    assert [(s["InstanceId"], s["State"]) for s in states] == [(seeded.instance_id, "InService")]
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["CONTINUE"]
    result = new_root("stop", "--drain-timeout", "1", check=True)
    assert "deregistered from classic ELB stg-echo" in result.stdout
    assert elb.describe_instance_health(LoadBalancerName="stg-echo")["InstanceStates"] == []


def test_a_mistyped_restart_leaves_the_box_in_the_load_balancer(moto_server: MotoServer, imds: Any,
                                                                shop_repo: Path, new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    before = len(moto_server.calls)
    result = new_root("restart", "ecko")
    assert result.returncode == 2 and "no program named 'ecko'" in result.stderr
    assert [c.action for c in moto_server.calls[before:]] == []  # nothing deregistered
    assert target_health(moto_server, seeded.target_group_arn) == [(seeded.instance_id, "healthy")]


def test_bad_flags_are_refused_before_asking_imds(shop_repo: Path, new_root: Agent, moto_server: MotoServer) -> None:
    prepare(new_root, shop_repo, moto_server, None)
    new_root.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{free_ports(1)[0]}"
    t0 = time.monotonic()
    result = new_root("boot", "--mode", "prod", "--service", "echo")
    assert result.returncode == 2 and "'prod' is not one of" in result.stderr
    assert time.monotonic() - t0 < 10  # no IMDS retries before the refusal
    result = new_root("boot", "--service", "echo")
    assert result.returncode == 2 and "--service needs --mode" in result.stderr


def test_production_never_runs_the_release(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                           new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root.services.write_text(new_root.services.read_text().replace(
        "    command: ", "    release: touch RELEASED\n    command: ", 1))
    new_root("boot", check=True)
    assert not (new_root.root / "srv/unified/repos/shop/RELEASED").exists()
    plan = json.loads(new_root("plan", "--mode", "production", "--service", "echo", "--json", check=True).stdout)
    assert plan["deferred_release"] == "touch RELEASED" and plan["programs"][0]["release"] is None


def test_a_config_change_reaches_the_service_drained(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                     new_root: Agent) -> None:
    seeded = seed(moto_server, PRODUCTION)
    port = prepare(new_root, shop_repo, moto_server, imds(seeded))
    new_root("boot", check=True)
    old_pid = get(port, "/health")["pid"]
    moto_server.client("ssm", internal=True).put_parameter(
        Name="/unified/production/echo/SECRET_TOKEN", Value="rotated", Type="SecureString", Overwrite=True)
    before = len(moto_server.calls)
    result = new_root("boot", check=True)
    assert get(port, "/env?key=SECRET_TOKEN")["value"] == "rotated"
    assert get(port, "/health")["pid"] != old_pid
    calls = [c.action for c in moto_server.calls[before:]]
    assert calls.index("DeregisterTargets") < calls.index("RegisterTargets")  # drained around the restart
    assert "rotated" not in result.stdout + result.stderr


def test_a_review_tag_boots_the_whole_stack_without_a_load_balancer(moto_server: MotoServer, imds: Any,
                                                                    shop_repo: Path, new_root: Agent) -> None:
    seeded = seed_instance(moto_server, tags={"unified:mode": "review"})
    port = prepare(new_root, shop_repo, moto_server, imds(seeded))
    before = len(moto_server.calls)
    new_root("boot", check=True)
    code, report = new_root.status()
    assert code == 0 and report["role"] == {"mode": "review", "service": None, "target_group": None, "run_release": False}
    assert sorted(p["name"] for p in report["programs"]) == ["echo", "other"]
    assert get(port, "/env?key=SECRET_TOKEN")["value"] is None  # no SSM outside staging/production
    calls = [c.action for c in moto_server.calls[before:]]
    assert not any(a in calls for a in ("RegisterTargets", "GetParametersByPath", "CompleteLifecycleAction")), calls
