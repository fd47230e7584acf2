"""What was applied, so `agent status` answers from local files without calling AWS.

The state file holds no secrets (no environment values), only names, readiness checks,
timings and what has been done (registrations, the completed launch hook, the events
`agent watch` acted on). It is read once per command into typed records and passed
down; `save` writes it atomically.

Releases are the exception: a release is recorded the moment it succeeds, in a file of
its own per service (`Layout.release_record`: its release key, written atomically), not
at the end of the boot with the rest, so that neither a crash right after it nor a lost
or corrupt state file runs it again. `State.releases` is only read, from state files an
older agent wrote, and such a record is moved into its own file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from agent.errors import AgentError
from agent.local import fs
from agent.local.layout import Layout
from agent.local.readiness import Readiness
from agent.role import Role

if TYPE_CHECKING:  # `agent status` reads the state and must not import the plan
    from agent.plan import Plan


class StateError(AgentError):
    """The state file exists but is not one the agent wrote."""


@dataclass(frozen=True)
class ProgramRecord:
    name: str
    kind: str                  # "service" or "database"
    port: int | None
    readiness: Readiness
    stop_seconds: int = 30
    start_seconds: int = 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgramRecord:
        return cls(str(data["name"]), str(data["kind"]), data.get("port"), Readiness.from_json(data["readiness"]),
                   int(data.get("stop_seconds", 30)), int(data.get("start_seconds", 1)))


@dataclass(frozen=True)
class RegistrationRecord:
    """Where this instance is registered: enough to deregister it without services.yaml."""

    kind: str                  # target_group or classic_elb (agent.aws.lb)
    name: str
    port: int
    instance_id: str
    region: str
    arn: str | None = None     # a target group's ARN, looked up once
    health_wait: float | None = None   # seconds a healthy target may take to show healthy

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegistrationRecord:
        wait = data.get("health_wait")
        return cls(str(data["kind"]), str(data["name"]), int(data["port"]), str(data["instance_id"]),
                   str(data["region"]), data.get("arn"), float(wait) if wait is not None else None)


@dataclass(frozen=True)
class IdentityRecord:
    instance_id: str
    region: str
    availability_zone: str
    group: str | None = None   # the Auto Scaling group, from aws:autoscaling:groupName

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdentityRecord:
        return cls(str(data["instance_id"]), str(data["region"]), str(data["availability_zone"]), data.get("group"))


@dataclass(frozen=True)
class StepRecord:
    name: str
    seconds: float


@dataclass
class State:
    role: Role | None = None
    programs: list[ProgramRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    releases: dict[str, str] = field(default_factory=dict)             # older agents' record: see release_done
    registrations: list[RegistrationRecord] = field(default_factory=list)
    identity: IdentityRecord | None = None
    hook_completed: str | None = None          # instance id whose launch hook is done
    config_path: str | None = None             # SSM path of the config vars
    config_keys: list[str] = field(default_factory=list)               # their names, never values
    handled_events: list[str] = field(default_factory=list)            # `agent watch`: each acted on once
    warnings: list[str] = field(default_factory=list)                  # the group's setup, found on the first boot
    booted_at: float | None = None
    boot_seconds: float | None = None
    last_error: str | None = None
    agent_version: str = ""

    def record_plan(self, plan: Plan) -> None:
        self.role = plan.role
        self.programs = [ProgramRecord(p.name, p.kind, p.port, p.readiness, p.stop_seconds, p.start_seconds)
                         for p in plan.programs]

    @property
    def services(self) -> list[str]:
        return [p.name for p in self.programs if p.kind == "service"]

    def program(self, name: str) -> ProgramRecord | None:
        return next((p for p in self.programs if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = self.role.to_json() if self.role else None
        return data

    @classmethod
    def from_json(cls, data: Any) -> State:
        """Raises KeyError, TypeError or ValueError for a shape the agent never wrote."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return cls(
            role=Role.from_json(data.get("role")),
            programs=[ProgramRecord.from_json(p) for p in data.get("programs", [])],
            steps=[StepRecord(str(s["name"]), float(s["seconds"])) for s in data.get("steps", [])],
            releases={str(k): str(v) for k, v in dict(data.get("releases", {})).items()},
            registrations=[RegistrationRecord.from_json(r) for r in data.get("registrations", [])],
            identity=IdentityRecord.from_json(data["identity"]) if data.get("identity") else None,
            hook_completed=data.get("hook_completed"),
            config_path=data.get("config_path"),
            config_keys=[str(k) for k in data.get("config_keys", [])],
            handled_events=[str(e) for e in data.get("handled_events", [])],
            warnings=[str(w) for w in data.get("warnings", [])],
            booted_at=data.get("booted_at"),
            boot_seconds=data.get("boot_seconds"),
            last_error=data.get("last_error"),
            agent_version=str(data.get("agent_version", "")),
        )


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
        raise StateError(f"{path}: cannot read the agent state ({exc}); fix or remove it, "
                         "then run `agent boot`") from None
    try:
        return State.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{path}: not an agent state file ({exc.__class__.__name__}: {exc}); "
                         "remove it, then run `agent boot`") from None


def load_or_set_aside(layout: Layout, say: Callable[[str], None]) -> State | None:
    """The state for a boot: a file that cannot be read is moved aside (kept for a look,
    never deleted) with a warning, and the boot starts from nothing known. What a boot
    must not redo lives apart from it (releases, in `Layout.releases_dir`)."""
    try:
        return load(layout)
    except StateError as exc:
        aside = layout.state_file.with_name(f"{layout.state_file.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        layout.state_file.replace(aside)
        say(f"warning: {exc.lines[0].split(';')[0]}; moved it to {aside} and booting from a fresh state")
        return None


def release_done(layout: Layout, service: str, key: str, legacy: State | None = None) -> bool:
    """Has the release `key` of `service` run to completion here? `legacy`: a state
    whose `releases` an older agent wrote; a match there is recorded in its own file."""
    try:
        if layout.release_record(service).read_text().strip() == key:
            return True
    except OSError:
        pass
    if legacy is not None and legacy.releases.get(service) == key:
        record_release(layout, service, key)
        return True
    return False


def record_release(layout: Layout, service: str, key: str) -> None:
    """Record, durably and at once, that the release `key` of `service` succeeded: the
    file is written atomically and synced, then so is the rename, so that not even a
    power cut right after it loses the record."""
    path = layout.release_record(service)
    fs.write(fs.FileSpec(path, key + "\n", 0o644))
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(layout: Layout, state: State) -> None:
    fs.write(fs.FileSpec(layout.state_file, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n", 0o644))


class Steps:
    """Times each boot step for `agent status` and the benchmarks."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self.started = time.monotonic()

    def __call__(self, name: str) -> "_Step":
        return _Step(self, name)

    def total(self) -> float:
        return time.monotonic() - self.started

    def record(self, name: str, seconds: float) -> None:
        self.steps.append(StepRecord(name, round(seconds, 3)))


class _Step:
    def __init__(self, steps: Steps, name: str):
        self.steps, self.name = steps, name

    def __enter__(self) -> "_Step":
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.steps.record(self.name, time.monotonic() - self.t0)
