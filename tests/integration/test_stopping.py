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
