"""Pure pieces of operating a box: spot notices and the drain budget, the status table,
the release key, and what a classic ELB's states mean."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.aws.lb.classic_elb import map_state
from agent.local.apply import release_key
from agent.local.layout import Layout
from agent.local.readiness import Readiness
from agent.ops import format_status
from agent.plan import Program
from agent.ops import STOP_RESERVE, drain_cap
from agent.watch import Event, drain_budget, spot_event

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def notice(seconds: float, action: str = "terminate") -> str:
    when = (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"action": action, "time": when})


def test_a_spot_notice_gives_the_time_left_and_a_key_per_notice() -> None:
    event = spot_event(notice(120), NOW)
    assert (event.kind, event.seconds_left) == ("spot", 120.0)
    assert event.key == "spot:terminate:2026-11-28T12:02:00Z"
    assert spot_event(notice(30), NOW).seconds_left == 30.0
    assert spot_event(notice(-5), NOW).seconds_left == 0.0  # already past: no time at all
    assert spot_event(notice(120, "stop"), NOW).key != event.key


@pytest.mark.parametrize("text", ["not json", "{}", '{"time": "soon"}', '{"action": "terminate"}', "[]", '"x"'])
def test_an_unreadable_spot_notice_is_still_a_notice_with_two_minutes(text: str) -> None:
    event = spot_event(text, NOW)
    assert (event.kind, event.seconds_left) == ("spot", 120.0)
    assert event.key == f"spot:{text.strip()[:80]}"


def test_the_drain_budget_leaves_room_to_stop_within_the_notice() -> None:
    spot = Event("spot", "k", 120.0)
    assert drain_budget(spot, 30, None) == 120 - 30 - STOP_RESERVE
    assert drain_budget(spot, 30, 10) == 10                   # a smaller cap wins
    assert drain_budget(spot, 30, 500) == 120 - 30 - STOP_RESERVE  # a larger one does not
    assert drain_budget(Event("spot", "k", 20.0), 30, None) == 0.0  # too late to drain at all
    scale_in = Event("terminating", "terminating")
    assert drain_budget(scale_in, 30, None) is None            # the load balancer's own delay
    assert drain_budget(scale_in, 30, 45) == 45


def test_the_drain_cap_leaves_the_stop_timeouts_and_a_reserve() -> None:
    assert drain_cap(600, 30) == 600 - 30 - STOP_RESERVE
    assert drain_cap(35, 30) == 0.0
    assert drain_cap(0, 0) == 0.0


def test_the_release_key_changes_with_the_command_the_directory_and_the_baked_commits(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.manifest.parent.mkdir(parents=True)

    def key(release: str = "migrate", directory: str = "/srv/api", shas: tuple[str, ...] = ("a1", "b2")) -> str:
        layout.manifest.write_text(json.dumps({"repos": [{"repo": f"r{i}", "sha": s} for i, s in enumerate(shas)]}))
        program = Program("api", "service", directory, None, (), Readiness("running"), release=release)
        return release_key(layout, program)

    base = key()
    assert key() == base                                    # same command, same commits: already done
    assert key(shas=("b2", "a1")) == base                   # the order of repos does not matter
    assert key(shas=("a1", "c3")) != base                   # a new bake: migrations run again
    assert key(release="migrate --all") != base
    assert key(directory="/srv/other") != base
    layout.manifest.unlink()
    assert release_key(layout, Program("api", "service", "/srv/api", None, (), Readiness("running"),
                                       release="migrate")) != base  # unbaked is its own key


@pytest.mark.parametrize(("state", "description", "meaning"), [
    ("InService", "", "healthy"),
    ("OutOfService", "Instance has failed at least the UnhealthyThreshold number of health checks "
                     "consecutively.", "unhealthy"),
    ("OutOfService", "Instance is not currently registered with the LoadBalancer.", "unused"),
    ("Unknown", "A transient error occurred. Please try your request again.", "initial"),
])
def test_classic_elb_states_map_onto_target_group_words(state: str, description: str, meaning: str) -> None:
    assert map_state(state, description) == meaning


def report(**changes: object) -> dict:
    base = {
        "booted": True, "role": {"mode": "production", "service": "web", "target_group": None},
        "supervisord": "RUNNING",
        "programs": [{"name": "web", "kind": "service", "state": "RUNNING", "pid": 4242, "uptime": 3725.0,
                      "ready": True, "detail": "GET /health -> 200"},
                     {"name": "worker", "kind": "service", "state": "BACKOFF", "pid": None, "uptime": None,
                      "ready": False, "detail": "process is BACKOFF"}],
        "steps": [{"name": "render", "seconds": 0.01}, {"name": "start web", "seconds": 1.5}],
        "boot_seconds": 1.6, "booted_at": 0, "last_error": "worker: not ready",
        "registrations": [{"kind": "target_group", "name": "prod-web", "port": 8000}],
        "config": {"path": "/unified/production", "keys": ["API_KEY", "DEBUG"]},
        "identity": {"instance_id": "i-0abc", "availability_zone": "us-east-1a", "group": "prod-web-1"},
        "manifest": {"baked_at": "2026-11-28T00:00:00Z",
                     "repos": [{"repo": "api", "sha": "0123456789abcdef", "ref": "main"}]},
    }
    base.update(changes)
    return base


def test_the_status_table_has_a_line_per_program_and_says_why_one_is_not_ready() -> None:
    lines = format_status(report()).splitlines()
    assert lines[0] == "role: production (web)    supervisord: RUNNING"
    assert lines[1] == "instance: i-0abc in us-east-1a, group prod-web-1"
    web = next(line for line in lines if line.startswith("web "))
    assert web.split() == ["web", "RUNNING", "4242", "1:02:05", "yes"]
    worker = next(line for line in lines if line.startswith("worker "))
    assert worker.split()[:4] == ["worker", "BACKOFF", "-", "-"] and worker.endswith("no (process is BACKOFF)")
    assert "registered: target group prod-web, port 8000" in lines
    assert "config vars from /unified/production: API_KEY, DEBUG" in lines
    assert "image: baked 2026-11-28T00:00:00Z: api@0123456789ab (main)" in lines
    assert "last boot: 1.60s (render 0.01s, start web 1.50s)" in lines
    assert lines[-1] == "last error: worker: not ready"


def test_the_status_of_a_box_never_booted() -> None:
    text = format_status({"booted": False, "error": "not booted: run `agent boot`", "manifest": None})
    assert text == "not booted: run `agent boot`"


def test_health_waits_come_from_the_load_balancers_own_settings() -> None:
    from agent.aws.lb.kinds import HEALTH_MARGIN
    from agent.aws.lb.target_group import NLB_ALLOWANCE, _health_wait
    alb_defaults = {"Protocol": "HTTP", "HealthCheckIntervalSeconds": 30, "HealthyThresholdCount": 5}
    assert _health_wait(alb_defaults) == 6 * 30 + HEALTH_MARGIN == 210
    assert _health_wait({**alb_defaults, "HealthCheckIntervalSeconds": 5, "HealthyThresholdCount": 2}) == 45
    nlb = {"Protocol": "TCP", "HealthCheckIntervalSeconds": 30, "HealthyThresholdCount": 3}
    assert _health_wait(nlb) == 4 * 30 + HEALTH_MARGIN + NLB_ALLOWANCE
