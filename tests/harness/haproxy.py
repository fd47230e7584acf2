"""HAProxy on 127.0.0.1 standing in for the load balancer, driven by moto's target group.

:class:`Haproxy` runs ``/usr/sbin/haproxy -f CFG -db`` (foreground, a child of the test)
with one HTTP frontend on a free loopback port and one backend, ``be``, with a server per
target. It is configured so that the test proves something:

* ``retries 0``: a request sent to a stopped server fails instead of being quietly
  retried elsewhere. HAProxy 2.6 answers 503 when the connection is refused; a request
  in flight when the server dies gets 502 on a fresh client connection, but on a reused
  keep-alive one (wrk's case) HAProxy just closes it, which wrk counts as a read error.
  ``option redispatch`` is set as asked, but with no retry it has nothing to act on.
* No health checks: nothing but the runtime API changes a server's state, so
  :class:`TargetGroupMirror` alone decides (as the ELB's view of the target group does).
* ``option http-server-close`` and ``http-reuse never``: one request per server-side
  connection, so each request is balanced on its own and a server that left holds no
  idle connection that a later request could be sent down. Clients keep their
  connections alive.
* Short ``timeout connect`` (500 ms), ``timeout server`` 30 s (slow requests finish).
* The runtime API on a unix socket at ``level admin`` (``set server``, ``show servers
  state``, ``show stat``).

Server states (HAProxy's words, which the ELB's map onto): ``ready`` takes new requests;
``drain`` takes no new request but lets those in flight finish (ELB ``draining``);
``maint`` takes nothing new either (ELB: not registered); in-flight requests still
finish, as HAProxy does not cut sessions on an administrative state change.

:class:`TargetGroupMirror` polls ``describe_target_health`` for every mapped target every
50 ms through the harness's internal boto3 client (so these calls are never in
``MotoServer.calls`` nor faulted) and applies: ``healthy`` → ``ready``, ``draining`` →
``drain``, anything else (``unused``, ``unavailable``, ``initial``, ``unhealthy``, a
target registered on another port) → ``maint``. Every change is kept with its
``time.monotonic()`` timestamp in :attr:`TargetGroupMirror.transitions`.
"""

from __future__ import annotations

import csv
import io
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .moto_server import MotoServer

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
STATES = ("ready", "drain", "maint")
BACKEND = "be"

# srv_admin_state bits (HAProxy's server.h): forced / inherited / config / resolution /
# hostname maintenance, and forced / inherited drain.
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_DRAIN_BITS = 0x08 | 0x10


class HaproxyError(RuntimeError):
    """HAProxy did not start, or the runtime API refused a command."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Haproxy:
    """HAProxy with servers ``[(name, port), ...]`` (all on 127.0.0.1), in that order.

    ``initial_state`` is every server's state at start ("ready" or "maint"); a
    :class:`TargetGroupMirror` sets the real ones on entry anyway.
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        initial_state: str = "ready",
        timeout_server_s: float = 30.0,
        start_timeout_s: float = 10.0,
    ) -> None:
        if not servers:
            raise ValueError("at least one server")
        names = [name for name, _ in servers]
        if len(set(names)) != len(names) or not all(
            n.replace("-", "").replace("_", "").isalnum() for n in names
        ):
            raise ValueError(f"server names must be distinct and plain: {names}")
        if initial_state not in ("ready", "maint"):
            raise ValueError("initial_state is 'ready' or 'maint'")
        self.servers = [(name, int(port)) for name, port in servers]
        self.initial_state = initial_state
        self.timeout_server_s = timeout_server_s
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._api_lock = threading.Lock()

    # lifecycle -----------------------------------------------------------------------

    def config(self) -> str:
        """The configuration text (also written to ``<dir>/haproxy.cfg``)."""
        assert self._dir is not None and self.port is not None
        # No ``disabled`` keyword for initial_state="maint": HAProxy 2.6 marks such a
        # server in *config* maintenance, which ``set server ... state ready`` does not
        # lift. start() puts the servers in forced maintenance through the API instead.
        server_lines = "\n".join(
            f"    server {name} 127.0.0.1:{port}" for name, port in self.servers
        )
        return f"""\
global
    stats socket {self.socket_path} level admin mode 600
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    timeout connect 500ms
    timeout client 30s
    timeout server {int(self.timeout_server_s * 1000)}ms
    timeout http-request 10s
    timeout http-keep-alive 10s
    retries 0
    option redispatch
    option http-server-close
    http-reuse never
    balance roundrobin

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend {BACKEND}

backend {BACKEND}
{server_lines}
"""

    def start(self) -> Haproxy:
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self._dir = Path(tempfile.mkdtemp(prefix="unified-haproxy-"))
            self.port = _free_port()
            cfg = self._dir / "haproxy.cfg"
            cfg.write_text(self.config())
            check = subprocess.run(
                [HAPROXY, "-c", "-q", "-f", str(cfg)],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if check.returncode != 0:
                raise HaproxyError(f"haproxy refused its config:\n{check.stderr}\n{self.config()}")
            with open(self._dir / "haproxy.log", "wb") as log:
                self._process = subprocess.Popen(
                    [HAPROXY, "-f", str(cfg), "-db"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                )
            try:
                self._wait_up()
                if self.initial_state == "maint":  # before anyone knows the URL
                    for name, _ in self.servers:
                        self.set_state(name, "maint")
                return self
            except HaproxyError as exc:
                last_error = str(exc)
                self.stop()
        raise HaproxyError(last_error)

    def _wait_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        assert self._process is not None and self.port is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HaproxyError(f"haproxy exited {self._process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                self.command("show info")
                return
            except OSError:
                time.sleep(0.05)
        raise HaproxyError(f"haproxy not up after {self.start_timeout_s}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM: hard stop; SIGKILL after 5 s) and remove its files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Haproxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # where it is ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash), the frontend."""
        if self._process is None or self.port is None:
            raise HaproxyError("haproxy is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "admin.sock"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log(self) -> str:
        """What HAProxy printed (warnings, alerts)."""
        if self._dir is None or not (self._dir / "haproxy.log").exists():
            return ""
        return (self._dir / "haproxy.log").read_text(errors="replace")

    # the runtime API -----------------------------------------------------------------

    def command(self, line: str, timeout: float = 5.0) -> str:
        """Send one runtime API command and return HAProxy's answer (text)."""
        if "\n" in line or ";" in line:
            raise ValueError("one command per call")
        chunks: list[bytes] = []
        with self._api_lock, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            while chunk := s.recv(65536):  # non-interactive mode: HAProxy closes after one
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def set_state(self, server: str, state: str) -> None:
        """``set server be/<server> state ready|drain|maint``."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        if server not in dict(self.servers):
            raise ValueError(f"no server {server!r}")
        answer = self.command(f"set server {BACKEND}/{server} state {state}").strip()
        if answer:
            raise HaproxyError(f"set server {server} state {state}: {answer}")

    def states(self, backend: str = BACKEND) -> dict[str, str]:
        """Each server's administrative state: "ready", "drain" or "maint".

        From ``show servers state <backend>``: a version line, a ``#`` header naming the
        columns, then one line per server; ``srv_admin_state`` is a bit field.
        """
        text = self.command(f"show servers state {backend}")
        lines = [line for line in text.splitlines() if line.strip()]
        header = next((line for line in lines if line.startswith("#")), None)
        if header is None:
            raise HaproxyError(f"unexpected 'show servers state' answer: {text!r}")
        columns = header.lstrip("# ").split()
        name_at, admin_at = columns.index("srv_name"), columns.index("srv_admin_state")
        found: dict[str, str] = {}
        for line in lines:
            if line.startswith("#") or len(line.split()) <= admin_at:
                continue
            fields = line.split()
            admin = int(fields[admin_at])
            found[fields[name_at]] = (
                "maint" if admin & _MAINT_BITS else "drain" if admin & _DRAIN_BITS else "ready"
            )
        return found

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-server counters from ``show stat`` (CSV): ``stot`` (connections sent to
        it), ``scur`` (in flight), ``hrsp_2xx`` ... ``hrsp_5xx``, ``eresp``, ``econ``."""
        text = self.command("show stat")
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        keep = ("stot", "scur", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "eresp", "econ",
                "cli_abrt", "srv_abrt", "ereq")
        return {
            row["svname"] if row.get("pxname") == BACKEND else f"{row['pxname']}/{row['svname']}":
                {k: int(row.get(k) or 0) for k in keep}
            for row in rows
            if row.get("pxname") in (BACKEND, "fe")
        }


# --------------------------------------------------------------------------------------
# The mirror
# --------------------------------------------------------------------------------------

ELB_TO_HAPROXY = {"healthy": "ready", "draining": "drain"}  # anything else: maint


@dataclass(frozen=True)
class Transition:
    """One state the mirror applied: when (``time.monotonic()``), to which server, what
    moto said (``target_state``, e.g. "draining"; "absent" if not reported at all)."""

    at: float
    server: str
    state: str
    target_state: str


class TargetGroupMirror:
    """A thread keeping HAProxy's server states equal to a moto target group's view.

    ``targets`` maps ``(instance_id, port)`` to the HAProxy server name. Entering the
    context syncs once (so HAProxy is right before the test goes on), then polls every
    ``interval`` seconds until the context exits. Poll errors (e.g. a fault the test
    injected on purpose is never seen: the client is internal) are kept in ``errors``.
    """

    def __init__(
        self,
        moto: MotoServer,
        target_group_arn: str,
        haproxy: Haproxy,
        targets: Mapping[tuple[str, int], str],
        *,
        interval: float = 0.05,
    ) -> None:
        if not targets:
            raise ValueError("at least one target")
        self.target_group_arn = target_group_arn
        self.haproxy = haproxy
        self.targets = {(i, int(p)): name for (i, p), name in targets.items()}
        self.interval = interval
        # Internal (unlogged, never faulted), with short timeouts and no retries: a slow
        # answer must not stall the mirror for long, the next poll comes 50 ms later.
        self._elbv2 = moto.client(
            "elbv2",
            internal=True,
            connect_timeout=1,
            read_timeout=5,
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._applied: dict[str, str] = {}
        self._transitions: list[Transition] = []
        self._errors: list[str] = []
        self._polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> TargetGroupMirror:
        with self._lock:
            self._applied = dict(self.haproxy.states())
        self.sync()  # errors here are raised: the mirror must work from the start
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="target-group-mirror", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> TargetGroupMirror:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception as exc:  # keep mirroring; the test can look at errors
                with self._lock:
                    if len(self._errors) < 100:
                        self._errors.append(f"{type(exc).__name__}: {exc}")

    # one round -----------------------------------------------------------------------

    def target_states(self) -> dict[str, str]:
        """Server name -> what moto says of its target now (ELB words, or "absent")."""
        answer = self._elbv2.describe_target_health(
            TargetGroupArn=self.target_group_arn,
            Targets=[{"Id": i, "Port": p} for i, p in self.targets],
        )
        seen: dict[str, str] = {name: "absent" for name in self.targets.values()}
        for description in answer.get("TargetHealthDescriptions", []):
            target = description["Target"]
            key = (target["Id"], int(target.get("Port") or 0))
            if key in self.targets:
                seen[self.targets[key]] = description["TargetHealth"]["State"]
        return seen

    def sync(self) -> None:
        """Read moto once and apply any change to HAProxy (recording it)."""
        for server, target_state in self.target_states().items():
            wanted = ELB_TO_HAPROXY.get(target_state, "maint")
            with self._lock:
                current = self._applied.get(server)
            if wanted == current:
                continue
            self.haproxy.set_state(server, wanted)
            with self._changed:
                self._applied[server] = wanted
                self._transitions.append(Transition(time.monotonic(), server, wanted, target_state))
                self._changed.notify_all()
        with self._changed:
            self._polls += 1
            self._changed.notify_all()

    # observations --------------------------------------------------------------------

    @property
    def transitions(self) -> list[Transition]:
        """Every state applied since start, in order (a snapshot)."""
        with self._lock:
            return list(self._transitions)

    def states_of(self, server: str) -> list[str]:
        """The states applied to ``server``, in order."""
        return [t.state for t in self.transitions if t.server == server]

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    @property
    def polls(self) -> int:
        with self._lock:
            return self._polls

    def wait_for(self, server: str, state: str, timeout: float = 10.0) -> Transition:
        """Block until the mirror has applied ``state`` to ``server``; return that change.

        Returns at once if it is already the applied state (with its latest transition).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._applied.get(server) == state:
                    matching = [t for t in self._transitions if t.server == server]
                    if matching and matching[-1].state == state:
                        return matching[-1]
                    return Transition(time.monotonic(), server, state, "initial")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{server} not {state!r} after {timeout}s "
                        f"(applied: {self._applied.get(server)}, errors: {self._errors[-3:]})"
                    )
                self._changed.wait(min(left, 0.5))

    def wait_polls(self, count: int = 2, timeout: float = 5.0) -> None:
        """Block until ``count`` more polls have completed (to be sure a change is seen)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._polls + count
            while self._polls < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the mirror did not poll {count} times in {timeout}s")
                self._changed.wait(min(left, 0.5))


def server_map(pairs: Iterable[tuple[Any, int, str]]) -> dict[tuple[str, int], str]:
    """``[(SeededInstance or instance id, port, server name), ...]`` → ``targets``."""
    return {(getattr(i, "instance_id", i), int(port)): name for i, port, name in pairs}


__all__ = [
    "BACKEND",
    "ELB_TO_HAPROXY",
    "HAPROXY",
    "STATES",
    "Haproxy",
    "HaproxyError",
    "TargetGroupMirror",
    "Transition",
    "server_map",
]
