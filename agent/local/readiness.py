"""Is a program ready? One probe per readiness kind, and a bounded wait over many.

The kinds are generic, so that `agent status` can probe from the state file alone,
knowing nothing of databases: `http` (GET a path), `tcp` (send a line, expect a reply
prefix), `exec` (a command exits 0) and `running` (the process stayed up).

The HTTP probe uses http.client rather than requests on purpose: `agent status` runs it
on every call and must start fast, and a loopback GET needs nothing requests adds.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Callable

from agent.deadline import Backoff, Deadline, poll

# supervisord states after which waiting longer cannot help.
FAILED_STATES = frozenset({"FATAL", "STOPPED", "UNKNOWN"})  # EXITED: autorestart retries it
BACKOFF = Backoff(first=0.05, factor=1.5, cap=0.5)


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


def probe(readiness: Readiness, state: str, timeout: float = 2.0, up: float | None = None) -> Probe:
    """Probe once. `state` is supervisord's state name, `up` how long the process has
    been up (supervisord's own clock, from its process info)."""
    if state not in ("RUNNING", "STARTING"):
        return Probe(False, f"process is {state}")
    if readiness.kind == "running":
        # Up for startsecs is what RUNNING means; checking the clock directly saves the
        # up-to-a-second supervisord's event loop takes to notice.
        if state == "RUNNING" or (up is not None and up >= readiness.up_seconds):
            return Probe(True, "running")
        return Probe(False, "starting", retry_in=readiness.up_seconds - up if up is not None else None)
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
    callers that started the process themselves use their own clock)."""
    if info.get("statename") in ("RUNNING", "STARTING") and info.get("start"):
        return float(info["now"] - info["start"])
    return None


def wait(check: Callable[[], tuple[Probe, str]], deadline: Deadline) -> Probe:
    """Poll `check` (probe, supervisord state) until ready, a dead state, or `deadline`.
    Returns the last probe; the caller decides what a failure means."""
    result, state = poll(check, lambda answer: answer[0].ready or answer[1] in FAILED_STATES, deadline,
                         BACKOFF, hint=lambda answer: answer[0].retry_in)
    if result.ready:
        return result
    if state in FAILED_STATES:
        return Probe(False, f"process is {state}")
    return Probe(False, f"not ready in time: {result.detail}")
