"""Benchmark: `unified deploy` and `unified rollback` on the simulated fleet.

Side by side in one run, per round (a fresh environment in moto; 2 instances):

- **deploy against its floor.** The floor is what no deploy can avoid: the slowest new
  instance's boot-to-healthy (from moto launching it to its agent completing the launch
  hook, which it does once the target group sees it healthy) plus the verification
  probes (the same N requests, measured alone on the same route right after). The
  deploy's wall time is from the command's start to its exit. A simulated instance
  has no virtual machine to boot, so its service's start is all its boot: run with
  `--start-delay 0` (the bare test service, about 1.4 s) and with a start like a real
  application's (`--start-delay 10`: a stand-in for the VM's boot and the service's
  own start; EC2 takes tens of seconds for the first alone). The tool's fixed cost
  (deploy − floor) is printed too.
- **warm rollback**: from the command's start to (a) the switch (the weights moved, as
  the command reports) and (b) every answer through the ALB stand-in coming from the
  old version (so one mirror period, 50 ms, is included).
- **AWS calls per deploy** of one service, the tool's own (by User-Agent: the agents'
  calls are not counted).

    python benchmarks/deploy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from stack import REPO, median  # noqa: F401  (puts the repo on sys.path)

from agent.deadline import Deadline
from fleet import verify
from tests.conftest import make_stack_repo
from tests.harness.alb import AlbMirror
from tests.harness.deploy_env import ENV, DeployEnv, seed, services_yaml
from tests.harness.fleet import SimulatedFleet, bake_image
from tests.harness.moto_server import MotoServer


def bake(base: Path, start_delay: float = 0) -> tuple[Path, dict[str, Path], dict[str, str]]:
    repo = make_stack_repo(base)
    echo = repo / "testapps/echo.py"
    original = echo.read_text()
    roots, commits = {}, {}
    for label in ("v1", "v2"):
        if label == "v2":
            echo.write_text(original.replace('VERSION = "1"', 'VERSION = "2"'))
            subprocess.run(["git", "-C", str(repo), "commit", "-qam", label], check=True,
                           env={"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
                                "GIT_COMMITTER_EMAIL": "b@x", "PATH": "/usr/bin:/bin"})
        commits[label] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
        subprocess.run(["git", "-C", str(repo), "tag", label], check=True)
        roots[label] = bake_image(base / f"image-{label}", services_yaml(repo, label, start_delay=start_delay))
    return repo, roots, commits


def one_round(moto: MotoServer, repo: Path, roots: dict[str, Path], commits: dict[str, str],
              base: Path, start_delay: float) -> dict[str, float]:
    moto.reset()
    started: list[object] = []

    def fleet(images: dict[str, Path], **options: object) -> SimulatedFleet:
        simulated = SimulatedFleet(moto, images, **options).start()  # type: ignore[arg-type]
        started.append(simulated)
        return simulated

    def alb(listener: str, **options: object) -> AlbMirror:
        mirror = AlbMirror(moto, listener, **options).start()  # type: ignore[arg-type]
        started.append(mirror)
        return mirror

    prod: DeployEnv = seed(moto, roots, commits,
                           lambda subnets: services_yaml(repo, "main", subnets, start_delay=start_delay),
                           base / "services.yaml", fleet, alb)
    try:
        first = prod.unified("deploy", ENV, "--image", prod.images["v1"], "--probe-url", prod.alb.url)
        assert first.returncode == 0, first.stderr
        before = len(moto.requests)
        t0 = time.monotonic()
        second = prod.unified("deploy", ENV, "--image", prod.images["v2"], "--probe-url", prod.alb.url, "--json")
        wall = time.monotonic() - t0
        assert second.returncode == 0, second.stderr
        calls = sum(1 for r in moto.requests[before:] if "unified-deploy" in r.user_agent)
        release = json.loads(second.stdout)[0]["release"]
        new = [i for i in prod.fleet.instances().values() if i.group == release["group"]]
        boots = [i.happened("boot exited 0") - i.events[0][0] for i in new if i.happened("boot exited 0")]
        assert len(boots) == 2, [i.events for i in new]
        t1 = time.monotonic()  # the probes alone, as verify runs them: 5 in a row on the verify path
        verify.probe(prod.alb.url, ("/health",), 5, None, Deadline(30), lambda _: None, "echo")
        probes = time.monotonic() - t1

        # warm rollback: to the switch, and until every answer is v1
        seen_v1: list[float] = []
        rolled_at = time.monotonic()
        done = threading.Event()

        def watch_answers() -> None:
            streak = 0
            while not done.is_set() and time.monotonic() - rolled_at < 30:
                streak = streak + 1 if prod.get()[1].get("version") == "1" else 0
                if streak >= 20:
                    seen_v1.append(time.monotonic() - rolled_at)
                    return
        watcher = threading.Thread(target=watch_answers)
        watcher.start()
        rolled = prod.unified("rollback", ENV, "echo", "--probe-url", prod.alb.url, "--json")
        watcher.join(timeout=40)
        done.set()
        assert rolled.returncode == 0, rolled.stderr
        switch = json.loads(rolled.stdout)[0]["seconds_to_switch"]
        return {"deploy": wall, "floor": max(boots) + probes, "boot": max(boots), "probes": probes,
                "calls": float(calls), "rollback_switch": float(switch),
                "rollback_all_v1": seen_v1[0] if seen_v1 else float("nan")}
    finally:
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start-delay", type=float, default=0.0,
                        help="seconds the service takes to start in each instance (default 0)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="unified-bench-deploy-", dir="/tmp"))
    base.chmod(0o755)
    rows = []
    try:
        repo, roots, commits = bake(base, args.start_delay)
        with MotoServer() as moto:
            for n in range(args.rounds):
                round_dir = base / f"round{n}"
                round_dir.mkdir()
                rows.append(one_round(moto, repo, roots, commits, round_dir, args.start_delay))
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)

    def col(key: str) -> list[float]:
        return [r[key] for r in rows]

    print(f"unified on the simulated fleet (2 instances, service start {args.start_delay:g}s), "
          f"{args.rounds} rounds, medians")
    for key, label in (("deploy", "deploy v1 -> v2 (wall)"), ("boot", "slowest boot-to-healthy"),
                       ("probes", "verification probes alone"), ("floor", "floor (boot + probes)")):
        print(f"  {label:<30} {median(col(key)):6.2f}s   runs: {', '.join(f'{v:.2f}' for v in col(key))}")
    overhead = [r["deploy"] - r["floor"] for r in rows]
    print(f"  the tool's own cost (- floor)  {median(overhead):6.2f}s   runs: {', '.join(f'{v:.2f}' for v in overhead)}")
    ratio = [r["deploy"] / r["floor"] for r in rows]
    print(f"  deploy / floor                 {median(ratio):6.2f}x   (goal <= 1.2x) runs: "
          f"{', '.join(f'{v:.2f}' for v in ratio)}")
    print(f"  warm rollback, to the switch   {median(col('rollback_switch')):6.2f}s   runs: "
          f"{', '.join(f'{v:.2f}' for v in col('rollback_switch'))}")
    print(f"  warm rollback, all answers v1  {median(col('rollback_all_v1')):6.2f}s   (goal <= 2 s + one mirror "
          f"period, 0.05 s) runs: {', '.join(f'{v:.2f}' for v in col('rollback_all_v1'))}")
    print(f"  AWS calls per deploy (tool)    {median(col('calls')):6.0f}    runs: "
          f"{', '.join(f'{v:.0f}' for v in col('calls'))}")


if __name__ == "__main__":
    main()
