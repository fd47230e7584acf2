"""Is a program ready? One probe per readiness kind, and a bounded wait over many.

The HTTP probe uses http.client rather than requests on purpose: `agent status` runs it
on every call and must start fast, and a loopback GET needs nothing requests adds.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable


# supervisord states after which waiting longer cannot help.
FAILED_STATES = frozenset({"FATAL", "STOPPED", "UNKNOWN"})  # EXITED: autorestart retries it
POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Readiness:
    """How to tell a program is ready: `http` (GET path), `postgres`, `redis` or `running`."""

    kind: str
    port: int | None = None
    path: str | None = None
    timeout: float = 60.0
    up_seconds: float = 0.0   # "running": how long the process must have stayed up


@dataclass(frozen=True)
class Probe:
    ready: bool
    detail: str
    retry_in: float | None = None  # when the answer is known to change (a start timer)


def probe(readiness: Readiness, state: str, pg_isready: str | None = None, pg_socket: str | None = None,
          timeout: float = 2.0, up: float | None = None) -> Probe:
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
    # A real probe (HTTP, PostgreSQL, Redis) proves readiness even while supervisord
    # still counts startsecs (STARTING).
    if readiness.kind == "http":
        return _http(readiness.port or 0, readiness.path or "/", timeout)
    if readiness.kind == "redis":
        return _redis(readiness.port or 0, timeout)
    if readiness.kind == "postgres":
        return _postgres(pg_isready or "pg_isready", pg_socket, readiness.port or 0, timeout)
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


def _redis(port: int, timeout: float) -> Probe:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return Probe(False, f"redis on port {port}: {exc}")
    # -NOAUTH means the server is up and enforcing its password: ready.
    ok = reply.startswith((b"+PONG", b"-NOAUTH"))
    return Probe(ok, "redis answers" if ok else f"redis replied {reply[:40]!r}")


def _postgres(pg_isready: str, sock_dir: str | None, port: int, timeout: float) -> Probe:
    host = sock_dir or "127.0.0.1"
    try:
        result = subprocess.run([pg_isready, "-q", "-h", host, "-p", str(port), "-t", str(max(1, int(timeout)))],
                                capture_output=True, timeout=timeout + 1, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"pg_isready: {exc}")
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


def wait(check: Callable[[], tuple[Probe, str]], deadline: float) -> Probe:
    """Poll `check` (probe, supervisord state) until ready, a dead state, or `deadline`
    (a time.monotonic() value). Returns the last probe; the caller decides what a
    failure means."""
    pause = POLL_SECONDS
    while True:
        result, state = check()
        if result.ready:
            return result
        if state in FAILED_STATES:
            return Probe(False, f"process is {state}")
        if time.monotonic() >= deadline:
            return Probe(False, f"not ready in time: {result.detail}")
        nap = min(pause, result.retry_in) if result.retry_in is not None else pause
        time.sleep(max(0.0, min(nap, deadline - time.monotonic())))
        pause = min(pause * 1.5, MAX_POLL_SECONDS)  # quick at first, gentle on slow starters
