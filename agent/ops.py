"""Operating a booted box: `agent status`, `agent restart`, `agent stop`.

Status answers from the state file and supervisord alone (plus loopback readiness
probes), never from AWS, so it stays well under a second. Restart and stop outside
review drain from the load balancers first (`agent.aws.membership.Drained`); the
modules that reach AWS are imported only then.

Status says what it knows, and exits 0 only when every program is running and ready
(3 otherwise). When supervisord does not answer it says why, in `supervisord` and
one line of `problem`: NOT ANSWERING (it holds its socket but said nothing within
`STATUS_TIMEOUT`, 3 s: stopped or hung; its pid), PERMISSION DENIED (the socket is its
owner's alone: run as that user), or NOT RUNNING, and then whether programs it started
still run unsupervised (killed supervisord: their pids, found from /proc by
`Supervisor.program_processes`, and their readiness probed). Without a state file it
still lists what supervisord, or nobody, runs under this root, instead of "not booted".
Those searches of /proc run only when supervisord did not answer: the usual path is one
XML-RPC call and the probes.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from agent.deadline import Deadline
from agent.errors import EXIT_NOT_READY, AgentError, BadInput
from agent.local import lock, readiness, release, state
from agent.local.layout import Layout
from agent.local.state import State
from agent.local.supervisor import RPC_ERRORS, NotAnswering, PermissionDenied, Supervisor

Say = Callable[[str], None]
STATUS_TIMEOUT = 3.0  # seconds supervisord gets to answer `agent status`


@dataclass
class ProgramStatus:
    name: str
    kind: str
    state: str
    pid: int | None
    uptime: float | None
    ready: bool
    detail: str


@dataclass
class Daemon:
    """What supervisord said, or why it said nothing (see the module docstring)."""

    state: str                                   # RUNNING, NOT RUNNING, NOT ANSWERING, PERMISSION DENIED
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)   # its process info, when it answered
    problem: str | None = None                   # one line, when it did not
    processes: dict[str, list[int]] = field(default_factory=dict)    # program -> live pids, when it did not
    unsupervised: bool = False                   # those processes are nobody's (supervisord is gone)


def ask(sup: Supervisor) -> Daemon:
    """One XML-RPC call; only when it fails, /proc is searched for the programs."""
    try:
        return Daemon("RUNNING", sup.processes())
    except PermissionDenied as exc:
        return Daemon("PERMISSION DENIED", problem=str(exc))
    except NotAnswering as exc:
        return Daemon("NOT ANSWERING", problem=str(exc), processes=sup.program_processes())
    except RPC_ERRORS:
        pass
    live = {} if sup.pid() is not None else sup.program_processes()  # alive but not listening: starting, stopping
    if not live:
        return Daemon("NOT RUNNING")
    listed = "; ".join(f"{name} (pid {', '.join(map(str, pids))})" for name, pids in live.items())
    return Daemon("NOT RUNNING", problem=f"supervisord is gone (killed or crashed), but programs it started still run "
                                         f"unsupervised: {listed}; `agent boot` takes them over, `agent stop` stops them",
                  processes=live, unsupervised=True)


def status(layout: Layout) -> tuple[dict[str, Any], int]:
    """The status report as data, and the exit code (0 all ready, 3 otherwise)."""
    current = state.load(layout)
    daemon = ask(Supervisor(layout, timeout=STATUS_TIMEOUT))
    if current is None:
        return _stateless(layout, daemon), EXIT_NOT_READY
    now = time.time()

    def one(record: state.ProgramRecord) -> ProgramStatus:
        if daemon.state != "RUNNING":
            return _unanswered(record.name, record.kind, daemon, record.readiness)
        info = daemon.infos.get(record.name, {})
        statename = info.get("statename", "UNKNOWN")
        probe = readiness.probe(record.readiness, statename, timeout=1.0, up=readiness.uptime(info))
        return ProgramStatus(record.name, record.kind, statename, info.get("pid") or None, _uptime(info, now),
                             probe.ready, probe.detail)

    with ThreadPoolExecutor(max_workers=max(1, len(current.programs))) as pool:
        programs = list(pool.map(one, current.programs))
    # ready implies up: a real probe may pass while supervisord still counts startsecs
    ok = daemon.state == "RUNNING" and all(p.ready and p.state in ("RUNNING", "STARTING") for p in programs)
    report = {
        "booted": True, "role": current.role.to_json() if current.role else None,
        **_daemon_json(daemon), "programs": [asdict(p) for p in programs], "steps": [asdict(s) for s in current.steps],
        "boot_seconds": current.boot_seconds, "booted_at": current.booted_at,
        "last_error": current.last_error, "registrations": [asdict(r) for r in current.registrations],
        "agent_version": current.agent_version,
        "config": {"path": current.config_path, "keys": current.config_keys} if current.config_path else {},
        "identity": asdict(current.identity) if current.identity else {},
        "manifest": _manifest(layout), "warnings": current.warnings,
    }
    return report, 0 if ok else EXIT_NOT_READY


def _unanswered(name: str, kind: str, daemon: Daemon, check: readiness.Readiness | None) -> ProgramStatus:
    """A program as far as /proc tells, supervisord having said nothing: its pid if it
    lives, and its readiness probed (from the state file) if it does."""
    pids = daemon.processes.get(name, [])
    if daemon.state == "NOT RUNNING" and not pids:
        return ProgramStatus(name, kind, "NOT RUNNING", None, None, False, "process is NOT RUNNING")
    if not pids:
        why = "cannot ask supervisord" if daemon.state == "PERMISSION DENIED" else "supervisord is not answering"
        return ProgramStatus(name, kind, "UNKNOWN", None, None, False, why)
    statename = "UNSUPERVISED" if daemon.unsupervised else "UNKNOWN"
    if check is None:
        return ProgramStatus(name, kind, statename, pids[0], None, False, "readiness unknown: no state file")
    probe = readiness.probe(check, "RUNNING", timeout=1.0)  # it runs: /proc says so
    return ProgramStatus(name, kind, statename, pids[0], None, probe.ready, probe.detail)


def _stateless(layout: Layout, daemon: Daemon) -> dict[str, Any]:
    """No state file: "not booted" only if nothing of this root runs either."""
    if daemon.state == "RUNNING":
        now = time.time()
        programs = [ProgramStatus(name, "unknown", info["statename"], info.get("pid") or None, _uptime(info, now),
                                  False, "readiness unknown: no state file")
                    for name, info in sorted(daemon.infos.items())]
        runs = f"{len(programs)} program{'s' if len(programs) != 1 else ''}" if programs else "no programs"
        error = (f"no state file at {layout.state_file}, but supervisord runs {runs}: the state was lost or "
                 "removed, so readiness is unknown; `agent boot` writes it again")
    else:
        programs = [_unanswered(name, "unknown", daemon, None) for name in daemon.processes]
        error = "not booted: run `agent boot`"
        if programs or daemon.problem:
            error = f"no state file at {layout.state_file}; `agent boot` writes it"
    return {"booted": False, "role": None, **_daemon_json(daemon), "programs": [asdict(p) for p in programs],
            "error": error, "manifest": _manifest(layout)}


def _uptime(info: dict[str, Any], now: float) -> float | None:
    return now - info["start"] if info.get("statename") == "RUNNING" and info.get("start") else None


def _daemon_json(daemon: Daemon) -> dict[str, Any]:
    return {"supervisord": daemon.state, "problem": daemon.problem}


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
        lines = [report.get("error", "not booted")]
        if report.get("problem"):
            lines.append(report["problem"])
        if report.get("programs"):
            lines += _program_lines(report["programs"])
        return "\n".join([*lines, *_image_line(report)])
    role = report["role"] or {"mode": "?"}
    who = role["mode"] + (f" ({role['service']})" if role.get("service") else "")
    lines = [f"role: {who}    supervisord: {report['supervisord']}"]
    if report.get("problem"):
        lines.append(report["problem"])
    lines += _program_lines(report["programs"])
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


def _program_lines(programs: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'PROGRAM':<24} {'STATE':<12} {'PID':>7} {'UPTIME':>9}  READY"]
    for p in programs:
        uptime = _duration(p["uptime"]) if p["uptime"] is not None else "-"
        ready = "yes" if p["ready"] else f"no ({p['detail']})"
        lines.append(f"{p['name']:<24} {p['state']:<12} {p['pid'] or '-':>7} {uptime:>9}  {ready}")
    return lines


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
    if not sup.running() and sup.pid() is None and not sup.orphans() and not release.leftovers(layout):
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
        if sup.pid() is not None:  # alive, but its socket is gone (removed under it)
            sup.terminate()
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
