"""Trying to break `unified deploy` / `unified rollback` on the simulated fleet.

Hostile input, AWS faults, signals at every phase, concurrency, and load through
failures. Each test names the guarantee it holds the tool to; several began as defects
they found (docs/reliability.md lists them with the fix).

The fixtures are those of test_deploy.py (`baked`, `prod`): three versions of the echo
service, v1, v2 and v3 (whose health check never passes), behind the blue/green pair
`prod-echo-blue` / `prod-echo-green` of an ALB mirrored by HAProxy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.deploy_env import ENV, PAIR, SINGLE, TABLE, DeployEnv, seed, services_yaml, slow_verify
from tests.harness.fleet import bake_image
from tests.integration.test_deploy import Running, baked, deployed, lock_holder, prod, writes  # noqa: F401

pytestmark = pytest.mark.integration

BLUE, GREEN = PAIR


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture
def bg() -> Iterator[Any]:
    """Factory for background `unified` commands; any still running after the test is
    killed (before the fleet's teardown, which then stops every instance)."""
    started: list[Running] = []

    def make(env: DeployEnv, *args: str) -> Running:
        running = Running(env, *args)
        started.append(running)
        return running

    yield make
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=30)


def releases(env: DeployEnv) -> list[dict[str, Any]]:
    result = env.unified("releases", ENV, "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def no_traceback(result: Any) -> None:
    err = result.stderr if hasattr(result, "stderr") else result
    assert "Traceback" not in err and "unexpected " not in err, err


def deploy_id_of(lines: list[str]) -> str:
    line = next(line for line in lines if "] deploy " in line and " by " in line)
    return line.split("] deploy ")[1].split(" ")[0]


def live_group(env: DeployEnv) -> str:
    colour = max(env.weights().items(), key=lambda kv: kv[1])[0]
    return next(name for name, g in env.groups().items()
                if g["desired"] > 0 and g["tags"].get("unified:target-group") == colour)


class Sampler:
    """GETs through the listener in a loop (optionally with a header), recording each
    answer's version (or its status), until stopped."""

    def __init__(self, url: str, path: str = "/health", headers: dict[str, str] | None = None):
        self.url, self.path, self.headers = url, path, headers or {}
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(self.url + self.path, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    version = str(json.loads(reply.read() or b"{}").get("version", "?"))
            except urllib.error.HTTPError as error:
                version = str(error.code)
            except OSError as error:
                version = error.__class__.__name__
            self.seen.append((time.monotonic(), version))
            time.sleep(0.02)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=10)
        return [v for _, v in self.seen]


def wait_versions(env: DeployEnv, expected: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (seen := set(env.versions(10))) != expected:
        assert time.monotonic() < deadline, f"versions {seen}, expected {expected}"
        time.sleep(0.5)


def put_item(env: DeployEnv, item: dict[str, Any]) -> None:
    env.moto.client("dynamodb", internal=True).put_item(TableName=TABLE, Item=item)


# --- hostile input -------------------------------------------------------------------------

def test_a_lock_item_without_expires_does_not_lock_the_service_forever(prod: DeployEnv) -> None:
    put_item(prod, {"pk": {"S": f"lock#{ENV}"}, "sk": {"S": "echo"}, "who": {"S": "ghost@nowhere"},
                    "deploy_id": {"S": "20200101t000000-dead"}})
    first = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
    no_traceback(first)
    if first.returncode == 4:  # refused: then the tool must show it and let --force take it
        status = prod.unified("lock", "status", ENV)
        assert "echo: free" not in status.stdout, (first.stderr, status.stdout)
        forced = prod.unified("lock", "release", ENV, "echo", "--force")
        assert "the lock is free" not in forced.stdout, forced.stdout
        first = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
    assert first.returncode == 0, first.stderr


def test_a_lock_item_with_garbage_fields_is_reported_not_a_crash(prod: DeployEnv) -> None:
    put_item(prod, {"pk": {"S": f"lock#{ENV}"}, "sk": {"S": "echo"}, "who": {"S": "ghost@nowhere"},
                    "deploy_id": {"S": "x\ny"}, "since": {"S": "yesterday"},
                    "expires": {"N": str(int(time.time()) + 3600)}, "phase": {"N": "7"}})
    refused = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
    no_traceback(refused)
    assert refused.returncode == 4, refused.stderr
    status = prod.unified("lock", "status", ENV)
    no_traceback(status)
    assert status.returncode == 0


def test_a_release_record_with_missing_fields_does_not_block_every_command(prod: DeployEnv) -> None:
    put_item(prod, {"pk": {"S": f"release#{ENV}"}, "sk": {"S": "echo#20200101t000000-beef"},
                    "result": {"S": "succeeded"}})
    listed = prod.unified("releases", ENV)
    no_traceback(listed)
    status = prod.unified("status", ENV)
    no_traceback(status)
    result = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
    no_traceback(result)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("to", ["nonsense", "20261128t120102-3fa9\u00e9", "20261128t120102-3fa9"])
def test_rollback_to_a_nonsense_id_is_refused_before_any_aws_write(prod: DeployEnv, to: str) -> None:
    before = len(prod.moto.calls)
    result = prod.unified("rollback", ENV, "echo", "--to", to, "--probe-url", prod.alb.url)
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    assert writes(prod, before) == [], writes(prod, before)


@pytest.mark.parametrize("flag", ["--boot-timeout", "--verify-timeout", "--wait-lock"])
def test_nan_timeouts_are_bad_input(prod: DeployEnv, flag: str) -> None:
    before = len(prod.moto.calls)
    result = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url, flag, "nan")
    assert result.returncode == 2, result.stderr
    assert writes(prod, before) == []


@pytest.mark.parametrize("flag", [("--boot-timeout", "-1"), ("--verify-timeout", "-0.5"), ("--wait-lock", "-3"),
                                  ("--lock-lease", "0"), ("--lock-lease", "nan"), ("--lock-lease", "inf"),
                                  ("--probe-url", "ftp://x"), ("--probe-url", "http://"),
                                  ("--probe-url", "http://h ost"), ("--image", "ami-\u0661\u0662\u0663\u0664"
                                                                    "\u0665\u0666\u0667\u0668")])
def test_odd_flags_are_refused_with_one_line(prod: DeployEnv, flag: tuple[str, str]) -> None:
    args = ["deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url]
    if flag[0] in args:
        args[args.index(flag[0]) + 1] = flag[1]
    else:
        args += list(flag)
    before = len(prod.moto.calls)
    result = prod.unified(*args)
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    assert writes(prod, before) == []


def test_an_unparsable_probe_url_is_bad_input(prod: DeployEnv) -> None:
    before = len(prod.moto.calls)
    result = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", "http://a..b")
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert writes(prod, before) == []


def test_a_dead_probe_url_ends_in_a_clear_failure(prod: DeployEnv) -> None:
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", dead, "--verify-timeout", "3")
    assert result.returncode == 1, result.stderr
    assert "did not answer 2xx" in result.stderr, result.stderr
    no_traceback(result)
    assert [r["result"] for r in releases(prod)] == ["failed"]
    assert prod.groups() == {} and prod.rules() == []


def test_a_listener_split_by_hand_is_refused(prod: DeployEnv) -> None:
    deployed(prod, "v1")  # v1 in green, weight 100
    prod.moto.client("elbv2", internal=True).modify_listener(
        ListenerArn=prod.net.listener_arn, DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": prod.net.target_groups[GREEN], "Weight": 50},
            {"TargetGroupArn": prod.net.target_groups[BLUE], "Weight": 50}]}}])
    result = prod.unified("deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    no_traceback(result)
    assert result.returncode == 2, result.stderr


def test_a_hand_edited_target_group_tag_never_takes_the_live_version_out(prod: DeployEnv, load: Any) -> None:
    deployed(prod, "v1")
    live = live_group(prod)
    prod.moto.client("autoscaling", internal=True).create_or_update_tags(Tags=[{
        "ResourceId": live, "ResourceType": "auto-scaling-group", "Key": "unified:target-group",
        "Value": "prod-echo-red", "PropagateAtLaunch": True}])
    prod.alb.wait_synced()
    traffic = load(prod.alb.url, 60, 4, "/slow?ms=100")
    time.sleep(1.0)
    result = prod.unified("deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    time.sleep(1.0)
    traffic.stop()
    got = traffic.result(timeout=60)
    no_traceback(result)
    assert got.failed == 0, (got.summary(), result.stderr)


# --- faults ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "code"), [
    ("CreateAutoScalingGroup", "ValidationError"),
    ("CreateRule", "TooManyRules"),
    ("ModifyListener", "ValidationError"),
])
def test_an_aws_error_before_or_at_the_switch_switches_nothing_and_the_next_deploy_succeeds(
        prod: DeployEnv, action: str, code: str) -> None:
    deployed(prod, "v1")
    live = live_group(prod)
    prod.moto.inject_error(action, 20, status=400, code=code, message="injected")
    failed = prod.unified("deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    prod.moto.clear_faults()
    assert failed.returncode == 1, failed.stderr
    no_traceback(failed)
    assert code in failed.stderr
    assert prod.weights() == {BLUE: 0, GREEN: 100}
    assert set(prod.versions(10)) == {"1"}
    assert list(prod.groups()) == [live] and prod.rules() == []
    assert releases(prod)[0]["result"] == "failed"
    assert lock_holder(prod) is None
    deployed(prod, "v2")
    assert set(prod.versions(10)) == {"2"}


def test_delete_failing_during_cleanup_is_finished_by_the_next_deploy(prod: DeployEnv) -> None:
    deployed(prod, "v1")
    prod.moto.inject_error("DeleteAutoScalingGroup", 20, status=400, code="ResourceInUse", message="injected")
    failed = prod.unified("deploy", ENV, "--image", prod.images["v3"], "--probe-url", prod.alb.url,
                          "--boot-timeout", "60")
    prod.moto.clear_faults()
    assert failed.returncode == 1 and "the next deploy finishes it" in failed.stderr, failed.stderr
    assert len(prod.groups()) == 2
    after = deployed(prod, "v2")
    assert "was left by deploy" in after.stderr
    assert sorted(g["desired"] for g in prod.groups().values()) == [2, 2]
    assert set(prod.versions(10)) == {"2"}


def test_the_live_group_deleted_by_hand_the_next_deploy_still_works(prod: DeployEnv) -> None:
    deployed(prod, "v1")
    prod.moto.client("autoscaling", internal=True).delete_auto_scaling_group(
        AutoScalingGroupName=live_group(prod), ForceDelete=True)
    result = deployed(prod, "v2")
    no_traceback(result)
    assert set(prod.versions(10)) == {"2"}


def test_an_instance_terminated_by_hand_mid_boot_fails_cleanly(prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    live = live_group(prod)
    running = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url,
                 "--boot-timeout", "45")
    running.wait_for("instances in service")
    new = next(n for n in prod.groups() if n != live)
    deadline = time.monotonic() + 30
    while not prod.groups()[new]["instances"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    victim = prod.groups()[new]["instances"][0]["InstanceId"]
    prod.moto.client("ec2", internal=True).terminate_instances(InstanceIds=[victim])
    code, out, err = running.finish()
    assert code == 1, err
    no_traceback(err)
    assert victim in out
    assert prod.weights() == {BLUE: 0, GREEN: 100} and list(prod.groups()) == [live] and prod.rules() == []
    deployed(prod, "v2")


# --- signals --------------------------------------------------------------------------------

@pytest.mark.parametrize(("sig", "marker"), [
    # in the probes (no AWS call in flight: see the test after this one for why that matters)
    (signal.SIGTERM, "healthy in target group"),
    (signal.SIGINT, "instances in service"),
])
def test_a_deploy_stopped_before_the_switch_cleans_up_and_exits_1(
        prod: DeployEnv, bg: Any, sig: int, marker: str) -> None:
    deployed(prod, "v1")
    slow_verify(prod)
    live = live_group(prod)
    running = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    running.wait_for(marker)
    time.sleep(1.0)
    running.process.send_signal(sig)
    code, out, err = running.finish()
    assert prod.weights() == {BLUE: 0, GREEN: 100}, out + err  # never switched
    assert list(prod.groups()) == [live] and prod.rules() == [], err
    assert lock_holder(prod) is None  # given back at once, not at the end of the lease
    assert releases(prod)[0]["result"] in ("failed", "interrupted"), releases(prod)[0]
    assert code == 1, err


def test_sigterm_while_an_aws_call_is_in_flight_stops_the_deploy(prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    live = live_group(prod)
    prod.moto.inject_delay("DescribeImages", 4)  # preflight's look at the image: only the tool makes it
    running = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    deadline = time.monotonic() + 30
    while prod.moto.delayed < 1:
        assert time.monotonic() < deadline and running.process.poll() is None, "".join(running.lines)
        time.sleep(0.02)
    time.sleep(0.5)
    running.process.send_signal(signal.SIGTERM)
    code, out, err = running.finish()
    assert code != 0, out + err
    assert prod.weights() == {BLUE: 0, GREEN: 100} and list(prod.groups()) == [live], err


def test_sigterm_after_the_switch_is_not_reported_as_nothing_switched(prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    slow_verify(prod)
    running = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    running.wait_for("switched 1 route(s)")
    time.sleep(0.5)
    running.process.send_signal(signal.SIGTERM)
    code, out, err = running.finish()
    assert prod.weights()[BLUE] == 100 and set(prod.versions(10)) == {"2"}
    assert code != 1, out + err
    assert releases(prod)[0]["result"] != "failed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_cold_rollback_stopped_while_booting_is_undone_and_can_be_done_again(
        prod: DeployEnv, bg: Any, sig: int) -> None:
    deployed(prod, "v1")
    deployed(prod, "v2")
    deployed(prod, "v1")
    first = sorted(prod.groups())[0]
    weights = prod.weights()
    running = bg(prod, "rollback", ENV, "echo", "--to", first.split(".")[-1], "--probe-url", prod.alb.url,
                 "--lock-lease", "4")
    running.wait_for("instances in service")
    running.process.send_signal(sig)
    code, _, err = running.finish()
    assert prod.weights() == weights  # nothing switched
    if sig == signal.SIGTERM:
        assert code == 1, err
        assert prod.groups()[first]["desired"] == 0 and lock_holder(prod) is None
        assert releases(prod)[0]["result"] == "failed"
    again = prod.unified("rollback", ENV, "echo", "--to", first.split(".")[-1], "--probe-url", prod.alb.url,
                         "--wait-lock", "60")
    assert again.returncode == 0, again.stderr
    assert set(prod.versions(10)) == {"1"} and prod.rules() == []
    assert "running" not in [r["result"] for r in releases(prod)]


# --- concurrency ----------------------------------------------------------------------------

def test_a_holder_that_goes_between_put_and_get_never_lets_a_deploy_run_unlocked(
        prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    put_item(prod, {"pk": {"S": f"lock#{ENV}"}, "sk": {"S": "echo"}, "who": {"S": "other@ci"},
                    "deploy_id": {"S": "20200101t000000-abcd"}, "command": {"S": "unified deploy"},
                    "phase": {"S": "echo: boot"}, "since": {"N": str(time.time())},
                    "expires": {"N": str(time.time() + 60)}})
    prod.moto.inject_throttling("GetItem", 4)  # widen the window between the refused put and the read
    before = len(prod.moto.calls)
    racing = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    deadline = time.monotonic() + 60
    while not any(c.action == "GetItem" for c in prod.moto.calls[before:]):
        assert time.monotonic() < deadline and racing.process.poll() is None, "".join(racing.lines)
        time.sleep(0.01)
    # the other deploy finishes: its lock goes
    prod.moto.client("dynamodb", internal=True).delete_item(
        TableName=TABLE, Key={"pk": {"S": f"lock#{ENV}"}, "sk": {"S": "echo"}})
    time.sleep(0.5)
    deadline = time.monotonic() + 60
    while racing.process.poll() is None and not any("] locked echo" in line for line in racing.lines):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if any("] locked echo" in line for line in racing.lines):
        holder = lock_holder(prod)
        assert holder is not None, "a deploy says it holds the lock; `lock status` says echo is free"
        second = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
        assert second.returncode == 4, second.stderr
    racing.finish()


def test_a_lock_force_released_during_verify_stops_the_deploy_before_its_switch(
        prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    slow_verify(prod)
    running = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    running.wait_for("healthy in target group")
    time.sleep(1.0)
    forced = prod.unified("lock", "release", ENV, "echo", "--force")
    assert "released the lock of" in forced.stdout, forced.stdout + forced.stderr
    code, out, err = running.finish()
    assert code == 1, err
    assert prod.weights() == {BLUE: 0, GREEN: 100}, err  # it must not switch without its lock
    assert "lost the deploy lock" in err


def test_a_deploy_and_a_rollback_at_once_and_two_queued(prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    # v2s takes 6 s to start: the first deploy still holds its lock while the others try
    first = bg(prod, "deploy", ENV, "--image", prod.images["v2s"], "--probe-url", prod.alb.url)
    first.wait_for("instances in service")
    holder = lock_holder(prod)
    assert holder is not None and holder["phase"].startswith("echo: ")
    for refused in (prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url),
                    prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)):
        assert refused.returncode == 4, refused.stderr
        no_traceback(refused)
        # who, since when, what, which deploy, where it is, and what to do
        assert f"held by {holder['holder']} since" in refused.stderr and holder["deploy_id"] in refused.stderr
        assert "deploy production --image" in refused.stderr and "phase echo: " in refused.stderr
        assert "--wait-lock" in refused.stderr
    queued_rollback = bg(prod, "rollback", ENV, "echo", "--probe-url", prod.alb.url, "--wait-lock", "300")
    queued_deploy = bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url,
                       "--wait-lock", "300")
    queued_rollback.wait_for("waiting for the lock")
    queued_deploy.wait_for("waiting for the lock")
    results = [r.finish() for r in (first, queued_rollback, queued_deploy)]
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert lock_holder(prod) is None and prod.rules() == []
    history = releases(prod)
    assert len(history) == 4 and all(r["result"] == "succeeded" for r in history)
    assert set(prod.versions(10)) == {"2"}
    serving = [g for g in prod.groups().values() if g["desired"] > 0]
    assert len(serving) == 2


def test_two_deploys_racing_for_the_lock_at_the_same_instant(prod: DeployEnv, bg: Any) -> None:
    deployed(prod, "v1")
    racers = [bg(prod, "deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url) for _ in range(2)]
    codes = sorted(r.finish()[0] for r in racers)
    assert codes == [0, 4], [("".join(r.lines)) for r in racers]
    assert set(prod.versions(10)) == {"2"}
    assert [r["result"] for r in releases(prod)] == ["succeeded", "succeeded"]


# --- the warm standby sits in the idle colour -------------------------------------------

@pytest.mark.parametrize("how", ["deploy after a rollback", "cold rollback"])
def test_after_the_switch_customers_get_only_the_new_version(prod: DeployEnv, bg: Any, how: str) -> None:
    deployed(prod, "v1")
    deployed(prod, "v2")
    if how == "deploy after a rollback":
        assert prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url).returncode == 0
        # v1 is live (green); v2, the version rolled back from, is the warm standby in blue
        args: tuple[str, ...] = ("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
    else:
        deployed(prod, "v1")  # v1 live (green), v2 warm standby (blue), the first v1 kept at zero
        first = sorted(prod.groups())[0]
        args = ("rollback", ENV, "echo", "--to", first.split(".")[-1], "--probe-url", prod.alb.url)
    stale = "2"
    assert set(prod.versions(10)) == {"1"}
    customers = Sampler(prod.alb.url)
    running = bg(prod, *args)
    running.wait_for("healthy in target group")
    candidate = Sampler(prod.alb.url, headers={"X-Unified-Candidate": f"{ENV}.echo.{deploy_id_of(running.lines)}"}) \
        if how != "cold rollback" else None
    code, _, err = running.finish()
    time.sleep(2.0)
    seen = customers.stop()
    probed = candidate.stop() if candidate else []
    assert code == 0, err
    assert stale not in seen + probed, (f"customers got v{stale} after the switch: {seen.count(stale)} of "
                                        f"{len(seen)} answers; the candidate route answered from v{stale} "
                                        f"{probed.count(stale)} of {len(probed)} times")


# --- one target group (red/black): history is the truth -------------------------------------

@pytest.fixture(scope="module")
def baked_single(baked: Any) -> Iterator[dict[str, Path]]:
    """v1 and v2 of echo behind ONE target group (prod-worker-web): red/black."""
    import tempfile
    repo, _, _ = baked
    base = Path(tempfile.mkdtemp(prefix="unified-single-", dir="/tmp"))
    base.chmod(0o755)
    roots = {label: bake_image(base / f"image-{label}", single_yaml(services_yaml(repo, label)))
             for label in ("v1", "v2")}
    yield roots
    subprocess.run(["rm", "-rf", str(base)], check=False)


def single_yaml(text: str) -> str:
    return text.replace(f"target_groups: [{PAIR[0]}, {PAIR[1]}]", f"target_group: {SINGLE}")


@pytest.fixture
def single(moto_server: Any, baked: Any, baked_single: dict[str, Path], fleet: Any, alb_mirror: Any,
           tmp_path: Path) -> DeployEnv:
    repo, _, commits = baked
    env = seed(moto_server, baked_single, commits, lambda subnets: single_yaml(services_yaml(repo, "main", subnets)),
               tmp_path / "services.yaml", fleet, alb_mirror)
    env.moto.client("elbv2", internal=True).modify_listener(
        ListenerArn=env.net.listener_arn,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": env.net.target_groups[SINGLE]}])
    env.alb.wait_synced()
    return env


@pytest.mark.parametrize("stop", ["AWS error after the switch", "SIGKILL after the switch"])
def test_one_target_group_a_deploy_stopped_after_its_switch_is_not_undone_by_the_next(
        single: DeployEnv, bg: Any, load: Any, stop: str) -> None:
    deployed(single, "v1")
    assert set(single.versions(10)) == {"1"}
    running = bg(single, "deploy", ENV, "--image", single.images["v2"], "--lock-lease", "4")
    running.wait_for("instances in service")
    # the next Query is prune()'s, after the switch (the boot and verify make none)
    if stop == "AWS error after the switch":
        single.moto.inject_error("Query", 1, status=400, code="ValidationException", message="injected")
        code, _, err = running.finish()
    else:
        single.moto.inject_throttling("Query", 6)  # holds it after the switch for a few seconds
        running.wait_for("the new group serves")
        time.sleep(1.0)
        running.process.send_signal(signal.SIGKILL)
        code, _, err = running.finish()
        single.moto.clear_faults()
    wait_versions(single, {"2"})  # v2 serves alone: it was switched
    traffic = load(single.alb.url, 90, 4, "/slow?ms=100")
    time.sleep(1.0)
    after = single.unified("deploy", ENV, "--image", single.images["v2"], "--wait-lock", "60")
    time.sleep(1.0)
    traffic.stop()
    got = traffic.result(timeout=60)
    print(f"the deploy after one stopped after its switch: {got.summary()}\n{err}\n{after.stderr}")
    assert after.returncode == 0, after.stderr
    assert got.failed == 0, got.summary()


# --- zero dropped requests through failures -------------------------------------------------

def test_no_request_fails_through_a_failed_deploy_a_failed_switch_a_retry_and_a_rollback(
        prod: DeployEnv, load: Any) -> None:
    deployed(prod, "v1")
    prod.alb.wait_synced()
    traffic = load(prod.alb.url, 110, 8, "/slow?ms=200")
    time.sleep(1.5)
    broken = prod.unified("deploy", ENV, "--image", prod.images["v3"], "--probe-url", prod.alb.url,
                          "--boot-timeout", "60")
    assert broken.returncode == 1, broken.stderr
    prod.moto.inject_error("ModifyListener", 1, status=400, code="ValidationError", message="injected")
    first_try = prod.unified("deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url)
    assert first_try.returncode == 1, first_try.stderr
    deployed(prod, "v2")
    rolled = prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url)
    assert rolled.returncode == 0, rolled.stderr
    time.sleep(1.0)
    traffic.stop()
    result = traffic.result(timeout=60)
    print(f"load through a failed deploy, a failed switch, a retry and a rollback: {result.summary()}")
    assert result.requests > 100, result.summary()
    assert result.failed == 0, result.summary()
    assert set(prod.versions(10)) == {"1"}
