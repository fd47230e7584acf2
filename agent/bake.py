"""`agent bake`: every repo of services.yaml at its ref under the root, built.

Runs inside the Packer build (and for `make review`). Repos bake in parallel on a
bounded pool; each repo's build output goes to its own log (`var/log/unified/bake/`;
git's errors go into the failure's message); a failing repo does not stop the others,
and all failures are reported at the end with the tail of their output. The manifest
records exactly which commits the image holds: the AMI's `unified:commit:<repo>` tags
are made from it (packer/scripts/tag-ami.sh), and the deploy tool reads those tags.

A bake is two steps, fetch (clone or fetch, check out the ref) and build; `agent bake
--steps fetch` or `--steps build` runs one of them (by default, both). The image build uses them apart: the build host, which holds the git
credentials, fetches into a staging root; its checkouts are copied into the image,
where the build step builds them without git touching the network. The manifest then
records each checkout's origin, the URL it was fetched from.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from agent import __version__
from agent.config.catalog import Catalog, Repo
from agent.errors import AgentError, BadInput
from agent.local import fs, git
from agent.local.layout import Layout

_print_lock = threading.Lock()

STEPS = ("fetch", "build")


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def bake(layout: Layout, catalog: Catalog, jobs: int = 4, steps: tuple[str, ...] = STEPS) -> dict[str, Any]:
    """Bake every repo; write and return the manifest, or raise naming every failure."""
    base = catalog.path.resolve().parent
    urls = {name: git.resolve_url(repo.url, base) for name, repo in catalog.repos.items()}
    if "fetch" not in steps:
        missing = [name for name in catalog.repos if not (layout.repo_dir(name) / ".git").is_dir()]
        if missing:
            raise BadInput(f"no checkout of {', '.join(missing)} under {layout.repos}: "
                           "--steps build builds what a fetch put there")
    log_dir = layout.logs / "bake"
    fs.ensure_dir(layout.repos, 0o755)
    fs.ensure_dir(log_dir, 0o755)
    # the old manifest would describe checkouts this bake is about to move
    layout.manifest.unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="bake") as pool:
        futures = {name: pool.submit(_bake_one, layout, repo, urls[name], steps)
                   for name, repo in catalog.repos.items()}
    failures = [(name, f.exception()) for name, f in futures.items() if f.exception() is not None]
    if failures:
        lines = [f"bake failed for {len(failures)} of {len(futures)} repos:"]
        for name, exc in failures:
            lines.append(f"{name}: {exc}")
        raise AgentError(lines[0] + " " + ", ".join(n for n, _ in failures), lines=lines)
    manifest = {
        "agent_version": __version__,
        "services_digest": catalog.digest,
        "baked_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "repos": [futures[name].result() for name in catalog.repos],
    }
    if "build" not in steps:  # fetched only: must not pass for a built image
        manifest["steps"] = list(steps)
    fs.write(fs.FileSpec(layout.manifest, json.dumps(manifest, indent=2) + "\n", 0o644))
    return manifest


def _bake_one(layout: Layout, repo: Repo, url: str, steps: tuple[str, ...] = STEPS) -> dict[str, Any]:
    dest = layout.repo_dir(repo.name)
    t0 = time.monotonic()
    if "fetch" in steps:
        how = git.clone_or_fetch(url, dest)
    else:  # no network: the checkout is there already, and records where it came from
        how, url = "found", git.origin_url(dest)
    sha = git.checkout(dest, repo.ref)
    say(f"{repo.name}: {how}, {repo.ref} at {sha[:12]} ({time.monotonic() - t0:.1f}s)")
    build_seconds = 0.0
    if repo.build and "build" in steps:
        log = layout.logs / "bake" / f"{repo.name}.log"
        t1 = time.monotonic()
        with open(log, "wb") as out:
            result = subprocess.run(["/bin/sh", "-c", repo.build], cwd=dest, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, check=False)
        build_seconds = round(time.monotonic() - t1, 3)
        if result.returncode != 0:
            raise AgentError(f"build exited {result.returncode} after {build_seconds:.1f}s\n"
                             f"--- last lines of {log} ---\n{fs.tail(log)}")
        say(f"{repo.name}: built in {build_seconds:.1f}s")
    return {"repo": repo.name, "url": url, "ref": repo.ref, "sha": sha, "build_seconds": build_seconds}
