"""Faults a fleet meets, survived: supervisord killed, a reboot, two restarts at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, Agent, echo_service, free_ports, processes_under, stack_yaml

pytestmark = pytest.mark.integration


def health_pid(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(json.loads(response.read())["pid"])


@pytest.fixture
def review_box(shop_repo: Path, new_root: Agent) -> tuple[Agent, dict[str, int]]:
    ports = dict(zip(["postgres", "redis", "api", "front", "echo"], free_ports(5)))
    slow_stop = "    stop_seconds: 5\n"
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(stack_yaml(shop_repo, ports, extra_services=echo_service(
        "echo", ports["echo"], env="    env: {START_DELAY: '1.5'}\n", extra=slow_stop)))
    new_root("bake", check=True)
    new_root("boot", "--mode", "review", check=True)
    return new_root, ports


def test_supervisord_killed_then_boot_recovers(review_box: tuple[Agent, dict[str, int]]) -> None:
    agent, ports = review_box
    old_echo = health_pid(ports["echo"])
    supervisord = int((agent.root / "run/unified/supervisord.pid").read_text())
    os.kill(supervisord, signal.SIGKILL)
    time.sleep(0.5)
    assert health_pid(ports["echo"]) == old_echo  # orphans still hold the ports
    code, report = agent.status()
    assert code == 3 and report["supervisord"] == "NOT RUNNING"
    result = agent("boot", "--mode", "review")
    assert result.returncode == 0, result.stderr
    assert "orphaned" in result.stderr  # said what it did
    code, report = agent.status()
    assert code == 0, report
    assert health_pid(ports["echo"]) != old_echo  # a supervised process serves now
    release_runs = (agent.root / "var/log/unified/shop-api.release.log").read_text().count("schema ready")
    assert release_runs == 1  # recovery is not a new release


def test_reboot_runs_no_second_release(review_box: tuple[Agent, dict[str, int]]) -> None:
    agent, ports = review_box
    agent("stop", check=True)  # what a clean shutdown does
    assert processes_under(agent.root) == []
    result = agent("boot", "--mode", "review", check=True)
    assert "release done" not in result.stdout
    assert (agent.root / "var/log/unified/shop-api.release.log").read_text().count("schema ready") == 1
    assert agent.status()[0] == 0


def test_lost_password_files_are_made_anew_and_synced(review_box: tuple[Agent, dict[str, int]]) -> None:
    """The generated passwords' files are gone (a restore without them, a mistake): the
    next boot makes new ones and the databases follow, so the services log in again."""
    import pg8000.native
    import redis
    agent, ports = review_box
    secrets = agent.root / "var/lib/unified/secrets"
    old = {kind: (secrets / kind).read_text().strip() for kind in ("postgres", "redis")}
    for kind in old:
        (secrets / kind).unlink()
    agent("boot", "--mode", "review", check=True)
    new = {kind: (secrets / kind).read_text().strip() for kind in old}
    assert all(new[kind] != old[kind] for kind in old)
    assert agent.status()[0] == 0
    conn = pg8000.native.Connection("app", password=new["postgres"], host="127.0.0.1", port=ports["postgres"],
                                    database="shop")
    assert conn.run("SELECT 1") == [[1]]
    conn.close()
    assert redis.Redis(host="127.0.0.1", port=ports["redis"], password=new["redis"]).ping()
    # and the stack works end to end: storefront -> API -> PostgreSQL, job -> Redis -> worker
    request = urllib.request.Request(f"http://127.0.0.1:{ports['front']}/buy?item=lamp", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        order = json.loads(response.read())
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline and status != "done":
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['front']}/orders/{order['id']}", timeout=10) as r:
            status = json.loads(r.read())["status"]
        time.sleep(0.1)
    assert status == "done"


def test_two_restarts_at_once_never_both_run(review_box: tuple[Agent, dict[str, int]]) -> None:
    agent, ports = review_box
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "agent", "restart", "echo", "--root", str(agent.root), "--wait", "0.5"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    # Once the first holds the lock (it names itself in the lock file), it is paused, so
    # the second certainly meets it, however slowly either starts on a loaded machine.
    lock = agent.root / "run/unified/agent.lock"
    deadline = time.monotonic() + 30
    while f'"pid": {first.pid}' not in (lock.read_text() if lock.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 1
    assert "another operation is in progress (agent restart, pid" in second.stderr
    assert "Traceback" not in second.stderr
    assert out.count("echo: restarted") == 1 and "restarted" not in second.stdout
    # and one that is willing to wait runs after the first, not beside it
    waiting = subprocess.Popen(cmd[:-1] + ["30"], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    again = subprocess.run(cmd[:-1] + ["30"], capture_output=True, text=True, env=env, cwd=REPO, timeout=90)
    waiting.communicate(timeout=90)
    assert waiting.returncode == 0 and again.returncode == 0
    assert agent.status()[0] == 0


def test_an_orphan_that_wiped_its_environment_is_still_found(shop_repo: Path, new_root: Agent) -> None:
    """A service that runs with a clean environment (`env -i`) carries none of the
    variables supervisord gave it; it is found by supervisord's session instead."""
    from tests.conftest import services_python
    port = free_ports(1)[0]
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(f"""\
version: 1
repos:
  shop: {{url: {shop_repo}, ref: main}}
services:
  bare:
    repo: shop
    command: exec env -i PORT=$PORT {services_python()} -m testapps.echo
    port: {port}
    health: {{path: /health, timeout: 20}}
""")
    new_root("bake", check=True)
    new_root("boot", "--mode", "review", check=True)
    old = health_pid(port)
    environ = open(f"/proc/{old}/environ", "rb").read()
    assert b"SUPERVISOR_SERVER_URL" not in environ  # nothing to find it by
    os.kill(int((new_root.root / "run/unified/supervisord.pid").read_text()), signal.SIGKILL)
    time.sleep(0.5)
    assert health_pid(port) == old
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 0, result.stderr
    assert health_pid(port) != old  # the orphan was stopped; a supervised one serves
    assert new_root.status()[0] == 0
