"""Benchmark: resident memory of `agent watch` while it polls (goal <= 40 MB), beside a
bare Python interpreter sleeping (the floor any Python daemon pays) in the same run.

The watch polls the IMDSv2 emulator every 0.25 s for 10 s (40 polls, token reused);
RSS is read from /proc/PID/status at the end (VmRSS) and at its peak (VmHWM).

    python benchmarks/watch_memory.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stack import REPO

from tests.harness.imds import ImdsEmulator, InstanceIdentity


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def main() -> None:
    identity = InstanceIdentity(instance_id="i-0123456789abcdef0", region="us-east-1",
                                availability_zone="us-east-1a", tags={"unified:mode": "production"})
    root = Path(tempfile.mkdtemp(prefix="unified-watch-bench-"))
    with ImdsEmulator(identity) as imds:
        env = {**os.environ, **imds.env(), "PYTHONPATH": str(REPO)}
        watch = subprocess.Popen([sys.executable, "-m", "agent", "watch", "--root", str(root), "--interval", "0.25"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        floor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(10)
        polls = sum(1 for r in imds.requests if "spot" in r.path)
        watch_rss, watch_peak = rss_kib(watch.pid)
        floor_rss, _ = rss_kib(floor.pid)
        tokens = sum(1 for r in imds.requests if r.method == "PUT")
        for proc in (watch, floor):
            proc.terminate()
            proc.wait()
    print(f"agent watch memory after {polls} polls in 10 s ({tokens} token request(s))")
    print(f"  agent watch RSS        {watch_rss / 1024:6.1f} MB   (peak {watch_peak / 1024:.1f} MB; goal <= 40 MB)")
    print(f"  bare python RSS        {floor_rss / 1024:6.1f} MB")
    print(f"  watch / bare python    {watch_rss / floor_rss:6.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
