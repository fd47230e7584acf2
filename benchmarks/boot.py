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

from agent import catalog, databases, readiness, state, users
from agent.paths import Layout
from agent.plan import Inputs, Plan, Program, Role, make_plan


class Direct:
    """Starts plan programs as plain child processes: the baselines' launcher."""

    def __init__(self, root: Path, services: Path):
        self.layout = Layout(root)
        cat = catalog.load(services)
        self.tools = databases.find_tools(cat.postgres.version if cat.postgres else None)
        self.pg_user = users.system_user("postgres")
        self.redis_user = users.system_user("redis")
        inputs = Inputs(tools=self.tools, postgres_user=self.pg_user, redis_user=self.redis_user,
                        pg_password=state.secret(self.layout, "postgres"),
                        redis_password=state.secret(self.layout, "redis"))
        self.inputs = inputs
        self.plan: Plan = make_plan(cat, Role("review"), self.layout, inputs)
        self.procs: list[subprocess.Popen[bytes]] = []
        from agent import fs, render
        databases.prepare_dirs(self.layout, self.pg_user, self.redis_user, True, True)
        redis = self.plan.program("redis")
        fs.write(render.redis_conf(self.layout, redis.port or 0, inputs.redis_password, redis.user))

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
        t0 = time.monotonic()
        if program.readiness.kind == "running":
            time.sleep(program.start_seconds)  # what supervisord's startsecs means
            return
        result = readiness.wait(lambda: (readiness.probe(program.readiness, "RUNNING",
                                                         f"{self.tools.pg_bin}/pg_isready",
                                                         str(self.layout.pg_socket_dir)), "RUNNING"),
                                t0 + program.readiness.timeout)
        assert result.ready, f"{program.name}: {result.detail}"

    def postgres(self) -> None:
        pg = self.plan.program("postgres")
        databases.initdb(self.layout, self.tools, self.pg_user)
        self.start(pg)
        self.ready(pg)
        databases.provision(self.layout, self.tools, self.pg_user, pg.port or 0, self.plan.databases,
                            self.inputs.pg_password)

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
        t_db = timed(direct.postgres)
        redis = direct.plan.program("redis")
        timed(lambda: (direct.start(redis), direct.ready(redis)))
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
        direct.postgres()
        for program in direct.plan.programs:
            if program.name == "postgres":
                continue
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
