"""`unified deploy` and `unified rollback` for real, on the simulated fleet.

Every instance the tool's groups launch in moto becomes a real agent (its own root,
IMDSv2 emulator and service port) behind HAProxy mirroring the ALB's listener: its
weights, its header rules and the target health. wrk keeps 200 ms requests in flight
through the listener while the tool works; HAProxy retries nothing, so a request sent
to an instance that stopped fails and is counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import git_commit_all, make_stack_repo
from tests.harness.deploy_env import ENV, PAIR, DeployEnv, seed, services_yaml, slow_verify
from tests.harness.fleet import bake_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def baked() -> Iterator[tuple[Path, dict[str, Path], dict[str, str]]]:
    """Versions of the code, baked: v1, v2, v3 whose health check fails, and v2s: v2
    taking 6 s to start (a deploy still running while a test looks at it)."""
    base = Path(tempfile.mkdtemp(prefix="unified-deploy-", dir="/tmp"))
    base.chmod(0o755)
    repo = make_stack_repo(base)
    echo = repo / "testapps/echo.py"
    commits, roots = {}, {}
    original = echo.read_text()
    for label in ("v1", "v2", "v3"):
        if label != "v1":
            text = original.replace('VERSION = "1"', f'VERSION = "{label[1:]}"')
            if label == "v3":  # a version that never gets healthy
                text = text.replace('if url.path == "/health":', 'if url.path == "/health-broken":')
            echo.write_text(text)
            git_commit_all(repo, label)
        commits[label] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
        subprocess.run(["git", "-C", str(repo), "tag", label], check=True)
        # v3 never gets healthy: its agents give up after 5 s instead of the usual 20
        roots[label] = bake_image(base / f"image-{label}", services_yaml(repo, label,
                                                                         health_timeout=5 if label == "v3" else None))
    commits["v2s"] = commits["v2"]
    roots["v2s"] = bake_image(base / "image-v2s", services_yaml(repo, "v2", start_delay=6))
    yield repo, roots, commits
    subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def prod(moto_server: Any, baked: tuple[Path, dict[str, Path], dict[str, str]], fleet: Any, alb_mirror: Any,
         tmp_path: Path) -> DeployEnv:
    repo, roots, commits = baked
    return seed(moto_server, roots, commits, lambda subnets: services_yaml(repo, "main", subnets),
                tmp_path / "services.yaml", fleet, alb_mirror)


def deployed(prod: DeployEnv, label: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result = prod.unified("deploy", ENV, "--image", prod.images[label], "--probe-url", prod.alb.url, *extra)
    assert result.returncode == 0, f"deploy {label} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_a_first_deploy_then_v2_under_load_drops_nothing(prod: DeployEnv, load: Any) -> None:
    first = deployed(prod, "v1")
    assert "switched 1 route(s) to prod-echo-green" in first.stderr
    assert prod.weights() == {PAIR[0]: 0, PAIR[1]: 100}
    assert set(prod.versions(10)) == {"1"}
    prod.alb.wait_synced()

    traffic = load(prod.alb.url, 60, 8, "/slow?ms=200")
    time.sleep(1.5)
    second = deployed(prod, "v2")
    time.sleep(1.0)
    traffic.stop()
    result = traffic.result(timeout=60)
    print(f"deploy under load: {result.summary()}")
    assert result.requests > 50, result.summary()
    assert result.failed == 0, (result.summary(), second.stderr, prod.alb.counters())
    assert prod.weights() == {PAIR[0]: 100, PAIR[1]: 0}
    assert set(prod.versions(20)) == {"2"}
    # every step said what it did, on stderr
    for step in ("preflight", "instances in service", "healthy in target group", "candidate route",
                 "switched 1 route(s) to prod-echo-blue", "stays warm as the standby"):
        assert step in second.stderr, step
    # the old version stays warm at full size; nothing was left behind
    groups = prod.groups()
    assert sorted(g["desired"] for g in groups.values()) == [2, 2]
    assert prod.rules() == []


def test_a_broken_version_is_never_switched_and_its_group_and_rule_go(prod: DeployEnv) -> None:
    deployed(prod, "v1")
    prod.alb.wait_synced()
    before = prod.alb.counters()
    result = prod.unified("deploy", ENV, "--image", prod.images["v3"], "--probe-url", prod.alb.url,
                          "--boot-timeout", "60")
    assert result.returncode == 1, result.stderr
    # the failing instance and its agent's reason, not just "unhealthy"
    assert "FAILED" in result.stdout and "failed to boot" in result.stdout
    assert "i-" in result.stdout and "echo: not ready" in result.stdout, result.stdout
    assert prod.weights() == {PAIR[0]: 0, PAIR[1]: 100}           # never switched
    assert set(prod.versions(10)) == {"1"}
    assert prod.rules() == []                                     # the candidate route is gone
    assert [g["tags"]["unified:deploy"] for g in prod.groups().values()] == [
        next(iter(prod.groups().values()))["tags"]["unified:deploy"]]  # only v1's group is left
    prod.alb.wait_synced()
    after = prod.alb.counters()
    assert after[PAIR[0]].default == before[PAIR[0]].default  # no customer request reached the broken version
    releases = prod.unified("releases", ENV, "echo")
    assert releases.returncode == 0 and " failed " in releases.stdout and "succeeded" in releases.stdout


def test_a_warm_rollback_under_load_takes_seconds_and_drops_nothing(prod: DeployEnv, load: Any) -> None:
    deployed(prod, "v1")
    deployed(prod, "v2")
    prod.alb.wait_synced()
    traffic = load(prod.alb.url, 30, 8, "/slow?ms=200")
    time.sleep(1.5)
    rolled = prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url)
    assert rolled.returncode == 0, rolled.stderr
    time.sleep(1.0)
    traffic.stop()
    result = traffic.result(timeout=60)
    seconds = float(rolled.stdout.split("all traffic on it ")[1].split("s after")[0])
    print(f"warm rollback: all traffic on v1 {seconds:.2f}s after the command; load: {result.summary()}")
    assert seconds < 10, rolled.stdout
    assert result.failed == 0, result.summary()
    assert set(prod.versions(20)) == {"1"}
    assert prod.weights() == {PAIR[0]: 0, PAIR[1]: 100}
    history = prod.unified("releases", ENV, "--json")
    kinds = [(r["kind"], r["result"]) for r in json.loads(history.stdout)]
    assert kinds[0] == ("rollback", "succeeded") and len(kinds) == 3


def test_a_cold_rollback_verifies_before_it_switches(prod: DeployEnv) -> None:
    deployed(prod, "v1")
    deployed(prod, "v2")
    deployed(prod, "v1")  # v2 is the warm standby now; the first v1 group is kept at zero
    first = sorted(prod.groups())[0]
    assert prod.groups()[first]["desired"] == 0
    deploy_id = first.split(".")[-1]
    rolled = prod.unified("rollback", ENV, "echo", "--to", deploy_id, "--probe-url", prod.alb.url)
    assert rolled.returncode == 0, rolled.stderr
    err = rolled.stderr
    assert "cold rollback" in err
    assert err.index("instances in service") < err.index("candidate route") < err.index("switched 1 route(s)")
    assert set(prod.versions(10)) == {"1"}
    assert prod.groups()[first]["desired"] == 2


class Running:
    """A `unified` command in the background, its stderr read line by line as it comes."""

    def __init__(self, prod: DeployEnv, *args: str):
        self.process = prod.start(*args)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for(self, fragment: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(fragment in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {fragment!r} in:\n{''.join(self.lines)}"
            assert self.process.poll() is None or any(fragment in line for line in self.lines), \
                f"exited {self.process.returncode} before {fragment!r}:\n{''.join(self.lines)}"
            time.sleep(0.02)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        out = self.process.stdout.read() if self.process.stdout else ""
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.process.returncode, out, "".join(self.lines)


def lock_holder(prod: DeployEnv) -> dict[str, Any] | None:
    result = prod.unified("lock", "status", ENV, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["echo"]


@pytest.mark.parametrize(("phase", "marker"), [
    ("group", "launch template version"),
    ("verify", "healthy in target group"),
    ("switch", "switched 1 route(s)"),
])
def test_a_deploy_killed_in_any_phase_frees_its_lock_within_the_lease_and_is_cleaned_up(
        prod: DeployEnv, phase: str, marker: str) -> None:
    deployed(prod, "v1")
    if phase == "verify":  # five probes of 600 ms: the kill lands in them, not after the switch
        slow_verify(prod, 600)
    killed = Running(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url,
                     "--lock-lease", "4")
    killed.wait_for(marker)
    killed.process.send_signal(signal.SIGKILL)
    killed_at = time.time()
    killed.finish()
    holder = lock_holder(prod)  # a dead deploy's lock outlives it, for its lease (at most 4 s)
    assert holder is not None and holder["expires"] <= killed_at + 4 + 0.5, holder
    started = time.time()
    after = deployed(prod, "v2", "--wait-lock", "60")

    # Whether it had to wait depends on how long the machine took to start it (the lease
    # may be over by then); either way it holds the lock no later than a poll after the
    # dead deploy's lease ended.
    def at(fragment: str) -> float:  # wall time of a progress line, early by the interpreter's start-up
        line = next(line for line in after.stderr.splitlines() if fragment in line)
        return started + float(line.split("]")[0].strip("[ s"))

    if at("] deploy ") + 2 < holder["expires"]:  # it asked for the lock well inside the lease
        assert "waiting for the lock" in after.stderr
    locked_at = at("] locked echo")
    assert locked_at < max(holder["expires"], started) + 2 + 1, after.stderr  # a poll, start-up
    if phase == "switch":  # it switched before it died: its group serves, and is recorded as live
        assert "recorded as live" in after.stderr
    elif phase != "group" or "was left by deploy" in after.stderr:
        assert "was left by deploy" in after.stderr
    # what remains: the live version (v2) and the warm standby, nothing half-made
    assert set(prod.versions(10)) == {"2"}
    serving = [g for g in prod.groups().values() if g["desired"] > 0]
    assert len(serving) == 2 and prod.rules() == []
    releases = json.loads(prod.unified("releases", ENV, "--json").stdout)
    assert [r["result"] for r in releases][:2] == ["succeeded", "succeeded" if phase == "switch" else "interrupted"]


WRITES = ("Create", "Modify", "Put", "Update", "Delete", "Register", "Deregister", "Set", "Attach", "Detach",
          "Complete", "Record", "Terminate", "Run", "Start", "Stop")


def writes(prod: DeployEnv, since: int = 0) -> list[str]:
    return [c.action for c in prod.moto.calls[since:] if c.action.startswith(WRITES)]


@pytest.mark.parametrize(("edit", "args", "fragment"), [
    (None, ("deploy", "staging", "--image", "ami-0123456789abcdef0"), "no environment 'staging'"),
    (None, ("deploy", ENV, "--image", "ami-0123456789abcdef0", "nope"), "no service 'nope'"),
    (None, ("deploy", ENV, "--image", "ami-0123456789abcdef0"), "image ami-0123456789abcdef0 not found"),
    (None, ("deploy", ENV, "--image", "not-an-ami"), "expected an AMI id"),
    (None, ("deploy", ENV, "--image", "IMAGE", "--lock-lease", "600"), "at most 120 seconds"),
    (("launch_template: unified-production", "launch_template: missing-template"), ("deploy", ENV, "--image", "IMAGE"),
     "launch template missing-template"),
    (("table: unified-production-deploys", "table: missing-table"), ("deploy", ENV, "--image", "IMAGE"),
     "table missing-table not found"),
    (("[prod-echo-blue, prod-echo-green]", "[prod-echo-blue, prod-echo-red]"), ("deploy", ENV, "--image", "IMAGE"),
     "prod-echo-red"),
    (("min: 2, desired: 2, max: 4", "min: 3, desired: 2, max: 4"), ("deploy", ENV, "--image", "IMAGE"),
     "min <= desired <= max"),
    (("retain: 2", "retain: 0"), ("deploy", ENV, "--image", "IMAGE"), "fleet.retain"),
    (("standby_minutes: 30", "standby_minutes: soon"), ("deploy", ENV, "--image", "IMAGE"), "standby_minutes"),
])
def test_bad_input_is_refused_before_any_aws_write(prod: DeployEnv, edit: tuple[str, str] | None,
                                                   args: tuple[str, ...], fragment: str) -> None:
    if edit is not None:
        prod.services.write_text(prod.services.read_text().replace(*edit))
    before = len(prod.moto.calls)
    result = prod.unified(*[prod.images["v1"] if a == "IMAGE" else a for a in args])
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert writes(prod, before) == []
    assert prod.groups() == {}


def test_throttled_aws_still_deploys(prod: DeployEnv) -> None:
    for action in ("CreateAutoScalingGroup", "DescribeAutoScalingGroups", "ModifyListener", "PutItem",
                   "CreateLaunchTemplateVersion", "DescribeTargetHealth"):
        prod.moto.inject_throttling(action, 2)
    deployed(prod, "v1")
    assert prod.moto.call_count("CreateAutoScalingGroup") == 3  # throttled twice, then through
    assert set(prod.versions(10)) == {"1"}


def test_the_control_a_switch_without_verifying_or_draining_fails_requests(prod: DeployEnv, load: Any) -> None:
    """What the tool does by steps, done naively with boto3: a new group is weighted in
    before it serves and the old one is force-deleted. Requests fail, so the zero of the
    deploy test is a measurement."""
    deployed(prod, "v1")
    prod.alb.wait_synced()
    old = next(iter(prod.groups()))
    traffic = load(prod.alb.url, 12, 8, "/slow?ms=200")
    time.sleep(1.5)
    autoscaling = prod.moto.client("autoscaling")
    template = prod.moto.client("ec2").describe_launch_templates()["LaunchTemplates"][0]["LaunchTemplateId"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="naive", LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=2, MaxSize=2, DesiredCapacity=2, VPCZoneIdentifier=",".join(prod.net.subnet_ids),
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in
              {"unified:mode": ENV, "unified:service": "echo", "unified:target-group": PAIR[0]}.items()])
    elbv2 = prod.moto.client("elbv2")
    elbv2.modify_listener(ListenerArn=prod.net.listener_arn, DefaultActions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": prod.net.target_groups[PAIR[0]], "Weight": 100},
                         {"TargetGroupArn": prod.net.target_groups[PAIR[1]], "Weight": 0}]}}])
    autoscaling.delete_auto_scaling_group(AutoScalingGroupName=old, ForceDelete=True)
    result = traffic.result(timeout=60)
    print(f"control (switched unverified, old group force-deleted): {result.summary()}")
    assert result.failed > 0, result.summary()


def test_every_call_the_tool_makes_is_allowed_by_the_deployer_policy_and_no_more(prod: DeployEnv) -> None:
    from agent.config import catalog
    from fleet.policy import deployer
    from tests.harness import iam
    from tests.harness.moto_server import ACCOUNT_ID
    deployed(prod, "v1")
    deployed(prod, "v2")
    assert prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url).returncode == 0
    assert prod.unified("deploy", ENV, "--image", prod.images["v3"], "--probe-url", prod.alb.url,
                        "--boot-timeout", "60").returncode == 1
    for read in (("status", ENV), ("releases", ENV), ("lock", "status", ENV)):
        assert prod.unified(*read).returncode == 0
    policy = deployer(catalog.load(prod.services), ENV, ACCOUNT_ID, prod.moto.region)
    # the tool's own calls, by User-Agent (the instances' agents are checked against their role elsewhere)
    tool = [r for r in prod.moto.requests if "unified-deploy" in r.user_agent]
    checked = 0
    for request in tool:
        judged = iam.to_request(prod.moto, request.service, request.action, request.params)
        assert iam.allowed(policy, judged), f"{judged} is not allowed by the deployer policy"
        checked += 1
    assert checked > 50
    # and what belongs to another environment, or to nothing of the tool's, is denied
    region, account = prod.moto.region, ACCOUNT_ID
    group = f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/staging.echo.x"
    for request in (
        iam.Request("autoscaling:UpdateAutoScalingGroup", (group,), {"aws:ResourceTag/unified:mode": "staging"}),
        iam.Request("autoscaling:DeleteAutoScalingGroup", (group.replace("staging", "production"),),
                    {"aws:ResourceTag/unified:mode": "staging"}),
        iam.Request("autoscaling:CreateAutoScalingGroup", (group.replace("staging", "production"),),
                    {"aws:RequestTag/unified:mode": "staging"}),
        iam.Request("elasticloadbalancing:ModifyListener",
                    (f"arn:aws:elasticloadbalancing:{region}:{account}:listener/app/other-alb/1/2",)),
        iam.Request("dynamodb:PutItem", (f"arn:aws:dynamodb:{region}:{account}:table/unified-staging-deploys",)),
        iam.Request("ec2:CreateLaunchTemplateVersion", (f"arn:aws:ec2:{region}:{account}:launch-template/lt-1",),
                    {"aws:ResourceTag/unified:mode": "staging"}),
        iam.Request("ec2:TerminateInstances"),
        iam.Request("elasticloadbalancing:DeleteLoadBalancer"),
    ):
        assert not iam.allowed(policy, request), f"{request} should be denied"


def test_the_release_runs_once_per_deploy_on_the_first_instance_before_traffic(
        moto_server: Any, baked: tuple[Path, dict[str, Path], dict[str, str]], fleet: Any, alb_mirror: Any,
        tmp_path: Path) -> None:
    repo, _, commits = baked
    ledger = Path(tempfile.mkdtemp(prefix="unified-releases-", dir="/tmp"))
    ledger.chmod(0o777)  # the release runs as the services' user
    release = f"sh -c 'echo ran >> {ledger}/releases.log'"
    roots = {label: bake_image(tmp_path / f"image-{label}", services_yaml(repo, label, release=release))
             for label in ("v1", "v2")}
    prod = seed(moto_server, roots, commits,
                lambda subnets: services_yaml(repo, "main", subnets, desired=3, release=release),
                tmp_path / "services.yaml", fleet, alb_mirror)
    try:
        first = deployed(prod, "v1")
        assert "the first instance runs the release" in first.stderr
        assert (ledger / "releases.log").read_text().count("ran") == 1
        deployed(prod, "v2")
        assert (ledger / "releases.log").read_text().count("ran") == 2  # once per deploy, 3 instances each
        assert set(prod.versions(10)) == {"2"}
        live = [g for g in prod.groups().values() if g["desired"] == 3]
        assert all("unified:release" not in g["tags"] for g in live)  # later instances never run it
    finally:
        subprocess.run(["rm", "-rf", str(ledger)], check=False)


def test_status_releases_and_a_forced_lock_release_say_what_is_true(prod: DeployEnv) -> None:
    deployed(prod, "v1")
    deployed(prod, "v2")
    status = prod.unified("status", ENV)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    live = next(line for line in lines if line.strip().startswith("live"))
    standby = next(line for line in lines if line.strip().startswith("standby"))
    assert prod.images["v2"] in live and "2/2 in service" in live and "2 healthy in prod-echo-blue, weight 100" in live
    assert prod.images["v1"] in standby and "weight 0" in standby and "to zero at" in standby
    assert "lock     free" in status.stdout
    data = json.loads(prod.unified("status", ENV, "--json").stdout)["services"]["echo"]
    assert data["weights"] == {"prod-echo-blue": 100, "prod-echo-green": 0}
    assert data["live"]["commits"] and data["standby"]["desired"] == 2
    releases = prod.unified("releases", ENV, "echo").stdout.splitlines()
    assert releases[0].startswith("=== production releases") and len(releases) == 3
    assert prod.images["v2"] in releases[1] and "shop@" in releases[1] and "boot" in releases[1]

    free = prod.unified("lock", "release", ENV, "echo")
    assert free.returncode == 0 and "free" in free.stdout
    running = Running(prod, "deploy", ENV, "--image", prod.images["v2s"], "--probe-url", prod.alb.url)
    running.wait_for("instances in service")
    holder = lock_holder(prod)
    assert holder is not None
    refused = prod.unified("lock", "release", ENV, "echo")
    assert refused.returncode == 4 and "--force" in refused.stderr and holder["holder"] in refused.stderr
    forced = prod.unified("lock", "release", ENV, "echo", "--force")
    assert forced.returncode == 0 and f"released the lock of {holder['holder']}" in forced.stdout
    assert holder["deploy_id"] in forced.stdout
    code, _, err = running.finish()
    assert code == 1 and "lost the deploy lock" in err  # it stopped at its next step, switched nothing
    assert set(prod.versions(10)) == {"2"}
    assert prod.rules() == []


def test_a_failure_after_the_switch_of_a_deploy_or_a_rollback_leaves_it_live_and_recorded(prod: DeployEnv) -> None:
    deployed(prod, "v1")
    deployed(prod, "v2")
    # the switch to v1 is made; then scheduling the end of v2's standby is refused
    prod.moto.inject_error("PutScheduledUpdateGroupAction", 5, status=400, code="ValidationError",
                           message="refused for the test")
    failed = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
    assert failed.returncode == 5, failed.stderr  # the new version serves
    assert f"to go back: unified rollback {ENV} echo" in failed.stderr
    assert "(it serves), then failed" in failed.stdout and "refused for the test" in failed.stdout
    prod.moto.clear_faults()
    assert set(prod.versions(10)) == {"1"}
    newest = json.loads(prod.unified("releases", ENV, "--json").stdout)[0]
    assert newest["result"] == "succeeded" and "switched, then failed" in newest["detail"]
    # the next deploy builds on it: the version that serves is never taken for a leftover
    after = deployed(prod, "v2")
    assert "was left by deploy" not in after.stderr
    assert set(prod.versions(10)) == {"2"}
    # a rollback that fails after its switch says the same: the version rolled back to serves
    prod.moto.inject_error("PutScheduledUpdateGroupAction", 5, status=400, code="ValidationError",
                           message="refused for the test")
    rolled = prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url)
    prod.moto.clear_faults()
    assert rolled.returncode == 5, rolled.stderr
    assert "(it serves), then failed" in rolled.stdout and "refused for the test" in rolled.stdout, rolled.stdout
    assert set(prod.versions(10)) == {"1"}
    newest = json.loads(prod.unified("releases", ENV, "--json").stdout)[0]
    assert newest["kind"] == "rollback" and newest["result"] == "succeeded", newest
    assert "switched, then failed" in newest["detail"]
