"""Calls that leave the process, for real: a trickling and a hostile IMDS, a stopped or
killed supervisord, a socket the caller may not open, a lost state file, a full disk.

Each test breaks one thing the agent talks to and checks that the agent gives up in
time, says what it knows on one line, and leaves nothing half done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import REPO, Agent, echo_service, free_ports, make_root, processes_under
from tests.harness.imds import read_moto_identity
from tests.harness.moto_server import MotoServer
from tests.integration.test_production import PRODUCTION, prepare, seed, target_health
from tests.integration.test_watch import Watch, booted  # noqa: F401  (booted is a fixture)

pytestmark = pytest.mark.integration


def wait_until(what: Callable[[], bool], timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"{why} did not happen in {timeout}s"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def health_pid(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(json.loads(response.read())["pid"])


def timed(agent: Agent, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = agent(*args, timeout=timeout)
    return result, time.monotonic() - started


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def write_box(agent: Agent, repo: Path) -> int:
    """A review box of one echo service (no databases: quick to boot); its port."""
    port = free_ports(1)[0]
    agent.services = agent.root / "services.yaml"
    agent.services.write_text(f"version: 1\nrepos:\n  shop: {{url: {repo}, ref: main}}\nservices:\n"
                              + echo_service("echo", port))
    agent("bake", check=True)
    return port


@pytest.fixture
def echo_box(shop_repo: Path, new_root: Agent) -> tuple[Agent, int]:
    port = write_box(new_root, shop_repo)
    new_root("boot", "--mode", "review", check=True)
    return new_root, port


def supervisord_pid(agent: Agent) -> int:
    return int((agent.root / "run/unified/supervisord.pid").read_text())


# --- 1. a slow IMDS defeats no deadline ----------------------------------------------

def test_boot_gives_up_on_a_trickling_imds_near_its_deadline(moto_server: MotoServer, imds: Any, shop_repo: Path,
                                                              new_root: Agent) -> None:
    """Every IMDS answer one byte a second: a per-read timeout never trips, the total
    deadline does. The boot ends about --imds-deadline after it starts, on one line."""
    seeded = seed(moto_server, PRODUCTION)
    emulator = imds(seeded)
    prepare(new_root, shop_repo, moto_server, emulator)
    emulator.trickle_for(3600, bytes_per_second=1)
    result, elapsed = timed(new_root, "boot", "--imds-deadline", "10", timeout=90)
    assert result.returncode == 1, result.stderr
    assert 10 <= elapsed < 16, elapsed  # the deadline, plus starting Python
    last = result.stderr.strip().splitlines()[-1]
    assert f"{emulator.url} did not answer" in last and "within 10s" in last, result.stderr
    assert "Traceback" not in result.stderr
    assert moto_server.lifecycle_actions == [] and target_health(moto_server, seeded.target_group_arn) == []
    assert not (new_root.root / "etc/unified/supervisord.conf").exists()


def lifecycle_polls(emulator: Any) -> int:
    return sum(1 for r in emulator.requests if r.path.endswith("autoscaling/target-lifecycle-state"))


def test_watch_keeps_polling_through_a_trickling_imds_and_acts_on_the_notice_after(
        booted: Any, moto_server: MotoServer) -> None:
    """Each poll ends within its budget (2 s at --interval 0.5) while IMDS trickles, so
    the notice posted once the trickle ends is seen by the next poll, not minutes later."""
    agent, seeded, emulator = booted
    watch = Watch(agent, "--interval", "0.5")
    try:
        watch.wait_for(lambda: lifecycle_polls(emulator) >= 1, 30, "a first healthy poll")
        emulator.trickle_for(6, bytes_per_second=2)
        time.sleep(6.5)
        failed_polls = [line for line in watch.text().splitlines() if line.startswith("agent.watch: watch: ")]
        assert len(failed_polls) >= 2, watch.text()  # polls failed in the window, each within its budget
        emulator.set_spot_action("terminate", in_seconds=120)
        noticed = time.monotonic()
        watch.wait_for(lambda: "event: spot" in watch.text(), 15, "the notice seen")
        assert time.monotonic() - noticed < 8, watch.text()  # the poll under way, then the next
        watch.wait_for(lambda: "stopped echo and supervisord" in watch.text(), 60, "the service stopped")
        assert target_health(moto_server, seeded.target_group_arn) == []
    finally:
        assert watch.stop() == 0


def test_sigterm_stops_the_watch_at_once_in_the_middle_of_a_trickled_answer(booted: Any) -> None:
    agent, _, emulator = booted
    watch = Watch(agent, "--interval", "0.5")
    try:
        watch.wait_for(lambda: lifecycle_polls(emulator) >= 1, 30, "a first healthy poll")
        before = len(emulator.requests)
        emulator.trickle_for(3600, bytes_per_second=2)
        watch.wait_for(lambda: len(emulator.requests) > before, 10, "a request answered by trickle")
        time.sleep(0.3)  # a few bytes into it
        started = time.monotonic()
        watch.proc.send_signal(signal.SIGTERM)
        code = watch.proc.wait(timeout=30)
        assert time.monotonic() - started < 2.0 and code == 0, watch.text()
        assert "Traceback" not in watch.text()
    finally:
        watch.stop()


# --- 2. IMDS answers are checked ------------------------------------------------------

@pytest.mark.parametrize(("field", "suffix", "shown"), [
    ("instance_id", "\x00\nevil", "\\x00\\nevil"),
    ("region", "\n../../x", "\\n../../x"),
])
def test_a_hostile_identity_refuses_the_boot_before_anything_starts(moto_server: MotoServer, imds: Any,
                                                                    shop_repo: Path, new_root: Agent,
                                                                    field: str, suffix: str, shown: str) -> None:
    """Exit 2 on one line with the value escaped; nothing registered, nothing started,
    and no hook completed: an instance that cannot name itself leaves its launch hook to
    its timeout."""
    seeded = seed(moto_server, PRODUCTION)
    real = read_moto_identity(moto_server.client("ec2", internal=True), seeded.instance_id)
    emulator = imds(dataclasses.replace(real, **{field: getattr(real, field) + suffix}))
    prepare(new_root, shop_repo, moto_server, emulator)
    result = new_root("boot")
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_line(result.stderr)
    assert shown in line and "launch hook" in line, line
    assert moto_server.lifecycle_actions == [] and target_health(moto_server, seeded.target_group_arn) == []
    assert moto_server.call_count("RegisterTargets") == 0
    assert not (new_root.root / "etc/unified/supervisord.conf").exists()
    assert processes_under(new_root.root) == []
