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


# --- 3. an unresponsive supervisord ---------------------------------------------------

def test_status_and_stop_answer_in_seconds_when_supervisord_is_stopped(echo_box: tuple[Agent, int]) -> None:
    agent, port = echo_box
    pid, echo = supervisord_pid(agent), health_pid(port)
    os.kill(pid, signal.SIGSTOP)
    try:
        result, elapsed = timed(agent, "status", timeout=30)
        assert result.returncode == 3 and elapsed < 6, (elapsed, result.stdout, result.stderr)
        assert "supervisord: NOT ANSWERING" in result.stdout and f"pid {pid}, stopped by a signal" in result.stdout
        report = json.loads(agent("status", "--json", timeout=30).stdout)
        assert report["supervisord"] == "NOT ANSWERING"
        [program] = report["programs"]
        assert (program["state"], program["pid"], program["ready"]) == ("UNKNOWN", echo, True)  # it still serves
        result, elapsed = timed(agent, "stop", timeout=60)
        assert result.returncode == 1 and elapsed < 12, (elapsed, result.stdout, result.stderr)
        line = one_line(result.stderr)
        assert "did not answer within 5s" in line and f"kill -CONT {pid}" in line, line
        assert health_pid(port) == echo  # nothing was stopped behind its back
    finally:
        os.kill(pid, signal.SIGCONT)
    assert agent("status").returncode == 0
    result = agent("stop", timeout=60)
    assert result.returncode == 0, result.stderr
    assert processes_under(agent.root) == []


# --- 4. status says what it knows ------------------------------------------------------

def test_status_as_another_user_says_permission_denied(echo_box: tuple[Agent, int]) -> None:
    """The socket is 0700, root's. Run as `unified` with the system Python (the test's
    own interpreter lives under root's home) and this virtualenv's packages."""
    agent, _ = echo_box
    system = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if system != str(sys.version_info[:2]):
        pytest.skip(f"the system Python {system} cannot use this virtualenv's packages")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("runuser (util-linux) is not installed")
    result = subprocess.run([runuser, "-u", "unified", "--", "/usr/bin/python3", "-m", "agent", "status",
                             "--root", str(agent.root)], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "supervisord: PERMISSION DENIED" in result.stdout, result.stdout
    assert "permission denied" in result.stdout and "run this as root" in result.stdout, result.stdout
    assert "NOT RUNNING" not in result.stdout and "Traceback" not in result.stderr


def test_status_after_supervisord_is_killed_shows_the_programs_still_serving(echo_box: tuple[Agent, int]) -> None:
    agent, port = echo_box
    pid, echo = supervisord_pid(agent), health_pid(port)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 10, "supervisord gone")
    code, report = agent.status()
    assert code == 3 and report["supervisord"] == "NOT RUNNING"
    [program] = report["programs"]
    assert (program["state"], program["pid"], program["ready"]) == ("UNSUPERVISED", echo, True), program
    text = agent("status").stdout
    assert "still run unsupervised" in text and f"echo (pid {echo}" in text, text


def test_status_without_a_state_file_lists_what_supervisord_runs(echo_box: tuple[Agent, int]) -> None:
    agent, port = echo_box
    (agent.root / "var/lib/unified/state.json").unlink()
    result = agent("status")
    assert result.returncode == 3
    assert "no state file" in result.stdout and "supervisord runs 1 program" in result.stdout, result.stdout
    report = json.loads(agent("status", "--json").stdout)
    [program] = report["programs"]
    assert (program["name"], program["pid"]) == ("echo", health_pid(port))
    assert program["state"] in ("STARTING", "RUNNING") and not program["ready"]  # readiness unknown without state


# --- 5. supervisord's pid file ------------------------------------------------------

@pytest.mark.parametrize("content", ["", "garbage\n", "DECOY"])
def test_a_bad_pid_file_confuses_neither_status_nor_stop(echo_box: tuple[Agent, int], content: str) -> None:
    """supervisord killed, its programs orphaned, and its pid file empty, garbage, or
    naming a live Python process that is not supervisord (a reused pid)."""
    agent, port = echo_box
    pid, echo = supervisord_pid(agent), health_pid(port)
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 10, "supervisord gone")
        (agent.root / "run/unified/supervisord.pid").write_text(content.replace("DECOY", f"{decoy.pid}\n"))
        code, report = agent.status()
        assert code == 3 and report["programs"][0]["state"] == "UNSUPERVISED", report
        result = agent("stop", timeout=120)
        assert result.returncode == 0, result.stderr
        assert processes_under(agent.root) == [] and alive(decoy.pid)  # the orphans, and only they
        assert not (agent.root / "run/unified/supervisord.pid").exists() and not alive(echo)
    finally:
        decoy.kill()
        decoy.wait()


def test_a_boot_after_a_bad_pid_file_takes_the_orphans_over(echo_box: tuple[Agent, int]) -> None:
    agent, port = echo_box
    pid, echo = supervisord_pid(agent), health_pid(port)
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 10, "supervisord gone")
        (agent.root / "run/unified/supervisord.pid").write_text(f"{decoy.pid}\n")
        result = agent("boot", "--mode", "review", timeout=120)
        assert result.returncode == 0, result.stderr
        assert agent.status()[0] == 0 and health_pid(port) != echo and not alive(echo) and alive(decoy.pid)
        assert supervisord_pid(agent) != decoy.pid
    finally:
        decoy.kill()
        decoy.wait()


# --- 6. a full disk --------------------------------------------------------------------

@pytest.fixture
def tmpfs_root(shop_repo: Path) -> Iterator[Agent]:
    """A root on its own 32 MiB tmpfs, so the disk can be filled without touching /tmp."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = make_root()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(root)], check=True)
    agent = Agent(root)
    try:
        yield agent
    finally:
        (root / "filler").unlink(missing_ok=True)
        agent("stop", timeout=120)
        wait_until(lambda: processes_under(root) == [], 15, "every process of the root gone")
        subprocess.run(["umount", str(root)], check=True)
        root.rmdir()


def fill(root: Path) -> None:
    """Fill the file system of `root` to the last byte."""
    fd = os.open(root / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue  # full at this size: go on with smaller writes
    finally:
        os.close(fd)


def test_a_full_disk_names_the_file_and_leaves_no_partial_one(shop_repo: Path, tmpfs_root: Agent) -> None:
    agent = tmpfs_root
    write_box(agent, shop_repo)
    agent("boot", "--mode", "review", check=True)
    state = agent.root / "var/lib/unified/state.json"
    before = state.read_bytes()
    agent("stop", check=True)
    fill(agent.root)
    result = agent("boot", "--mode", "review")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    found = re.search(r"cannot write (/\S+): No space left on device; the file system is full", line)
    assert found and found.group(1).startswith(str(agent.root)), result.stderr
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    written = Path(found.group(1))
    assert not list(written.parent.glob(f".{written.name}.*")), "a temporary file was left behind"
    assert state.read_bytes() == before  # whole and unchanged
    # supervisord could not write its pid either: it truncated the file, failed, and ran on
    pidfile = agent.root / "run/unified/supervisord.pid"
    assert pidfile.exists() and pidfile.stat().st_size == 0
    assert "supervisord: RUNNING" in agent("status").stdout
    (agent.root / "filler").unlink()
    result = agent("stop", timeout=120)
    assert result.returncode == 0, result.stderr
    assert processes_under(agent.root) == []  # stop waited for supervisord, found without its pid file
    assert not pidfile.exists()
