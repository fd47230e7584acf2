"""`agent watch` for real: IMDS emulator notices, moto, supervisord.

A production box is booted; `agent watch` runs as a subprocess polling the emulator;
the tests raise a spot notice or a scale-in and check that the instance drained,
stopped and completed its terminating hook, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import REPO, Agent, processes_under
from tests.harness.moto_server import MotoServer
from tests.integration.test_production import PRODUCTION, prepare, seed, target_health

pytestmark = pytest.mark.integration


class Watch:
    """`agent watch` running in the background, its output collected."""

    def __init__(self, agent: Agent, *args: str):
        self.log = agent.root.parent / f"{agent.root.name}.watch.log"
        self.out = open(self.log, "w")
        env = {**os.environ, **agent.env, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "watch", "--root", str(agent.root), *args],
                                     stdout=self.out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, what: Callable[[], bool], timeout: float, why: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return
            assert self.proc.poll() is None, f"watch exited: {self.text()}"
            time.sleep(0.1)
        raise AssertionError(f"{why} did not happen in {timeout}s; watch said:\n{self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self.out.close()
        self.log.unlink(missing_ok=True)
        return code


@pytest.fixture
def booted(moto_server: MotoServer, imds: Any, shop_repo: Path, new_root: Agent) -> Iterator[tuple[Agent, Any, Any]]:
    seeded = seed(moto_server, PRODUCTION)
    emulator = imds(seeded)
    prepare(new_root, shop_repo, moto_server, emulator)
    new_root("boot", check=True)
    yield new_root, seeded, emulator


def services_running(agent: Agent, watch: Watch) -> bool:
    return [p for p in processes_under(agent.root) if not p.startswith(f"{watch.proc.pid}:")] != []


def test_scale_in_drains_stops_and_completes_the_terminating_hook_once(booted: Any, moto_server: MotoServer) -> None:
    agent, seeded, emulator = booted
    watch = Watch(agent, "--interval", "0.5")
    try:
        time.sleep(1.0)  # a few quiet polls first: nothing must happen
        assert "event" not in watch.text() and services_running(agent, watch)
        emulator.set_lifecycle_state("Terminated")
        done = lambda: any(a["LifecycleHookName"] == "terminating" and a["LifecycleActionResult"] == "CONTINUE"
                           for a in moto_server.lifecycle_actions)
        watch.wait_for(done, 30, "the terminating hook completed")
        assert target_health(moto_server, seeded.target_group_arn) == []
        assert not services_running(agent, watch)
        time.sleep(1.5)  # still Terminated for three more polls: acted on once only
        assert watch.text().count("event: terminating") == 1
        text = watch.text()
        assert (text.index("deregistered from target group prod-echo") < text.index("stopped echo")
                < text.index("lifecycle hook terminating: CONTINUE"))
    finally:
        assert watch.stop() == 0


def lifecycle_polls(emulator: Any) -> int:
    return sum(1 for r in emulator.requests if r.path.endswith("autoscaling/target-lifecycle-state"))


def test_a_restarted_watch_does_not_act_on_an_event_again(booted: Any, moto_server: MotoServer) -> None:
    agent, seeded, emulator = booted
    emulator.set_lifecycle_state("Terminated")
    first = Watch(agent, "--interval", "0.5")
    try:
        first.wait_for(lambda: "lifecycle hook terminating: CONTINUE" in first.text(), 30, "the scale-in handled")
    finally:
        assert first.stop() == 0
    acted = (moto_server.call_count("DeregisterTargets"), len(moto_server.lifecycle_actions))
    # a new watch (systemd restarting it, a reboot) still sees Terminated in IMDS
    again = Watch(agent, "--interval", "0.5")
    try:
        polls = lifecycle_polls(emulator)
        again.wait_for(lambda: lifecycle_polls(emulator) >= polls + 4, 30, "four more looks at IMDS")
        assert "event:" not in again.text(), again.text()
        assert (moto_server.call_count("DeregisterTargets"), len(moto_server.lifecycle_actions)) == acted
    finally:
        assert again.stop() == 0


def test_a_late_spot_notice_cuts_the_drain_to_fit_the_time_left(moto_server: MotoServer, imds: Any,
                                                                 shop_repo: Path, new_root: Agent) -> None:
    """A deregistration delay of 300 s, and a notice with 25 s left: the drain may take
    at most 25 - stop_seconds (1) - 10 s margin = 14 s, and says it was cut short."""
    seeded = seed(moto_server, PRODUCTION)
    moto_server.client("elbv2", internal=True).modify_target_group_attributes(
        TargetGroupArn=seeded.target_group_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "300"}])
    emulator = imds(seeded)
    prepare(new_root, shop_repo, moto_server, emulator, stop_seconds=1)
    new_root("boot", check=True)
    watch = Watch(new_root, "--interval", "0.5")
    try:
        t0 = time.monotonic()
        emulator.set_spot_action("terminate", in_seconds=25)
        watch.wait_for(lambda: "stopped echo and supervisord" in watch.text(), 40, "the service stopped")
        stopped = time.monotonic() - t0
        text = watch.text()
        assert "cut short" in text, text
        limit = float(text.split("(limit ")[1].split("s)")[0])
        assert 10 <= limit <= 14, text          # the notice's time, less the stop timeout and the margin
        assert stopped < 25, stopped            # stopped before the instance is taken away
    finally:
        assert watch.stop() == 0


def test_a_spot_notice_during_a_boot_stops_the_boot_which_abandons(moto_server: MotoServer, imds: Any,
                                                                     shop_repo: Path, new_root: Agent) -> None:
    """The service takes 40 s to start; 1 s into the boot a spot notice arrives. The
    watch stops the boot (SIGTERM), which gives up at once and completes its launch
    hook with ABANDON; then the watch stops everything. Nothing waits for the 40 s."""
    seeded = seed(moto_server, PRODUCTION)
    emulator = imds(seeded)
    prepare(new_root, shop_repo, moto_server, emulator, start_delay=40, timeout=60)
    env = {**os.environ, **new_root.env, "PYTHONPATH": str(REPO)}
    boot = subprocess.Popen([sys.executable, "-m", "agent", "boot", "--root", str(new_root.root),
                             "--services", str(new_root.services)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    watch = Watch(new_root, "--interval", "0.5")
    try:
        started = new_root.root / "var/log/unified/echo.log"  # supervisord has started the service
        watch.wait_for(started.exists, 30, "the boot waiting for the service")
        emulator.set_spot_action("terminate", in_seconds=120)
        out, err = boot.communicate(timeout=30)  # not the 40 s the service would take
        assert boot.returncode == 1, (out, err)
        assert "stopped by SIGTERM" in err and "ABANDON" in err and "Traceback" not in err, err
        watch.wait_for(lambda: "stopped echo and supervisord" in watch.text(), 30, "the box stopped")
        assert f"stopped agent boot, pid {boot.pid}" in watch.text()
        assert [(a["LifecycleHookName"], a["LifecycleActionResult"]) for a in moto_server.lifecycle_actions] == [
            ("launching", "ABANDON")]
        assert target_health(moto_server, seeded.target_group_arn) == []
        assert not services_running(new_root, watch)
    finally:
        if boot.poll() is None:
            boot.kill()
        assert watch.stop() == 0


def test_spot_notice_drains_and_stops_within_its_two_minutes(booted: Any, moto_server: MotoServer) -> None:
    agent, seeded, emulator = booted
    watch = Watch(agent, "--interval", "0.5")
    try:
        t0 = time.monotonic()
        emulator.set_spot_action("terminate", in_seconds=120)
        watch.wait_for(lambda: "stopped echo and supervisord" in watch.text(), 60, "the service stopped")
        assert time.monotonic() - t0 < 110 and not services_running(agent, watch)
        assert target_health(moto_server, seeded.target_group_arn) == []
        text = watch.text()
        assert "event: spot" in text and "s left" in text
        assert text.index("deregistered from target group prod-echo") < text.index("stopped echo and supervisord")
    finally:
        assert watch.stop() == 0


def test_watch_survives_imds_errors_and_timeouts(booted: Any, moto_server: MotoServer) -> None:
    agent, seeded, emulator = booted
    watch = Watch(agent, "--interval", "0.5")
    try:
        emulator.fail_for(2.0, status=500)
        time.sleep(2.5)
        emulator.hang_for(2.0)
        time.sleep(2.5)
        assert watch.proc.poll() is None, watch.text()
        assert "watch:" in watch.text()  # the hiccups were logged
        emulator.set_spot_action("terminate", in_seconds=120)
        watch.wait_for(lambda: "stopped echo and supervisord" in watch.text(), 60,
                       "the service stopped after IMDS recovered")
        assert not services_running(agent, watch)
    finally:
        assert watch.stop() == 0


def test_watch_rejects_a_slow_interval(new_root: Agent) -> None:
    result = new_root("watch", "--interval", "30")
    assert result.returncode == 2 and "at most 5 seconds" in result.stderr
