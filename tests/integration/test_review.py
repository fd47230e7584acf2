"""Review mode for real: supervisord, PostgreSQL, Redis and the example stack.

One box is booted for the module (booting is the expensive part); tests that need a
box of their own (stop, readiness failure) make one.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import Agent, echo_service, free_ports, make_root, processes_under, services_python, stack_yaml

pytestmark = pytest.mark.integration

# Every character that has broken an environment somewhere: quotes, commas, %, $,
# backticks, spaces, a newline, non-ASCII, a trailing backslash.
WEIRD = "it's \"quoted\", a,b=c 100% $HOME ${X} `id` \\n\nline two\tnaïve ☃ \\"


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def box(shop_repo: Path) -> Iterator[tuple[Agent, dict[str, int]]]:
    names = ["postgres", "redis", "api", "front", "echo"]
    ports = dict(zip(names, free_ports(len(names))))
    root = make_root()
    services = root.parent / f"{root.name}.services.yaml"
    echo = echo_service("echo", ports["echo"], env=f"    env:\n      WEIRD: {json.dumps(WEIRD, ensure_ascii=False)}\n")
    cli_worker = "  cli-worker:\n    repo: shop\n    command: exec bash testapps/cli_worker.sh\n    uses: [redis]\n"
    services.write_text(stack_yaml(shop_repo, ports, extra_services=echo + cli_worker))
    agent = Agent(root, services)
    agent("bake", check=True)
    agent("boot", "--mode", "review", check=True)
    yield agent, ports
    left = agent.stop_and_clean()
    services.unlink()
    assert not left, f"processes left behind: {left}"


def test_boot_reports_every_program_running_and_ready(box: tuple[Agent, dict[str, int]]) -> None:
    agent, _ = box
    code, report = agent.status()
    assert code == 0, report
    assert report["role"] == {"mode": "review", "service": None, "target_group": None, "run_release": False}
    programs = {p["name"]: p for p in report["programs"]}
    assert set(programs) == {"postgres", "redis", "shop-api", "shop-worker", "shop-front", "echo", "cli-worker"}
    for p in programs.values():
        assert p["state"] in ("RUNNING", "STARTING") and p["ready"] and p["pid"] > 0, p
    step_names = [s["name"] for s in report["steps"]]
    assert "start postgres" in step_names and "release shop-api" in step_names
    text = agent("status")
    assert text.returncode == 0 and "shop-front" in text.stdout and "last boot" in text.stdout


def test_request_in_job_done_row_changed(box: tuple[Agent, dict[str, int]]) -> None:
    agent, ports = box
    status, order = http("POST", f"http://127.0.0.1:{ports['front']}/buy?item=lamp", b"")
    assert status == 201 and order["status"] == "pending"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        _, seen = http("GET", f"http://127.0.0.1:{ports['front']}/orders/{order['id']}")
        if seen["status"] == "done":
            break
        time.sleep(0.1)
    assert seen == {"id": order["id"], "item": "lamp", "status": "done"}
    # and the row itself, read straight from PostgreSQL with the generated credentials
    import pg8000.native
    password = (agent.root / "var/lib/unified/secrets/postgres").read_text().strip()
    conn = pg8000.native.Connection("app", password=password, host="127.0.0.1", port=ports["postgres"], database="shop")
    rows = conn.run("SELECT status, done_at IS NOT NULL FROM orders WHERE id = :id", id=order["id"])
    conn.close()
    assert rows == [["done", True]]


def test_redis_url_works_for_redis_cli_and_the_python_client(box: tuple[Agent, dict[str, int]]) -> None:
    """The worker of the stack (redis-py) and a shell worker (redis-cli -u "$REDIS_URL")
    both take jobs with the URL the agent gives them."""
    import redis
    agent, ports = box
    password = (agent.root / "var/lib/unified/secrets/redis").read_text().strip()
    client = redis.Redis(host="127.0.0.1", port=ports["redis"], password=password)
    client.lpush("cli-jobs", "job-1")
    deadline = time.monotonic() + 15
    while client.llen("cli-done") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = (agent.root / "var/log/unified/cli-worker.log").read_text()
    assert client.lrange("cli-done", 0, -1) == [b"job-1"], f"redis-cli worker did nothing; its log:\n{log}"
    client.close()


def test_environment_reaches_the_process_byte_for_byte(box: tuple[Agent, dict[str, int]]) -> None:
    _, ports = box
    _, echoed = http("GET", f"http://127.0.0.1:{ports['echo']}/env?key=WEIRD")
    assert echoed["value"] == WEIRD
    _, port = http("GET", f"http://127.0.0.1:{ports['echo']}/env?key=PORT")
    assert port["value"] == str(ports["echo"])


def test_secrets_stay_in_private_files(box: tuple[Agent, dict[str, int]]) -> None:
    agent, _ = box
    password = (agent.root / "var/lib/unified/secrets/postgres").read_text().strip()
    socket_mode = (agent.root / "run/unified/supervisor.sock").stat().st_mode
    assert stat.S_IMODE(socket_mode) == 0o700
    for path in agent.root.rglob("*"):
        if not path.is_file() or "postgres" in path.relative_to(agent.root).parts[:4] and "lib" in path.parts:
            continue
        mode = path.stat().st_mode
        if mode & stat.S_IROTH:
            assert password.encode() not in path.read_bytes(), f"{path} is world-readable and holds a secret"
    status = agent("status", "--json").stdout
    assert password not in status


def test_supervisorctl_works_against_the_socket_and_boot_repairs(box: tuple[Agent, dict[str, int]]) -> None:
    agent, _ = box
    conf = agent.root / "etc/unified/supervisord.conf"
    ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf)]
    subprocess.run(ctl + ["stop", "shop-worker"], check=True, capture_output=True)
    code, report = agent.status()
    assert code == 3
    assert {p["name"]: p["state"] for p in report["programs"]}["shop-worker"] == "STOPPED"
    agent("boot", "--mode", "review", check=True)
    assert agent.status()[0] == 0


def test_second_boot_changes_nothing(box: tuple[Agent, dict[str, int]]) -> None:
    agent, _ = box
    before_pids = {p["name"]: p["pid"] for p in agent.status()[1]["programs"]}
    watched = [p for p in (agent.root / "etc/unified").rglob("*") if p.is_file()]
    watched.append(agent.root / "var/lib/unified/state.json")
    before = {p: p.stat().st_mtime_ns for p in watched}
    release_log = (agent.root / "var/log/unified/shop-api.release.log").read_text()
    result = agent("boot", "--mode", "review", check=True)
    assert "ready (" not in result.stdout  # nothing was started
    assert {p["name"]: p["pid"] for p in agent.status()[1]["programs"]} == before_pids
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert (agent.root / "var/log/unified/shop-api.release.log").read_text() == release_log


def test_restart_gives_a_new_ready_process(box: tuple[Agent, dict[str, int]]) -> None:
    agent, ports = box
    old = {p["name"]: p["pid"] for p in agent.status()[1]["programs"]}
    result = agent("restart", "shop-api", check=True)
    assert "shop-api: restarted" in result.stdout
    code, report = agent.status()
    new = {p["name"]: p["pid"] for p in report["programs"]}
    assert code == 0 and new["shop-api"] != old["shop-api"]
    assert new["shop-front"] == old["shop-front"] and new["postgres"] == old["postgres"]
    assert http("GET", f"http://127.0.0.1:{ports['api']}/health")[0] == 200


def test_restart_of_an_unknown_program_is_bad_input(box: tuple[Agent, dict[str, int]]) -> None:
    agent, _ = box
    result = agent("restart", "nope")
    assert result.returncode == 2
    assert "no program named 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_stop_leaves_nothing_running(shop_repo: Path, new_root: Agent) -> None:
    ports = dict(zip(["postgres", "redis", "api", "front"], free_ports(4)))
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(stack_yaml(shop_repo, ports))
    new_root("bake", check=True)
    new_root("boot", "--mode", "review", check=True)
    assert processes_under(new_root.root)
    result = new_root("stop", check=True)
    assert "stopped" in result.stdout
    time.sleep(0.3)
    assert processes_under(new_root.root) == []
    assert not (new_root.root / "run/unified/supervisor.sock").exists()
    code, report = new_root.status()
    assert code == 3 and report["supervisord"] == "NOT RUNNING"


def test_a_service_that_never_gets_ready_fails_the_boot_by_name(shop_repo: Path, new_root: Agent) -> None:
    ports = dict(zip(["postgres", "redis", "api", "front", "bad"], free_ports(5)))
    broken = f"""\
  broken-web:
    repo: shop
    command: echo "starting broken-web"; exec {services_python()} -m http.server --bind 127.0.0.1 $PORT
    port: {ports['bad']}
    health: {{path: /no-such-health-page, timeout: 3}}
"""
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(stack_yaml(shop_repo, ports, extra_services=broken))
    new_root("bake", check=True)
    t0 = time.monotonic()
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 1
    assert time.monotonic() - t0 < 30
    assert "broken-web" in result.stderr and "404" in result.stderr
    assert "--- last lines of" in result.stderr and "GET /no-such-health-page" in result.stderr  # its log
    assert "Traceback" not in result.stderr
    code, report = new_root.status()
    assert code == 3 and "broken-web" in report["last_error"]
    ready = {p["name"]: p["ready"] for p in report["programs"]}
    assert ready["shop-api"] and not ready["broken-web"]


def test_boot_without_baked_code_refuses_before_starting_anything(shop_repo: Path, new_root: Agent) -> None:
    ports = dict(zip(["postgres", "redis", "api", "front"], free_ports(4)))
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(stack_yaml(shop_repo, ports))
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 2 and "agent bake" in result.stderr
    assert not (new_root.root / "run/unified/supervisor.sock").exists()
    assert processes_under(new_root.root) == []


def test_a_worker_is_ready_only_after_its_start_seconds(shop_repo: Path, new_root: Agent) -> None:
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(f"version: 1\nrepos:\n  shop: {{url: {shop_repo}, ref: main}}\nservices:\n"
                                 "  sleeper: {repo: shop, command: exec sleep 600, start_seconds: 2}\n")
    new_root("bake", check=True)
    new_root("boot", "--mode", "review", check=True)
    steps = {s["name"]: s["seconds"] for s in new_root.status()[1]["steps"]}
    assert steps["start sleeper"] >= 2.0, steps
