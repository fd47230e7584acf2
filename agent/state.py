"""What was applied, so `agent status` answers from local files without calling AWS.

The state file holds no secrets (no environment values), only names, readiness checks,
timings and what has been done once (releases, registrations).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from agent import fs
from agent.errors import AgentError
from agent.paths import Layout

if TYPE_CHECKING:  # `agent status` reads the state and must not import the plan
    from agent.plan import Plan


@dataclass
class State:
    role: dict[str, Any] = field(default_factory=dict)
    programs: list[dict[str, Any]] = field(default_factory=list)   # name, kind, readiness, port
    steps: list[dict[str, Any]] = field(default_factory=list)      # name, seconds
    releases: dict[str, str] = field(default_factory=dict)         # service -> release key done
    registrations: list[dict[str, Any]] = field(default_factory=list)  # agent.elb.Target fields
    identity: dict[str, Any] = field(default_factory=dict)         # instance id, region, zone, group
    hook_completed: str | None = None                              # instance id whose launch hook is done
    config: dict[str, Any] = field(default_factory=dict)           # SSM path and the keys (never values)
    handled_events: list[str] = field(default_factory=list)        # `agent watch`: each acted on once
    booted_at: float | None = None
    boot_seconds: float | None = None
    last_error: str | None = None
    pg: dict[str, Any] = field(default_factory=dict)               # pg_isready path, socket dir
    agent_version: str = ""

    def record_plan(self, plan: Plan) -> None:
        self.role = {"mode": plan.role.mode, "service": plan.role.service}
        self.programs = [
            {"name": p.name, "kind": p.kind, "port": p.port, "readiness": asdict(p.readiness),
             "stop_seconds": p.stop_seconds}
            for p in plan.programs
        ]


def load(layout: Layout) -> State | None:
    """The state, or None when nothing was ever booted here. A state file that exists
    but cannot be read is an error, not "not booted": stop and watch rely on it to
    know what to deregister."""
    path = layout.state_file
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AgentError(f"{path}: cannot read the agent state ({exc}); fix or remove it, "
                         "then run `agent boot`") from None
    if not isinstance(data, dict) or not all(isinstance(p, dict) and "name" in p and "readiness" in p
                                             for p in data.get("programs", [])):
        raise AgentError(f"{path}: not an agent state file; remove it, then run `agent boot`")
    known = {k: v for k, v in data.items() if k in State.__dataclass_fields__}
    return State(**known)


def save(layout: Layout, state: State) -> None:
    fs.write(fs.FileSpec(layout.state_file, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n", 0o644))


class Steps:
    """Times each boot step for `agent status` and the benchmarks."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def __call__(self, name: str) -> "_Step":
        return _Step(self, name)

    def total(self) -> float:
        return time.monotonic() - self.started


class _Step:
    def __init__(self, steps: Steps, name: str):
        self.steps, self.name = steps, name

    def __enter__(self) -> "_Step":
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.steps.steps.append({"name": self.name, "seconds": round(time.monotonic() - self.t0, 3)})


def secret(layout: Layout, name: str) -> str:
    """A generated secret of this box (database passwords, the environment digest key),
    kept 0600 under the state's secrets/ so reboots reuse it."""
    fs.ensure_dir(layout.secrets_dir, 0o700)
    path = layout.secrets_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_hex(16)
        fs.write(fs.FileSpec(path, value + "\n", 0o600))
        return value
