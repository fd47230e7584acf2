"""Benchmark: the agent's overhead on a production boot, and AWS API calls per boot.

Side by side in one run, interleaved: (a) `agent boot` (no --mode: identity from the
IMDSv2 emulator, tags, SSM, supervisord, readiness, target group registration, launch
hook) against (b) the service's own time to ready: the same command started directly
and polled on its health path. Overhead = (a) - (b). AWS calls are counted by the moto
server (a reboot is counted separately: it skips the completed hook).

    python benchmarks/production_boot.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stack import REPO, median

from tests.conftest import echo_service, free_ports, make_stack_repo, services_python
from tests.harness.fixtures import subprocess_env
from tests.harness.imds import ImdsEmulator
from tests.harness.moto_server import MotoServer, seed_instance


def services_yaml(repo: Path, port: int) -> str:
    lb = "    load_balancer:\n      production: {target_group: prod-echo}\n"
    return (f"version: 1\nrepos:\n  shop: {{url: {repo}, ref: main}}\nservices:\n"
            + echo_service("echo", port, extra=lb)
            + "environments:\n  production: {config_path: /unified/production}\n")


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{url} never answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="unified-bench-", dir="/tmp"))
    base.chmod(0o755)
    repo = make_stack_repo(base)
    port = free_ports(1)[0]
    services = base / "services.yaml"
    services.write_text(services_yaml(repo, port))
    boots, selfs, calls, reboot_calls = [], [], [], []
    with MotoServer() as moto:
        for _ in range(args.rounds):
            moto.reset()
            seeded = seed_instance(moto, tags={"unified:mode": "production", "unified:service": "echo"},
                                   target_group="prod-echo", auto_scaling_group="asg-echo")
            moto.client("ssm", internal=True).put_parameter(
                Name="/unified/production/echo/TOKEN", Value="x", Type="SecureString")
            # a snapshot, not live reads of moto: real IMDS answers in about a millisecond
            with ImdsEmulator.from_moto(moto, seeded.instance_id, live=False) as imds:
                env = {**subprocess_env(moto, imds), "PYTHONPATH": str(REPO)}
                root = base / f"root-{len(boots)}"
                agent = [sys.executable, "-m", "agent"]
                subprocess.run(agent + ["bake", "--root", str(root), "--services", str(services)],
                               check=True, capture_output=True, env=env)
                # (a) the agent's boot
                before = len(moto.calls)
                t0 = time.monotonic()
                subprocess.run(agent + ["boot", "--root", str(root), "--services", str(services)],
                               check=True, capture_output=True, env=env)
                boots.append(time.monotonic() - t0)
                calls.append(len(moto.calls) - before)
                before = len(moto.calls)
                subprocess.run(agent + ["boot", "--root", str(root), "--services", str(services)],
                               check=True, capture_output=True, env=env)
                reboot_calls.append(len(moto.calls) - before)
                subprocess.run(agent + ["stop", "--root", str(root), "--drain-timeout", "0"],
                               check=True, capture_output=True, env=env)
            # (b) the service alone: same command, same checkout, polled the same way
            t0 = time.monotonic()
            proc = subprocess.Popen([services_python(), "-m", "testapps.echo"], cwd=root / "srv/unified/repos/shop",
                                    env={"PATH": os.environ["PATH"], "PORT": str(port)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_http(f"http://127.0.0.1:{port}/health")
            selfs.append(time.monotonic() - t0)
            proc.terminate()
            proc.wait()
    shutil.rmtree(base, ignore_errors=True)
    overhead = median(boots) - median(selfs)
    print(f"production boot, {args.rounds} rounds, median (moto + IMDSv2 emulator on 127.0.0.1)")
    print(f"  agent boot            {median(boots):6.2f}s   runs: {', '.join(f'{v:.2f}' for v in boots)}")
    print(f"  service alone         {median(selfs):6.2f}s   runs: {', '.join(f'{v:.2f}' for v in selfs)}")
    print(f"  agent overhead        {overhead:6.2f}s   (goal <= 0.5s)")
    print(f"  AWS calls per boot    {max(calls):6d}    (goal <= 7; reboot: {max(reboot_calls)})")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
