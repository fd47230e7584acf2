"""Is a program ready? One probe per readiness kind, and a bounded wait over many.

The kinds are generic, so that `agent status` can probe from the state file alone,
knowing nothing of databases: `http` (GET a path), `tcp` (send a line, expect a reply
prefix), `exec` (a command exits 0) and `running` (the process stayed up).

`running` (a service without `health`) means the process stayed up, in supervisord's
own terms, for its start_seconds: supervisord says RUNNING, which it says only once
the process has lived past `startsecs`. Our own clock is never enough: a process that
crashes and is respawned is STARTING again and again, and a timer started when we
asked for the start would count the respawn as the same process staying up.

A start we ask for (`Start`, used by the boot and `agent restart`) is followed process
by process: the pid supervisord shows right after the start is the one that must reach
RUNNING (or pass its probe). BACKOFF, EXITED, FATAL or STOPPED before then, or another
pid, is a failure of that start, not a reason to wait on: supervisord's respawns are
for processes that crash after they started, not a way to pass a start. supervisord
waits at least a second (its backoff) before it respawns a process that died while
starting, so the first look, if it comes back within a second of asking, shows our
process or its death; a later first look checks the process's own start time in
/proc against the moment the start was asked for.

The HTTP probe uses http.client rather than requests on purpose: `agent status` runs it
on every call and must start fast, and a loopback GET needs nothing requests adds.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from agent.deadline import Backoff, Deadline, poll
from agent.local import procs

# supervisord states after which waiting longer cannot help.
FAILED_STATES = frozenset({"FATAL", "STOPPED", "UNKNOWN"})  # EXITED: autorestart retries it
# supervisord states in which a start we follow has failed (see the module docstring).
START_FAILED = frozenset({"BACKOFF", "EXITED", "FATAL", "STOPPED", "STOPPING", "UNKNOWN"})
UP_STATES = ("RUNNING", "STARTING")
RESPAWN_DELAY = 1.0   # supervisord's least backoff before it respawns a process that died starting
BACKOFF = Backoff(first=0.05, factor=1.5, cap=0.5)
LEAST_PAUSE = 0.02    # between looks once start_seconds are up: supervisord notices at its next event


@dataclass(frozen=True)
class Readiness:
    """How to tell a program is ready (see the module docstring for the kinds)."""

    kind: str
    port: int | None = None
    path: str | None = None                 # http
    timeout: float = 60.0                   # how long a start may take to become ready
    up_seconds: float = 0.0                 # running: how long the process must stay up
    argv: tuple[str, ...] = ()              # exec
    send: str = ""                          # tcp: the line sent
    expect: tuple[str, ...] = ()            # tcp: accepted reply prefixes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Readiness:
        return cls(kind=str(data["kind"]), port=data.get("port"), path=data.get("path"),
                   timeout=float(data.get("timeout", 60.0)), up_seconds=float(data.get("up_seconds", 0.0)),
                   argv=tuple(map(str, data.get("argv", ()))), send=str(data.get("send", "")),
                   expect=tuple(map(str, data.get("expect", ()))))


@dataclass(frozen=True)
class Probe:
    ready: bool
    detail: str
    retry_in: float | None = None  # when the answer is known to change (a start timer)
    failed: bool = False           # the start has failed: waiting longer cannot help


def probe(readiness: Readiness, state: str, timeout: float = 2.0, up: float | None = None) -> Probe:
    """Probe once. `state` is supervisord's state name, `up` how long the process has
    been up (only to say when to look again: see the module docstring)."""
    if state not in UP_STATES:
        return Probe(False, f"process is {state}")
    if readiness.kind == "running":
        if state == "RUNNING":  # up for startsecs, in supervisord's own terms
            return Probe(True, "running")
        wake = max(LEAST_PAUSE, readiness.up_seconds - up) if up is not None else None
        return Probe(False, f"starting (ready once up {readiness.up_seconds:g}s)", retry_in=wake)
    # A real probe (HTTP, a database's own check) proves readiness even while
    # supervisord still counts startsecs (STARTING).
    if readiness.kind == "http":
        return _http(readiness.port or 0, readiness.path or "/", timeout)
    if readiness.kind == "tcp":
        return _tcp(readiness.port or 0, readiness.send, readiness.expect, timeout)
    if readiness.kind == "exec":
        return _exec(readiness.argv, timeout)
    return Probe(False, f"unknown readiness kind {readiness.kind!r}")


def _http(port: int, path: str, timeout: float) -> Probe:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "unified-agent"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return Probe(False, f"GET {path} on port {port}: {exc.__class__.__name__}: {exc}")
    finally:
        conn.close()
    return Probe(200 <= status < 400, f"GET {path} -> {status}")


def _tcp(port: int, send: str, expect: tuple[str, ...], timeout: float) -> Probe:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(send.encode())
            reply = sock.recv(64)
    except OSError as exc:
        return Probe(False, f"port {port}: {exc}")
    ok = reply.startswith(tuple(e.encode() for e in expect))
    return Probe(ok, "answers" if ok else f"replied {reply[:40]!r}")


def _exec(argv: tuple[str, ...], timeout: float) -> Probe:
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout + 1, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"{argv[0] if argv else 'probe'}: {exc}")
    return Probe(result.returncode == 0, "accepting connections" if result.returncode == 0 else "not accepting yet")


def port_in_use(port: int) -> bool:
    """Something already accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def uptime(info: dict[str, Any]) -> float | None:
    """Seconds a process has been up, from supervisord's getProcessInfo (whole seconds:
    a hint of when to look again, never a proof of readiness)."""
    if info.get("statename") in ("RUNNING", "STARTING") and info.get("start"):
        return float(info["now"] - info["start"])
    return None


def wait(check: Callable[[], tuple[Probe, str]], deadline: Deadline) -> Probe:
    """Poll `check` (probe, supervisord state) until ready, failed, a dead state, or
    `deadline`. Returns the last probe; the caller decides what a failure means."""
    def done(answer: tuple[Probe, str]) -> bool:
        return answer[0].ready or answer[0].failed or answer[1] in FAILED_STATES

    result, state = poll(check, done, deadline, BACKOFF, hint=lambda answer: answer[0].retry_in)
    if result.ready or result.failed:
        return result
    if state in FAILED_STATES:
        return Probe(False, f"process is {state}")
    return Probe(False, f"not ready in time: {result.detail}")


@dataclass(frozen=True)
class Asked:
    """A start we asked supervisord for: when we asked, and when its answer came back
    (time.monotonic(); `answered_boot` on the /proc clock)."""

    at: float
    answered: float
    answered_boot: float

    @classmethod
    def around(cls, start: Callable[[], None]) -> Asked:
        """Call `start` (supervisord's startProcess) and note the times around it."""
        at = time.monotonic()
        start()
        return cls(at, time.monotonic(), procs.boottime())


class Start:
    """One start followed until the program is ready or the start has failed (the
    policy is in the module docstring). `asked`: the start we asked for; None when we
    found the program already starting (a second boot), whose pid we then follow."""

    def __init__(self, readiness: Readiness, info: Callable[[], dict[str, Any]], asked: Asked | None):
        self.readiness, self.info, self.asked = readiness, info, asked
        self.pid: int | None = None

    def check(self) -> tuple[Probe, str]:
        """Look once: (probe, supervisord state), for `wait`."""
        info = self.info()
        looked = time.monotonic()
        state, pid = str(info["statename"]), int(info.get("pid") or 0)
        if state in START_FAILED:
            return Probe(False, died(info), failed=True), state
        if self.pid is None:
            if not self._ours(pid, looked):
                return Probe(False, f"restarted during its start (pid {pid} is a respawn)", failed=True), state
            self.pid = pid
        elif pid != self.pid:
            return Probe(False, f"restarted during its start (pid {self.pid}, then pid {pid})", failed=True), state
        up = looked - self.asked.answered if self.asked is not None else uptime(info)
        return probe(self.readiness, state, up=up), state

    def _ours(self, pid: int, looked: float) -> bool:
        """Is `pid`, seen first, the process our start spawned (not a respawn of it)?"""
        if self.asked is None or looked - self.asked.at < RESPAWN_DELAY:
            return True
        began = procs.started_at(pid)
        # gone already: the next look shows how it ended
        return began is None or began <= self.asked.answered_boot + 1.0 / procs.TICKS


def died(info: dict[str, Any]) -> str:
    """How a start ended, in supervisord's words."""
    state = info.get("statename")
    if state == "EXITED":
        return f"exited with status {info.get('exitstatus')} during its start"
    if state in ("STOPPED", "STOPPING"):
        return f"was stopped during its start (process is {state})"
    why = info.get("spawnerr") or ""
    return f"exited during its start (process is {state}{': ' + why if why else ''})"
