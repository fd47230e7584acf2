"""Zero dropped requests, proved under load through a real load balancer.

Three instances of one service (three agents with their own roots, each with its own
IMDSv2 emulator, services on loopback ports) sit behind HAProxy on 127.0.0.1. A mirror
copies the moto target group into HAProxy every 50 ms (healthy -> ready, draining ->
drain, gone -> maint), and moto drains deregistered targets for the group's
deregistration delay, as ELB does. wrk keeps requests in flight on a slow endpoint the
whole time while, in order:

1. `agent restart` on instance a;
2. a spot interruption notice on instance b once a is back (`agent watch` drains b);
3. instance c boots (the group's replacement for b) and registers;
4. a scale-in of a (`agent watch` drains a and completes the terminating hook).

Zero failed requests. Then the control, in the same test: c's service is killed without
draining under load, and requests fail, so this test can fail.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Agent, make_root
from tests.harness.moto_server import MotoServer, seed_group
from tests.integration.test_production import PRODUCTION, prepare, target_health
from tests.integration.test_watch import Watch

pytestmark = pytest.mark.integration
DELAY = 2  # the target group's deregistration delay, seconds


def service_pid(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(json.loads(response.read())["pid"])


def test_restart_spot_and_scale_in_drop_no_request(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                    haproxy: Any, target_group_mirror: Any, load: Any) -> None:
    seeded = seed_group(moto_server, size=3, tags=PRODUCTION, target_group="prod-echo",
                        deregistration_delay=DELAY, auto_scaling_group="asg-echo")
    arn = seeded[0].target_group_arn
    agents, emulators, ports = [], [], []
    for instance in seeded:
        agent = Agent(make_root())
        emulator = imds(instance)
        ports.append(prepare(agent, shop_repo, moto_server, emulator))
        agents.append(agent)
        emulators.append(emulator)
    a, b, c = agents
    proxy = haproxy([("a", ports[0]), ("b", ports[1]), ("c", ports[2])], initial_state="maint")
    mirror = target_group_mirror(arn, proxy, {(i.instance_id, p): n for i, p, n in zip(seeded, ports, "abc")})
    watches: list[Watch] = []
    try:
        a("boot", check=True)
        b("boot", check=True)
        mirror.wait_for("a", "ready", 10)
        mirror.wait_for("b", "ready", 10)
        watches = [Watch(a, "--interval", "0.5"), Watch(b, "--interval", "0.5")]

        traffic = load(proxy.url, 40, 8, "/slow?ms=200")
        time.sleep(2)
        # 1. restart a: drained before it stops, ready and registered again before it returns
        old_a = service_pid(ports[0])
        restart = a("restart", check=True)
        assert service_pid(ports[0]) != old_a
        # drained before it stopped, ready again after (a poll may miss the short maint between)
        tail = mirror.states_of("a")[-3:]
        assert tail[-1] == "ready" and "drain" in tail[:-1], mirror.states_of("a")
        assert "deregistered from target group prod-echo" in restart.stdout
        # 2. spot notice on b once a is back
        emulators[1].set_spot_action("terminate", in_seconds=120)
        watches[1].wait_for(lambda: "stopped echo and supervisord" in watches[1].text(), 60, "b drained and stopped")
        mirror.wait_for("b", "maint", 10)
        assert "drain" in mirror.states_of("b")[-2:], mirror.states_of("b")
        # 3. the group's replacement for b
        c("boot", check=True)
        mirror.wait_for("c", "ready", 10)
        # 4. scale-in of a
        emulators[0].set_lifecycle_state("Terminated")
        watches[0].wait_for(lambda: "lifecycle hook terminating: CONTINUE" in watches[0].text(), 60, "a scaled in")
        time.sleep(2)
        traffic.stop()
        result = traffic.result(timeout=30)
        print(f"zero-downtime run: {result.summary()}")
        assert result.requests > 100, result.summary()
        assert result.failed == 0, (result.summary(), proxy.counters(),
                                    [(round(t.at, 2), t.server, t.state) for t in mirror.transitions], proxy.log())
        assert target_health(moto_server, arn) in ([(seeded[2].instance_id, "healthy")],
                                                   [(seeded[0].instance_id, "draining"),
                                                    (seeded[2].instance_id, "healthy")])
        hooks = [(x["InstanceId"], x["LifecycleHookName"], x["LifecycleActionResult"])
                 for x in moto_server.lifecycle_actions if x["action"] == "CompleteLifecycleAction"]
        assert (seeded[0].instance_id, "terminating", "CONTINUE") in hooks

        # the control: c killed without draining while it takes all the traffic
        control = load(proxy.url, 6, 8, "/slow?ms=200")
        time.sleep(2)
        os.kill(service_pid(ports[2]), signal.SIGKILL)
        failed = control.result(timeout=30)
        print(f"control run (killed without draining): {failed.summary()}")
        assert failed.failed > 0, failed.summary()
    finally:
        for watch in watches:
            watch.stop()
        for agent in agents:
            agent.stop_and_clean()
