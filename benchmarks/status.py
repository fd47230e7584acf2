"""Benchmark: `agent status` latency against `supervisorctl status` on the same
supervisord (the natural baseline: what an operator would otherwise type).

    python benchmarks/status.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from stack import REPO, Stack, median


def run_timed(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    stack = Stack()
    root = stack.fresh_root()
    try:
        stack.agent("boot", "--mode", "review", root=root)
        agent = [sys.executable, "-m", "agent", "status", "--root", str(root)]
        ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(root / "etc/unified/supervisord.conf"),
               "status"]
        times: dict[str, list[float]] = {"agent status": [], "supervisorctl status": []}
        for _ in range(args.runs):  # interleaved
            times["agent status"].append(run_timed(agent))
            times["supervisorctl status"].append(run_timed(ctl))
    finally:
        stack.cleanup()
    print(f"status latency, {args.runs} runs each, interleaved, median")
    for name, values in times.items():
        print(f"  {name:<22} {median(values) * 1000:7.1f} ms   (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})")
    ratio = median(times["agent status"]) / median(times["supervisorctl status"])
    print(f"  agent / supervisorctl  {ratio:7.2f}x   (goal <= 1.5x)")


if __name__ == "__main__":
    main()
