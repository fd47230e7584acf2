"""The benchmark stack: the example services of services.yaml on free loopback ports,
baked once into a template root that each run copies (so every run starts cold)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import free_ports, make_stack_repo, stack_yaml  # noqa: E402  (one definition of the stack)


def precompile() -> None:
    """Bytecode for the agent and the deploy tool, as `pip install` leaves an installed
    package: without it (PYTHONDONTWRITEBYTECODE, a fresh clone) every run of a command
    would compile its sources, while the baselines' installed modules come compiled."""
    import compileall
    for package in ("agent", "fleet"):
        compileall.compile_dir(str(REPO / package), quiet=1)


precompile()


class Stack:
    """A baked template root and the services.yaml describing it."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="unified-bench-", dir="/tmp"))
        self.base.chmod(0o755)
        repo = make_stack_repo(self.base)
        self.ports = dict(zip(["postgres", "redis", "api", "front"], free_ports(4)))
        self.services = self.base / "services.yaml"
        self.services.write_text(stack_yaml(repo, self.ports))
        self.template = self.base / "template"
        self.agent("bake", root=self.template)
        self.runs = 0

    def fresh_root(self) -> Path:
        """A cold copy of the baked root: no database, no state, nothing running."""
        self.runs += 1
        root = self.base / f"run{self.runs}"
        shutil.copytree(self.template, root, symlinks=True)
        root.chmod(0o755)
        return root

    def agent(self, *args: str, root: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "agent", *args, "--root", str(root)]
        if args[0] in ("bake", "boot", "plan"):
            cmd += ["--services", str(self.services)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        if result.returncode not in (0, 3) or (args[0] != "status" and result.returncode):
            raise RuntimeError(f"agent {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def cleanup(self) -> None:
        for root in self.base.glob("run*"):
            self.agent("stop", root=root)
        shutil.rmtree(self.base, ignore_errors=True)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
