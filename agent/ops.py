"""Operating a booted box: `agent status`, `agent restart`, `agent stop`.

Status answers from the state file and supervisord alone (plus loopback readiness
probes), never from AWS, so it stays well under a second. Restart and stop outside
review drain from the load balancers first (`agent.aws.membership.Drained`); the
modules that reach AWS are imported only then.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

from agent.deadline import Deadline
from agent.errors import EXIT_NOT_READY, AgentError, BadInput
from agent.local import lock, readiness, release, state
from agent.local.layout import Layout
from agent.local.state import State
from agent.local.supervisor import RPC_ERRORS, Supervisor

Say = Callable[[str], None]


@dataclass
class ProgramStatus:
    name: str
    kind: str
    state: str
    pid: int | None
    uptime: float | None
    ready: bool
    detail: str


def status(layout: Layout) -> tuple[dict[str, Any], int]:
    """The status report as data, and the exit code (0 all ready, 3 otherwise)."""
    current = state.load(layout)
    if current is None:
        return {"booted": False, "role": None, "programs": [], "error": "not booted: run `agent boot`",
                "manifest": _manifest(layout)}, EXIT_NOT_READY
    sup = Supervisor(layout)
    try:
        infos = sup.processes()
        supervisord = "RUNNING"
    except RPC_ERRORS:
        infos, supervisord = {}, "NOT RUNNING"
    now = time.time()

    def one(record: state.ProgramRecord) -> ProgramStatus:
        info = infos.get(record.name, {})
        statename = info.get("statename", "NOT RUNNING" if supervisord != "RUNNING" else "UNKNOWN")
        probe = readiness.probe(record.readiness, statename, timeout=1.0, up=readiness.uptime(info))
        pid = info.get("pid") or None
        uptime = now - info["start"] if statename == "RUNNING" and info.get("start") else None
        return ProgramStatus(record.name, record.kind, statename, pid, uptime, probe.ready, probe.detail)

    with ThreadPoolExecutor(max_workers=max(1, len(current.programs))) as pool:
        programs = list(pool.map(one, current.programs))
    # ready implies up: a real probe may pass while supervisord still counts startsecs
    ok = supervisord == "RUNNING" and all(p.ready and p.state in ("RUNNING", "STARTING") for p in programs)
    report = {
        "booted": True, "role": current.role.to_json() if current.role else None, "supervisord": supervisord,
        "programs": [asdict(p) for p in programs], "steps": [asdict(s) for s in current.steps],
        "boot_seconds": current.boot_seconds, "booted_at": current.booted_at,
        "last_error": current.last_error, "registrations": [asdict(r) for r in current.registrations],
        "agent_version": current.agent_version,
        "config": {"path": current.config_path, "keys": current.config_keys} if current.config_path else {},
        "identity": asdict(current.identity) if current.identity else {},
        "manifest": _manifest(layout), "warnings": current.warnings,
    }
    return report, 0 if ok else EXIT_NOT_READY


def _manifest(layout: Layout) -> dict[str, Any] | None:
    """What the image holds (written by `agent bake`), or None on an unbaked root."""
    try:
        data: dict[str, Any] = json.loads(layout.manifest.read_text())
        return data
    except (OSError, ValueError):
        return None


def format_status(report: dict[str, Any]) -> str:
    """The human table: one line per program, like `supervisorctl status`."""
    if not report.get("booted"):
        return "\n".join([report.get("error", "not booted"), *_image_line(report)])
    role = report["role"] or {"mode": "?"}
    who = role["mode"] + (f" ({role['service']})" if role.get("service") else "")
    lines = [f"role: {who}    supervisord: {report['supervisord']}"]
    lines.append(f"{'PROGRAM':<24} {'STATE':<12} {'PID':>7} {'UPTIME':>9}  READY")
    for p in report["programs"]:
        uptime = _duration(p["uptime"]) if p["uptime"] is not None else "-"
        ready = "yes" if p["ready"] else f"no ({p['detail']})"
        lines.append(f"{p['name']:<24} {p['state']:<12} {p['pid'] or '-':>7} {uptime:>9}  {ready}")
    if report.get("identity"):
        ident = report["identity"]
        lines.insert(1, f"instance: {ident.get('instance_id')} in {ident.get('availability_zone')}"
                        + (f", group {ident['group']}" if ident.get("group") else ""))
    for reg in report.get("registrations") or []:
        lines.append(f"registered: {reg['kind'].replace('_', ' ')} {reg['name']}, port {reg['port']}")
    if report.get("config"):
        lines.append(f"config vars from {report['config']['path']}: {', '.join(report['config']['keys'])}")
    lines += _image_line(report)
    if report.get("steps"):
        steps = ", ".join(f"{s['name']} {s['seconds']:.2f}s" for s in report["steps"])
        lines.append(f"last boot: {report['boot_seconds']:.2f}s ({steps})")
    if report.get("last_error"):
        lines.append(f"last error: {report['last_error']}")
    lines += [f"warning: {w}" for w in report.get("warnings") or []]
    return "\n".join(lines)


def _image_line(report: dict[str, Any]) -> list[str]:
    manifest = report.get("manifest")
    if not manifest:
        return []
    repos = ", ".join(f"{r['repo']}@{r['sha'][:12]} ({r['ref']})" for r in manifest.get("repos", []))
    return [f"image: baked {manifest.get('baked_at')}: {repos}"]


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- restart and stop ----------------------------------------------------------------

def restart(layout: Layout, names: list[str], drain_limit: float | None, wait: float, say: Say = print) -> None:
    """`agent restart`: the named programs (every service by default), each ready again
    before the next; outside review, out of the load balancers meanwhile."""
    with lock.exclusive(layout, "restart", wait=wait):
        current = state.load(layout)
        if current is None:
            raise AgentError(f"nothing is booted under {layout.root}: run `agent boot` first")
        targets = restart_targets(current, names)  # a typo must not take the box out of the load balancer
        with _drained(current.registrations, drain_limit, say, register_after=True):
            _restart_programs(layout, current, targets, say)


# Time kept back from a stop budget for what follows the drain besides the services'
# own stop timeouts: the databases, supervisord's exit, a margin. The one rule for
# how long a drain may take when time is short (systemd's TimeoutStopSec, a spot notice).
STOP_RESERVE = 10.0


def drain_cap(seconds_left: float, stop_seconds: float) -> float:
    """How long draining may take when `seconds_left` is all there is: the services'
    stop timeout and STOP_RESERVE come out of it first."""
    return max(0.0, seconds_left - stop_seconds - STOP_RESERVE)


def stop(layout: Layout, drain_limit: float | None, wait: float, say: Say = print, *,
         no_drain: bool = False, budget: float | None = None) -> None:
    """`agent stop`: out of the load balancers, then services, databases, supervisord.

    `budget`: seconds the whole stop may take (systemd's TimeoutStopSec, passed by the
    unit): waiting for the lock and the drain are cut to fit, and a drain cut short
    says so. A state file that cannot be read never blocks a stop: what runs is found
    from supervisord and the pid files, and the stop says it could not drain.
    """
    clock = Deadline(budget) if budget is not None else None
    lock_wait = min(wait, clock.remaining()) if clock is not None else wait
    with lock.exclusive(layout, "stop", wait=lock_wait):
        try:
            current = state.load(layout)
        except state.StateError as exc:
            say(f"warning: {exc.lines[0]}; stopping everything under {layout.root} without draining")
            current = None
        limit = drain_limit
        if clock is not None:
            stop_seconds = max((p.stop_seconds for p in current.programs), default=30) if current else 30
            cap = drain_cap(clock.remaining(), stop_seconds)
            limit = cap if limit is None else min(limit, cap)
        stop_locked(layout, current, limit, say, no_drain=no_drain)


def stop_locked(layout: Layout, current: State | None, drain_limit: float | None, say: Say,
                no_drain: bool = False) -> None:
    """Stop, for a caller that holds the agent lock (`agent watch`). Draining is for
    what still serves: with nothing running (a watch already stopped the box), there is
    nothing to drain and no delay to wait. A load balancer that cannot be reached stops
    nothing: `no_drain` (`agent stop --no-drain`) stops anyway, and says what it skipped."""
    sup = Supervisor(layout)
    if not sup.running() and not sup.orphans() and not release.leftovers(layout):
        return
    registrations = current.registrations if current else []
    if no_drain and registrations:
        for record in registrations:
            say(f"not deregistered from {record.kind.replace('_', ' ')} {record.name} (--no-drain): "
                "requests it still sends here will fail")
        registrations = []
    with ExitStack() as stack:
        try:
            stack.enter_context(_drained(registrations, drain_limit, say, register_after=False))
        except AgentError as exc:
            raise AgentError(f"stop: could not leave the load balancer ({exc.lines[0]}); nothing was stopped. "
                             "`agent stop --no-drain` stops this box without draining") from None
        stop_all(layout, current.services if current else [])


def _drained(registrations: list[state.RegistrationRecord], drain_limit: float | None, say: Say,
             register_after: bool) -> Any:
    if not registrations:
        return nullcontext()
    from agent.aws.lb import kinds  # boto3 only when there is a load balancer to leave
    from agent.aws.membership import Drained
    return Drained([kinds.for_record(r) for r in registrations], drain_limit, say, register_after)


def stop_all(layout: Layout, service_names: list[str]) -> None:
    """End a release still running (its agent killed: `agent.local.release`), then stop
    services (in parallel), then everything else, then supervisord."""
    release.end_leftovers(layout)  # before the databases it may be using stop
    sup = Supervisor(layout)
    if not sup.running():
        sup.reap_orphans()  # a dead supervisord's programs would otherwise keep running
        return
    names = set(sup.processes())
    services = [n for n in service_names if n in names]
    others = sorted(names - set(services))  # databases: after the services that use them
    for group in (services, others):
        with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
            list(pool.map(sup.stop, group))
    sup.shutdown()


def restart_targets(current: State, names: list[str]) -> list[str]:
    """The programs `agent restart NAMES` means (all services when none are named), or
    BadInput before anything is drained or stopped."""
    known = [p.name for p in current.programs]
    targets = names or current.services
    unknown = [n for n in targets if n not in known]
    if unknown:
        raise BadInput(f"restart: no program named {', '.join(map(repr, unknown))}; "
                       f"this box runs: {', '.join(known)}")
    return targets


def _restart_programs(layout: Layout, current: State, targets: list[str], say: Say) -> None:
    sup = Supervisor(layout)
    if not sup.running():
        raise AgentError(f"supervisord is not running under {layout.root}: run `agent boot` first")
    for name in targets:
        record = current.program(name)
        assert record is not None
        _restart_one(layout, sup, record, say)


def _restart_one(layout: Layout, sup: Supervisor, record: state.ProgramRecord, say: Say) -> None:
    """Stop, start, and follow that start until ready (`readiness.Start`): a program
    that crashes on start fails the restart, however often supervisord respawns it."""
    name = record.name
    deadline = Deadline(record.readiness.timeout)
    sup.stop(name)
    asked = readiness.Asked.around(lambda: sup.start(name))
    result = readiness.wait(readiness.Start(record.readiness, lambda: sup.info(name), asked).check, deadline)
    if not result.ready:
        raise AgentError(f"{name} did not become ready after restart: {result.detail}\n"
                         f"--- last lines of {layout.program_log(name)} ---\n{sup.log_tail(name)}")
    say(f"{name}: restarted, pid {sup.info(name)['pid']}, ready in {deadline.elapsed():.1f}s")
