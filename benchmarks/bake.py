"""Benchmark: `agent bake` of several repos whose builds take a while, side by side in
one run with (a) baking them one after another (--jobs 1) and (b) the slowest single
repo baked alone. Goal: parallel bake <= 1.3x the slowest single repo.

The builds are `sleep`s of different lengths plus a little CPU (a checksum of the
checkout): real builds mostly wait on the network and disk (pip, npm, bundler).

    python benchmarks/bake.py [--repos 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stack import REPO, median

from tests.conftest import git_commit_all



def make_repos(base: Path, count: int) -> dict[str, float]:
    """count repos; repo i builds for 1 + 0.5*i seconds."""
    builds = {}
    for i in range(count):
        path = base / f"repo{i}"
        path.mkdir(parents=True)
        (path / "data.bin").write_bytes(os.urandom(2_000_000))
        git_commit_all(path, "x", init=True)
        builds[f"repo{i}"] = 1.0 + 0.5 * i
    return builds


def services(base: Path, builds: dict[str, float], only: str | None = None) -> Path:
    path = base / (f"services-{only}.yaml" if only else "services.yaml")
    lines = ["version: 1", "repos:"]
    for name, seconds in builds.items():
        if only in (None, name):
            lines.append(f"  {name}: {{url: '{base / name}', ref: main, build: 'sha256sum data.bin >/dev/null; sleep {seconds}'}}")
    first = only or next(iter(builds))
    lines += ["services:", f"  svc: {{repo: {first}, command: 'true'}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def bake(base: Path, services_file: Path, jobs: int, tag: str) -> float:
    root = base / f"root-{tag}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "agent", "bake", "--root", str(root), "--services", str(services_file),
                    "--jobs", str(jobs)], check=True, capture_output=True, env=env)
    elapsed = time.monotonic() - t0
    shutil.rmtree(root)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="unified-bake-bench-"))
    try:
        builds = make_repos(base, args.repos)
        slowest = max(builds, key=builds.__getitem__)
        everything, single = services(base, builds), services(base, builds, only=slowest)
        results: dict[str, list[float]] = {"parallel (--jobs N)": [], "one after another (--jobs 1)": [],
                                           f"slowest repo alone ({slowest})": []}
        for _ in range(args.rounds):  # interleaved
            results["parallel (--jobs N)"].append(bake(base, everything, args.repos, "par"))
            results["one after another (--jobs 1)"].append(bake(base, everything, 1, "seq"))
            results[f"slowest repo alone ({slowest})"].append(bake(base, single, 1, "one"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"bake of {args.repos} repos (builds {', '.join(f'{s:.1f}s' for s in builds.values())}), "
          f"{args.rounds} rounds, median")
    for name, values in results.items():
        print(f"  {name:<32} {median(values):6.2f}s   runs: {', '.join(f'{v:.2f}' for v in values)}")
    par = median(results["parallel (--jobs N)"])
    print(f"  parallel / slowest alone         {par / median(results[f'slowest repo alone ({slowest})']):6.2f}x"
          "   (goal <= 1.3x)")
    print(f"  parallel / one after another     {par / median(results['one after another (--jobs 1)']):6.2f}x")


if __name__ == "__main__":
    main()
