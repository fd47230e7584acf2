"""Shared fixtures: agent roots, free loopback ports, the example stack as a git repo.

Integration tests run the real `agent` CLI as a subprocess against real supervisord,
PostgreSQL and Redis; each test gets its own root and ports, so nothing collides and
nothing depends on what ran before.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent

if (REPO / "tests/harness/fixtures.py").exists():
    pytest_plugins = ["tests.harness.fixtures"]

SYSTEM_PYTHON = "/usr/bin/python3"


def services_python() -> str:
    """The interpreter test services run with: a virtualenv of the system Python with
    the example stack's requirements, made once per machine in /var/tmp.

    Services run as the unprivileged user `unified` where it exists (as on the image),
    and that user cannot reach an interpreter installed under root's home (pyenv), so
    the test's own `sys.executable` will not do. Made under a lock, keyed by the
    requirements, so concurrent test runs share one.
    """
    import fcntl
    import hashlib
    requirements = REPO / "examples/requirements.txt"
    key = hashlib.sha256(requirements.read_bytes() + SYSTEM_PYTHON.encode()).hexdigest()[:12]
    venv = Path("/var/tmp") / f"unified-test-python-{key}"
    python = venv / "bin/python"
    if (venv / ".complete").exists():
        return str(python)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "-r", str(requirements)], check=True, timeout=600)
            (venv / ".complete").touch()
    return str(python)


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_root() -> Path:
    """A root under /tmp reachable by the postgres and redis users (pytest's tmp_path
    lives under a 0700 directory they cannot enter)."""
    root = Path(tempfile.mkdtemp(prefix="unified-", dir="/tmp"))
    root.chmod(0o755)
    return root


def processes_under(root: Path) -> list[str]:
    """Live processes whose command line or working directory is under `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"{proc.name}: {cmdline.strip()[:120]} (cwd {cwd})")
    return found


@dataclass
class Agent:
    """Runs the real CLI (`python -m agent`) against one root."""

    root: Path
    services: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 180, check: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "agent", *args, "--root", str(self.root)]
        if self.services is not None and args and args[0] in ("validate", "plan", "boot", "bake"):
            cmd += ["--services", str(self.services)]
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
        if check and result.returncode != 0:
            raise AssertionError(f"agent {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def status(self) -> tuple[int, dict]:
        result = self("status", "--json")
        return result.returncode, json.loads(result.stdout)

    def stop_and_clean(self) -> list[str]:
        """Stop everything under the root (no drain: tests of draining stop for themselves)
        and remove it; any process still found under it is returned."""
        self("stop", "--no-drain", timeout=120)
        deadline = time.monotonic() + 10
        left = processes_under(self.root)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = processes_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        return left


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def git_commit_all(repo: Path, message: str = "commit", init: bool = False) -> str:
    """Commit everything in `repo` (made a repository on branch main first, with
    `init`) and return the new commit's SHA."""
    if init:
        subprocess.run(GIT + ["init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(GIT + ["-C", str(repo), "add", "-A"], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-qm", message], check=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def make_stack_repo(base: Path) -> Path:
    """The example stack (examples/) and the test services (tests/apps, as testapps/)
    committed in a git repository under `base`, as a bake expects a repo to be."""
    repo = base / "shop"
    shutil.copytree(REPO / "examples", repo / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests/apps", repo / "testapps", ignore=shutil.ignore_patterns("__pycache__"))
    git_commit_all(repo, "shop", init=True)
    return repo


@pytest.fixture(scope="session")
def shop_repo() -> Iterator[Path]:
    """The stack's code in a throwaway git repo, for every test of the session."""
    base = Path(tempfile.mkdtemp(prefix="unified-shop-", dir="/tmp"))
    base.chmod(0o755)
    yield make_stack_repo(base)
    shutil.rmtree(base, ignore_errors=True)


def echo_service(name: str, port: int, env: str = "", extra: str = "") -> str:
    """A services.yaml entry for tests/apps/echo.py (in the test repo as testapps/)."""
    return f"""\
  {name}:
    repo: shop
    command: {services_python()} -m testapps.echo
    port: {port}
    health: {{path: /health, timeout: 20}}
{env}{extra}"""


def stack_yaml(repo: Path, ports: dict[str, int], extra_services: str = "", api_env: str = "") -> str:
    """The example stack as in services.yaml, on free ports, run by the shared services
    interpreter (which has the stack's two client libraries) instead of a per-repo
    virtualenv built at every bake."""
    py = services_python()
    return f"""\
version: 1
repos:
  shop: {{url: {repo}, ref: main}}
databases:
  postgres: {{version: 15, databases: [shop], port: {ports['postgres']}}}
  redis: {{port: {ports['redis']}}}
services:
  shop-api:
    repo: shop
    command: {py} -m examples.shop.api
    port: {ports['api']}
    health: {{path: /health, timeout: 30}}
    uses: [postgres, redis]
    release: {py} -m examples.shop.migrate
    env:
      LOG_LEVEL: info
{api_env}
  shop-worker:
    repo: shop
    command: {py} -m examples.shop.worker
    uses: [postgres, redis]
  shop-front:
    repo: shop
    command: {py} -m examples.shop.front
    port: {ports['front']}
    health: {{path: /health, timeout: 30}}
    env: {{API_URL: "http://127.0.0.1:{ports['api']}"}}
{extra_services}
"""


@pytest.fixture
def new_root() -> Iterator[Agent]:
    """A fresh root; everything under it is stopped and removed afterwards."""
    agent = Agent(make_root())
    yield agent
    agent.stop_and_clean()
