"""Stopping a box whatever state it is in: the load balancer unreachable, a budget
shorter than the drain, a state file that cannot be read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Agent, free_ports, processes_under
from tests.harness.moto_server import MotoServer
from tests.integration.test_production import PRODUCTION, get, prepare, seed, target_health

pytestmark = pytest.mark.integration


@pytest.fixture
def booted(moto_server: MotoServer, imds: Any, shop_repo: Path, new_root: Agent) -> tuple[Agent, Any, int]:
    seeded = seed(moto_server, PRODUCTION)
    port = prepare(new_root, shop_repo, moto_server, imds(seeded), stop_seconds=2)
    new_root("boot", check=True)
    return new_root, seeded, port


def serving(port: int) -> bool:
    try:
        get(port, "/health")
        return True
    except OSError:
        return False


def test_stop_refuses_when_the_load_balancer_cannot_be_reached_and_no_drain_stops_anyway(
        booted: tuple[Agent, Any, int], moto_server: MotoServer) -> None:
    agent, seeded, port = booted
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens: AWS unreachable
    unreachable = {**agent.env, "AWS_ENDPOINT_URL": dead, "AWS_MAX_ATTEMPTS": "2"}
    refused = Agent(agent.root, agent.services, unreachable)("stop")
    assert refused.returncode == 1, refused.stderr
    assert "could not leave the load balancer" in refused.stderr and "--no-drain" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert serving(port)  # nothing was stopped
    forced = Agent(agent.root, agent.services, unreachable)("stop", "--no-drain")
    assert forced.returncode == 0, forced.stderr
    assert "not deregistered from target group prod-echo (--no-drain)" in forced.stdout
    assert not serving(port) and processes_under(agent.root) == []
    # the load balancer was never told: it still lists the instance
    assert target_health(moto_server, seeded.target_group_arn) == [(seeded.instance_id, "healthy")]


def test_a_stop_budget_cuts_a_long_drain_short_and_says_so(booted: tuple[Agent, Any, int],
                                                           moto_server: MotoServer) -> None:
    agent, seeded, port = booted
    moto_server.client("elbv2", internal=True).modify_target_group_attributes(
        TargetGroupArn=seeded.target_group_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "300"}])
    started = time.monotonic()
    result = agent("stop", "--budget", "20", check=True)  # 20 - stop_seconds 2 - reserve 10: 8 s to drain
    took = time.monotonic() - started
    assert "cut short" in result.stdout and "(limit 8s)" in result.stdout, result.stdout
    assert took < 20, took
    assert not serving(port)


@pytest.mark.parametrize("damage", ["truncated", "wrong shape"])
def test_a_corrupt_state_never_blocks_a_stop(booted: tuple[Agent, Any, int], damage: str) -> None:
    agent, _, port = booted
    state = agent.root / "var/lib/unified/state.json"
    if damage == "truncated":
        state.write_text(state.read_text()[:40])
    else:
        state.write_text('{"programs": [{"name": 1}], "registrations": "all of them"}')
    result = agent("stop")
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stdout and "without draining" in result.stdout
    assert "Traceback" not in result.stderr
    assert not serving(port) and processes_under(agent.root) == []


def test_a_boot_sets_a_corrupt_state_aside_and_boots(booted: tuple[Agent, Any, int]) -> None:
    agent, _, port = booted
    state = agent.root / "var/lib/unified/state.json"
    state.write_text(state.read_text()[:40])
    result = agent("boot", check=True)
    assert "warning:" in result.stdout and "moved it to" in result.stdout
    [aside] = list(state.parent.glob("state.json.corrupt-*"))
    assert len(aside.read_text()) == 40  # kept for a look, as it was
    code, report = agent.status()
    assert code == 0 and report["registrations"][0]["name"] == "prod-echo"
    assert serving(port)


def test_only_the_agents_user_can_take_its_lock_and_a_dead_holder_is_not_named(
        booted: tuple[Agent, Any, int]) -> None:
    import fcntl
    import json
    import subprocess
    agent, _, _ = booted
    lock = agent.root / "run/unified/agent.lock"
    assert lock.stat().st_mode & 0o777 == 0o600 and lock.stat().st_uid == 0
    # another local user cannot open it, so cannot hold it
    grab = "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('held')"
    attempt = subprocess.run(["runuser", "-u", "unified", "--", "/usr/bin/python3", "-c", grab, str(lock)],
                             capture_output=True, text=True, timeout=30)
    assert attempt.returncode != 0 and "Permission denied" in attempt.stderr and "held" not in attempt.stdout
    # a holder whose process is gone is not named: the lock is held, but not by it
    dead = 2**22 + 1  # above Linux's largest pid_max: no process has it
    with open(lock, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps({"operation": "boot", "pid": dead, "since": 0}))
        handle.flush()
        refused = agent("restart", "--wait", "0.5")
    assert refused.returncode == 1 and "another operation is in progress (another process)" in refused.stderr
    assert str(dead) not in refused.stderr


def test_stop_ends_a_supervisord_whose_socket_is_gone(booted: tuple[Agent, Any, int]) -> None:
    agent, _, port = booted
    (agent.root / "run/unified/supervisor.sock").unlink()  # removed under it: nothing to ask
    result = agent("stop")
    assert result.returncode == 0, result.stderr
    assert not serving(port) and processes_under(agent.root) == []
