"""Starts that must fail, and starts that were interrupted, for real.

A worker that crashes on start is not ready (review boot, restart, and a production
boot that abandons its launch hook); a first boot killed during initdb boots next
time; a release runs once even when the agent dies right after it; a release is
bounded in time, ended with the agent's SIGTERM, and a release left running by a
killed agent is ended by the next boot and by `agent stop`.

Every wait here waits for something observable (a process in /proc, a line of output,
a file) within a bound, never for a guessed time.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conftest import REPO, Agent, free_ports
from tests.harness.fixtures import subprocess_env
from tests.harness.moto_server import MotoServer, seed_instance

pytestmark = pytest.mark.integration


# -- shared steps -----------------------------------------------------------------------------

def services_yaml(repo: Path, services: str, databases: str = "", environments: str = "") -> str:
    return (f"version: 1\nrepos:\n  shop: {{url: {repo}, ref: main}}\n{databases}services:\n{services}"
            f"{environments}")


def spawn(agent: Agent, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The real CLI as a child in a process group of its own (as systemd starts it), its
    output unbuffered so a line is seen when it is printed."""
    cmd = [sys.executable, "-m", "agent", *args, "--root", str(agent.root)]
    if agent.services is not None:
        cmd += ["--services", str(agent.services)]
    full_env = {**os.environ, **agent.env, **(env or {}), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=str(REPO),
                            start_new_session=True)


def wait_for(what: str, probe: Callable[[], object], timeout: float = 60.0, pause: float = 0.01) -> object:
    """Poll `probe` until it returns something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(pause)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_until(proc: subprocess.Popen[bytes], text: str, timeout: float = 60.0) -> str:
    """stdout of `proc` up to and including the first line containing `text`."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while text.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no {text!r} within {timeout:.0f}s; output so far:\n{seen.decode()}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"the agent ended before printing {text!r}:\n{seen.decode()}\n{err}")
            seen += chunk
    return seen.decode()


def processes_with(token: str) -> list[int]:
    """Live processes (not zombies) whose command line contains `token`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state != b"Z":
            found.append(int(proc.name))
    return found


@pytest.fixture
def token() -> Iterator[str]:
    """A sleep duration no other test (or test run on this machine) uses: what finds a
    test's release processes in /proc. Whatever still carries it at the end is killed,
    so a failing test leaves nothing behind."""
    value = str(random.randint(10_000_000, 99_999_999))
    yield value
    for pid in processes_with(f"sleep {value}"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def release_runs(agent: Agent, service: str, marker: str) -> int:
    log = agent.root / f"var/log/unified/{service}.release.log"
    return log.read_text().count(marker) if log.exists() else 0


def ready_of(agent: Agent) -> tuple[int, dict[str, bool]]:
    code, report = agent.status()
    return code, {p["name"]: p["ready"] for p in report["programs"]}


def crashy(command: str) -> str:
    return f"  crashy:\n    repo: shop\n    command: {command}\n"


STEADY = "  steady:\n    repo: shop\n    command: exec sleep 600\n"


# -- 1. a crash on start is not ready ----------------------------------------------------

def test_a_worker_that_crashes_on_start_fails_the_boot(shop_repo: Path, new_root: Agent) -> None:
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(services_yaml(shop_repo, STEADY + crashy('"echo about to die; exit 3"')))
    new_root("bake", check=True)
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "crashy: ready" not in result.stdout
    assert "boot failed: crashy" in result.stderr and "about to die" in result.stderr  # named, with its log
    assert "Traceback" not in result.stderr
    code, ready = ready_of(new_root)
    assert code == 3 and ready == {"steady": True, "crashy": False}


def test_restart_of_a_worker_that_now_crashes_fails(shop_repo: Path, new_root: Agent) -> None:
    flag = new_root.root / "crash-now"
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(services_yaml(shop_repo, crashy(
        f'"test -e {flag} && {{ echo about to die; exit 3; }}; exec sleep 600"')))
    new_root("bake", check=True)
    new_root("boot", "--mode", "review", check=True)
    flag.touch()
    result = new_root("restart", "crashy")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "crashy" in result.stderr and "about to die" in result.stderr and "ready in" not in result.stdout
    assert "Traceback" not in result.stderr
    code, ready = ready_of(new_root)
    assert code == 3 and ready == {"crashy": False}


def test_a_production_worker_that_crashes_on_start_abandons(moto_server: MotoServer, imds: object,
                                                            shop_repo: Path, new_root: Agent) -> None:
    seeded = seed_instance(moto_server, tags={"unified:mode": "production", "unified:service": "crashy"},
                           auto_scaling_group="asg-crashy")
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(services_yaml(
        shop_repo, crashy('"echo about to die; exit 3"'),
        environments="environments:\n  production: {config_path: /unified/production}\n"))
    new_root.env = subprocess_env(moto_server, imds(seeded))  # type: ignore[operator]
    new_root("bake", check=True)
    result = new_root("boot")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "crashy" in result.stderr and "about to die" in result.stderr and "ABANDON" in result.stderr
    assert [a["LifecycleActionResult"] for a in moto_server.lifecycle_actions] == ["ABANDON"]
    assert ready_of(new_root)[0] == 3


# -- 2. initdb is complete or redone -----------------------------------------------------

def test_a_first_boot_killed_during_initdb_boots_next_time(shop_repo: Path, new_root: Agent) -> None:
    port = free_ports(1)[0]
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(services_yaml(
        shop_repo, "  worker:\n    repo: shop\n    command: exec sleep 600\n    uses: [postgres]\n",
        databases=f"databases:\n  postgres: {{version: 15, port: {port}}}\n"))
    new_root("bake", check=True)
    state_dir = new_root.root / "var/lib/unified"

    def half_initialised() -> bool:
        """initdb runs and has written PG_VERSION, not yet global/pg_control."""
        if not any(str(new_root.root) in " ".join(map(str, cmd)) for cmd in initdb_commands()):
            return False
        return any(not (v.parent / "global/pg_control").exists() for v in state_dir.glob("*/PG_VERSION"))

    boot = spawn(new_root, "boot", "--mode", "review")
    try:
        wait_for("initdb to be half way", half_initialised, timeout=120, pause=0.005)
    finally:
        os.killpg(boot.pid, signal.SIGKILL)  # the agent and initdb with it
        boot.communicate(timeout=30)
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 0, result.stdout + result.stderr
    code, ready = ready_of(new_root)
    assert code == 0 and ready == {"postgres": True, "worker": True}


def initdb_commands() -> list[list[str]]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/initdb"):
            found.append([a.decode(errors="replace") for a in argv])
    return found


# -- 3. a release is recorded the moment it succeeds -------------------------------------

def echo_with_release(repo: Path, port: int, release: str, start_delay: float = 0, extra: str = "") -> str:
    from tests.conftest import services_python
    return services_yaml(repo, f"""\
  echo:
    repo: shop
    command: {services_python()} -m testapps.echo
    port: {port}
    health: {{path: /health, timeout: 30}}
    env: {{START_DELAY: '{start_delay}'}}
    release: {release}
{extra}""")


def test_a_release_is_not_run_again_after_a_crash_right_after_it(shop_repo: Path, new_root: Agent) -> None:
    new_root.services = new_root.root / "services.yaml"
    # the service takes 5 s to start: the boot is still running when the agent is killed
    new_root.services.write_text(echo_with_release(shop_repo, free_ports(1)[0], '"echo release ran"', 5))
    new_root("bake", check=True)
    boot = spawn(new_root, "boot", "--mode", "review")
    try:
        read_until(boot, "echo: release done")
    finally:
        os.killpg(boot.pid, signal.SIGKILL)
        boot.communicate(timeout=30)
    assert release_runs(new_root, "echo", "release ran") == 1
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "release done" not in result.stdout
    assert release_runs(new_root, "echo", "release ran") == 1


def test_a_release_is_not_run_again_when_the_state_file_is_lost(shop_repo: Path, new_root: Agent) -> None:
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(echo_with_release(shop_repo, free_ports(1)[0], '"echo release ran"'))
    new_root("bake", check=True)
    new_root("boot", "--mode", "review", check=True)
    state_file = new_root.root / "var/lib/unified/state.json"
    state_file.write_text("{not json")
    corrupt = new_root("boot", "--mode", "review")  # set aside, with a warning; the release is not rerun
    assert corrupt.returncode == 0 and "moved it to" in corrupt.stdout, corrupt.stdout + corrupt.stderr
    assert "release done" not in corrupt.stdout
    state_file.unlink()
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "release done" not in result.stdout
    assert release_runs(new_root, "echo", "release ran") == 1


# -- 4. a release is bounded, and never outlives what started it -------------------------

def test_a_release_that_hangs_times_out(shop_repo: Path, new_root: Agent, token: str) -> None:
    """It ignores SIGTERM too (its children inherit that): SIGKILL follows the grace."""
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(echo_with_release(
        shop_repo, free_ports(1)[0], f'"trap \'\' TERM; echo migrating; sleep {token} & sleep {token}; wait"',
        extra="    release_timeout: 2\n"))
    new_root("bake", check=True)
    t0 = time.monotonic()
    result = new_root("boot", "--mode", "review", timeout=120)
    elapsed = time.monotonic() - t0
    assert result.returncode == 1, result.stdout + result.stderr
    assert "release of echo" in result.stderr and "release_timeout of 2s" in result.stderr
    assert "migrating" in result.stderr  # its log tail
    assert "Traceback" not in result.stderr
    assert 2 + 10 <= elapsed < 60, elapsed  # the timeout, then the grace before SIGKILL
    assert processes_with(f"sleep {token}") == []


def test_sigterm_during_a_release_ends_it(shop_repo: Path, new_root: Agent, token: str) -> None:
    new_root.services = new_root.root / "services.yaml"
    new_root.services.write_text(echo_with_release(
        shop_repo, free_ports(1)[0], f'"echo migrating; sleep {token} & sleep {token}; wait"'))
    new_root("bake", check=True)
    boot = spawn(new_root, "boot", "--mode", "review")
    try:
        wait_for("both release sleeps", lambda: len(processes_with(f"sleep {token}")) >= 3)  # bash + 2 sleeps
        boot.send_signal(signal.SIGTERM)  # systemd's KillMode=process: the agent alone
        try:
            out, err = boot.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the agent was still running 60 s after SIGTERM, waiting on its release")
    finally:
        if boot.poll() is None:
            os.killpg(boot.pid, signal.SIGKILL)
            boot.communicate(timeout=30)
    assert boot.returncode == 1, out.decode() + err.decode()
    assert "SIGTERM" in err.decode() and "Traceback" not in err.decode()
    assert processes_with(f"sleep {token}") == []


def orphan_a_release(agent: Agent, shop_repo: Path, token: str) -> None:
    """Boot with a release that hangs on its first run only, and kill -9 the agent (not
    its group) while it runs: the release is left behind."""
    flags = agent.root / "flags"
    flags.mkdir()
    flags.chmod(0o777)
    first = flags / "first-run"
    # a second run says whether the first is still running (anchored: not this shell's own command line)
    release = (f'"pgrep -f \'^sleep {token}$\' >/dev/null && echo LEFTOVER STILL RUNNING; '
               f'if test -e {first}; then echo second run; else touch {first}; echo first run; '
               f'sleep {token} & sleep {token}; wait; fi"')
    agent.services = agent.root / "services.yaml"
    agent.services.write_text(echo_with_release(shop_repo, free_ports(1)[0], release))
    agent("bake", check=True)
    boot = spawn(agent, "boot", "--mode", "review")
    try:
        wait_for("the release's sleeps", lambda: len(processes_with(f"sleep {token}")) >= 3)
    finally:
        os.kill(boot.pid, signal.SIGKILL)
        boot.communicate(timeout=30)
    assert len(processes_with(f"sleep {token}")) >= 3  # left behind


def test_the_next_boot_ends_a_release_left_by_a_killed_agent(shop_repo: Path, new_root: Agent, token: str) -> None:
    orphan_a_release(new_root, shop_repo, token)
    result = new_root("boot", "--mode", "review")
    assert result.returncode == 0, result.stdout + result.stderr
    assert processes_with(f"sleep {token}") == []
    log = (new_root.root / "var/log/unified/echo.release.log").read_text()
    assert "second run" in log and "LEFTOVER STILL RUNNING" not in log, log


def test_stop_ends_a_release_left_by_a_killed_agent(shop_repo: Path, new_root: Agent, token: str) -> None:
    orphan_a_release(new_root, shop_repo, token)
    result = new_root("stop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert processes_with(f"sleep {token}") == []
