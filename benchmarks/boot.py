"""Benchmark: `agent boot --mode review` against (a) its critical path measured alone and
(b) starting the same programs one after another. Not a test: it prints figures.

All three start cold from the same baked root (initdb, databases, release, services).
(a) and (b) start the programs directly (subprocess + the same readiness probes, the
same commands and environments from the same plan), without supervisord or the agent's
boot graph; (a) times each piece alone and adds up the longest chain:
PostgreSQL (initdb + ready + databases) + release + the slowest service to ready.

    python benchmarks/boot.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from stack import REPO, Stack, median  # noqa: F401

from agent import facts
from agent.config import catalog
from agent.deadline import Deadline
from agent.local import fs, readiness
from agent.local.databases import kinds
from agent.local.layout import Layout
from agent.plan import Plan, Program, make_plan
from agent.role import Role


class Direct:
    """Starts plan programs as plain child processes: the baselines' launcher."""

    def __init__(self, root: Path, services: Path):
        self.layout = Layout(root)
        cat = catalog.load(services)
        self.facts = facts.gather(self.layout, cat, Role("review"), generate_secrets=True)
        self.plan: Plan = make_plan(cat, Role("review"), self.layout, self.facts)
        self.procs: list[subprocess.Popen[bytes]] = []
        for db in self.plan.databases:
            fs.write_all(kinds.get(db.kind).files(db, self.layout, self.facts))

    def start(self, program: Program) -> None:
        if program.kind == "service":
            env = {"PATH": os.environ["PATH"], **program.environment}
            argv = ["/bin/sh", "-c", program.command or ""]
        else:
            env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
            argv = list(program.argv)
        self.procs.append(subprocess.Popen(argv, cwd=program.directory, env=env, user=program.user,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True))

    def ready(self, program: Program) -> None:
        deadline = Deadline(program.readiness.timeout)
        if program.readiness.kind == "running":
            time.sleep(program.start_seconds)  # what supervisord's startsecs means
            return
        result = readiness.wait(lambda: (readiness.probe(program.readiness, "RUNNING"), "RUNNING"), deadline)
        assert result.ready, f"{program.name}: {result.detail}"

    def database(self, kind: str) -> None:
        """init, start, ready, after-ready: what the agent does for a local database."""
        db = next(d for d in self.plan.databases if d.kind == kind)
        module = kinds.get(kind)
        module.init(db, self.layout, self.facts)
        program = self.plan.program(kind)
        self.start(program)
        self.ready(program)
        module.after_ready(db, self.layout, self.facts)

    def release(self, program: Program) -> None:
        env = {"PATH": os.environ["PATH"], **program.environment}
        subprocess.run(["/bin/sh", "-c", program.release or "true"], cwd=program.directory, env=env,
                       check=True, capture_output=True)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            os.killpg(proc.pid, signal.SIGINT if "postgres" in str(proc.args) else signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)


def timed(action: Callable[[], None]) -> float:
    t0 = time.monotonic()
    action()
    return time.monotonic() - t0


def critical_path(stack: Stack) -> float:
    direct = Direct(stack.fresh_root(), stack.services)
    try:
        t_db = timed(lambda: direct.database("postgres"))
        timed(lambda: direct.database("redis"))
        releases = [p for p in direct.plan.services if p.release]
        t_release = sum(timed(lambda p=p: direct.release(p)) for p in releases)
        slowest = max(timed(lambda p=p: (direct.start(p), direct.ready(p))) for p in direct.plan.services)
    finally:
        direct.stop()
    return t_db + t_release + slowest


def sequential(stack: Stack) -> float:
    direct = Direct(stack.fresh_root(), stack.services)
    t0 = time.monotonic()
    try:
        for db in direct.plan.databases:
            direct.database(db.kind)
        for program in direct.plan.services:
            if program.release:
                direct.release(program)
            direct.start(program)
            direct.ready(program)
        return time.monotonic() - t0
    finally:
        direct.stop()


def agent_boot(stack: Stack) -> float:
    root = stack.fresh_root()
    try:
        return timed(lambda: stack.agent("boot", "--mode", "review", root=root))
    finally:
        stack.agent("stop", root=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    stack = Stack()
    results: dict[str, list[float]] = {"agent boot": [], "critical path (a)": [], "one after another (b)": []}
    try:
        for _ in range(args.rounds):  # interleaved, so machine noise hits all three alike
            results["agent boot"].append(agent_boot(stack))
            results["critical path (a)"].append(critical_path(stack))
            results["one after another (b)"].append(sequential(stack))
    finally:
        stack.cleanup()
    boot = median(results["agent boot"])
    print(f"review boot of the example stack, {args.rounds} rounds, median seconds (cold: initdb included)")
    for name, values in results.items():
        print(f"  {name:<24} {median(values):6.2f}s   runs: {', '.join(f'{v:.2f}' for v in values)}")
    print(f"  boot / critical path     {boot / median(results['critical path (a)']):6.2f}x   (goal <= 1.3x)")
    print(f"  boot / one after another {boot / median(results['one after another (b)']):6.2f}x")


if __name__ == "__main__":
    main()
