"""Tests of the load-balancer stand-in: HAProxy mirroring moto's target group, under wrk.

The point of this harness is to let an agent test claim "no request was dropped". That
claim is only worth something if (1) taking a backend out the way the agent must
(deregister, wait until the target group has drained it, then stop it gracefully) really
gives zero failures here, and (2) doing it wrong gives failures. Both are proved below
with two tiny backends on loopback and real moto register/deregister calls.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.harness.fixtures import HaproxyFactory, LoadFactory, MirrorFactory
from tests.harness.haproxy import Haproxy, TargetGroupMirror, server_map
from tests.harness.load import LoadError, SocketErrors, parse_wrk_output, start_load
from tests.harness.moto_server import MotoServer, SeededInstance, seed_group

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.integration

DRAIN_DELAY = 1  # seconds: the target group's deregistration delay in these tests

# A backend like a well-behaved service: GET /slow?ms=N answers after N ms, /health at
# once. SIGTERM closes the listening socket, finishes the requests in flight, prints how
# many /slow requests it served and exits 0. One request per connection (HTTP/1.0), as HAProxy's
# http-server-close asks anyway.
BACKEND_CODE = r"""
import signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

served = 0
lock = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        url = urlsplit(self.path)
        if url.path == "/slow":
            time.sleep(min(int(parse_qs(url.query).get("ms", ["200"])[0]), 5000) / 1000)
        elif url.path != "/health":
            self.send_error(404)
            return
        body = b"ok\n"
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            return
        if url.path == "/slow":
            with lock:
                served += 1

    def log_message(self, *args):
        pass

ThreadingHTTPServer.request_queue_size = 1024  # the default backlog of 5 drops SYNs under load
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = False
server.block_on_close = True  # server_close() waits for requests in flight
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("listening", flush=True)
server.serve_forever(poll_interval=0.05)
server.server_close()
print(f"served {served}", flush=True)
"""


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (held together while chosen, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Backend:
    """One backend process on 127.0.0.1:port."""

    port: int
    process: subprocess.Popen[str]
    stopped_at: float | None = None

    def terminate(self, timeout: float = 10) -> int:
        """Graceful stop (SIGTERM): returns how many /slow requests it answered."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=timeout)
        self.stopped_at = time.monotonic()
        assert self.process.returncode == 0, out
        return int(out.split("served ")[-1])

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): requests in flight are cut, new connections refused."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.stopped_at = time.monotonic()


@pytest.fixture
def backends() -> Iterator[Callable[[int], list[Backend]]]:
    started: list[Backend] = []

    def make(count: int) -> list[Backend]:
        for port in free_ports(count):
            process = subprocess.Popen(
                [sys.executable, "-c", BACKEND_CODE, str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            started.append(Backend(port, process))
        fresh = started[-count:]
        deadline = time.monotonic() + 10
        for backend in fresh:
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{backend.port}/health", timeout=1
                    ):
                        break
                except OSError:
                    if time.monotonic() > deadline or backend.process.poll() is not None:
                        raise
                    time.sleep(0.05)
        return fresh

    yield make
    for backend in started:
        if backend.process.poll() is None:
            backend.process.kill()
        backend.process.communicate(timeout=10)


@dataclass
class Stack:
    """Two backends, two moto instances in one ASG and one target group, HAProxy, mirror."""

    moto: MotoServer
    instances: list[SeededInstance]
    backends: list[Backend]
    proxy: Haproxy
    mirror: TargetGroupMirror

    @property
    def arn(self) -> str:
        arn = self.instances[0].target_group_arn
        assert arn is not None
        return arn

    def target(self, i: int) -> dict[str, object]:
        return {"Id": self.instances[i].instance_id, "Port": self.backends[i].port}


@pytest.fixture
def stack(
    moto_server: MotoServer,
    backends: Callable[[int], list[Backend]],
    haproxy: HaproxyFactory,
    target_group_mirror: MirrorFactory,
) -> Stack:
    instances = seed_group(
        moto_server,
        size=2,
        tags={"unified:mode": "production", "unified:service": "web"},
        auto_scaling_group="asg-web",
        target_group="prod-web",
        deregistration_delay=DRAIN_DELAY,
    )
    a, b = backends(2)
    proxy = haproxy([("a", a.port), ("b", b.port)], initial_state="maint")
    elbv2 = moto_server.client("elbv2", internal=True)
    arn = instances[0].target_group_arn
    elbv2.register_targets(
        TargetGroupArn=arn,
        Targets=[{"Id": i.instance_id, "Port": be.port} for i, be in zip(instances, (a, b))],
    )
    mirror = target_group_mirror(
        arn,
        proxy,
        server_map([(instances[0], a.port, "a"), (instances[1], b.port, "b")]),
    )
    assert proxy.states() == {"a": "ready", "b": "ready"}
    return Stack(moto_server, instances, [a, b], proxy, mirror)


# --- the two claims ---------------------------------------------------------------------


def test_drain_then_graceful_stop_drops_nothing(stack: Stack, load: LoadFactory) -> None:
    """ready → drain → maint driven by moto, then a graceful stop: 0 failed requests."""
    elbv2 = stack.moto.client("elbv2")  # as the agent would: counted in moto's call log
    run = load(stack.proxy.url, 6, 8, "/slow?ms=200")
    time.sleep(1.5)  # both backends serve
    before = stack.proxy.counters()
    assert before["a"]["stot"] > 0 and before["b"]["stot"] > 0

    deregistered_at = time.monotonic()
    elbv2.deregister_targets(TargetGroupArn=stack.arn, Targets=[stack.target(0)])
    drain = stack.mirror.wait_for("a", "drain", timeout=2)
    left = stack.mirror.wait_for("a", "maint", timeout=DRAIN_DELAY + 3)
    sent_to_a = stack.proxy.counters()["a"]["stot"]
    served_by_a = stack.backends[0].terminate()
    assert run.running, "the load must still be running when the backend stops"
    result = run.result()
    print(result.summary())  # shown with -rP / -s

    assert result.failed == 0, result.summary() + "\n" + result.output
    assert result.requests >= 100, result.summary()  # 8 connections x 6 s / 0.2 s ≈ 240
    assert stack.mirror.states_of("a") == ["ready", "drain", "maint"]
    assert deregistered_at < drain.at < left.at < stack.backends[0].stopped_at  # type: ignore[operator]
    # moto kept it draining for the delay: gone can be seen only once the delay has
    # passed since the deregistration was sent (each transition is stamped after its read)
    assert left.at - deregistered_at >= DRAIN_DELAY
    assert served_by_a == sent_to_a > 0  # every request sent to a was answered by a
    after = stack.proxy.counters()
    assert after["a"]["stot"] == sent_to_a  # nothing more after it left
    assert after["b"]["stot"] > before["b"]["stot"]
    assert stack.mirror.errors == []
    assert stack.moto.call_count("DeregisterTargets") == 1
    assert stack.moto.call_count("DescribeTargetHealth") == 0  # the mirror is not counted


def test_control_killing_a_backend_in_service_fails_requests(
    stack: Stack, load: LoadFactory
) -> None:
    """The control: kill a backend HAProxy still sends traffic to → failed > 0."""
    run = load(stack.proxy.url, 3, 8, "/slow?ms=200")
    time.sleep(1.0)
    assert stack.proxy.states()["a"] == "ready"
    stack.backends[0].kill()
    result = run.result()
    print(result.summary())  # shown with -rP / -s
    assert result.failed > 0, result.summary()
    assert result.requests > result.failed  # b kept serving
    assert stack.proxy.counters()["a"]["econ"] > 0  # refused connections: HAProxy's 503s


def test_control_graceful_stop_without_draining_fails_requests(
    stack: Stack, load: LoadFactory
) -> None:
    """Even a graceful stop drops requests if the target was never drained first."""
    run = load(stack.proxy.url, 3, 8, "/slow?ms=200")
    time.sleep(1.0)
    stack.backends[0].terminate()
    result = run.result()
    print(result.summary())  # shown with -rP / -s
    assert result.failed > 0, result.summary()
    assert stack.mirror.states_of("a") == ["ready"]


# --- the parts, without load -----------------------------------------------------------


def test_mirror_follows_register_deregister_and_reregister(stack: Stack) -> None:
    elbv2 = stack.moto.client("elbv2", internal=True)
    elbv2.deregister_targets(TargetGroupArn=stack.arn, Targets=[stack.target(1)])
    stack.mirror.wait_for("b", "drain", timeout=2)
    assert stack.proxy.states() == {"a": "ready", "b": "drain"}
    elbv2.register_targets(TargetGroupArn=stack.arn, Targets=[stack.target(1)])  # back
    stack.mirror.wait_for("b", "ready", timeout=2)
    stack.mirror.wait_polls(3)
    assert stack.mirror.states_of("b") == ["ready", "drain", "ready"]
    assert [t.target_state for t in stack.mirror.transitions if t.server == "b"] == [
        "healthy",
        "draining",
        "healthy",
    ]
    stack.moto.end_draining(stack.arn)  # nothing draining: a no-op
    elbv2.deregister_targets(TargetGroupArn=stack.arn, Targets=[stack.target(0)])
    stack.mirror.wait_for("a", "drain", timeout=2)
    stack.moto.end_draining(stack.arn, stack.instances[0].instance_id)
    gone = stack.mirror.wait_for("a", "maint", timeout=2)
    assert gone.target_state == "unused"
    assert stack.proxy.states() == {"a": "maint", "b": "ready"}


def test_haproxy_states_and_a_request_to_a_stopped_server_fails(
    backends: Callable[[int], list[Backend]], haproxy: HaproxyFactory
) -> None:
    [live] = backends(1)
    [dead_port] = free_ports(1)  # nothing listens there
    proxy = haproxy([("live", live.port), ("dead", dead_port)])
    assert proxy.states() == {"live": "ready", "dead": "ready"}
    for state in ("drain", "maint", "ready"):
        proxy.set_state("dead", state)
        assert proxy.states()["dead"] == state
    proxy.set_state("live", "maint")
    statuses = set()
    for _ in range(3):  # only "dead" is eligible: retries 0 means the client sees it
        try:
            with urllib.request.urlopen(f"{proxy.url}/health", timeout=5) as reply:
                statuses.add(reply.status)
        except urllib.error.HTTPError as error:
            statuses.add(error.code)
    assert statuses == {503}
    proxy.set_state("live", "ready")
    proxy.set_state("dead", "maint")
    with urllib.request.urlopen(f"{proxy.url}/slow?ms=10", timeout=5) as reply:
        assert reply.status == 200

    # A request in flight survives drain then maint: HAProxy cuts no session for that.
    answers: list[int] = []

    def slow_request() -> None:
        with urllib.request.urlopen(f"{proxy.url}/slow?ms=400", timeout=5) as reply:
            answers.append(reply.status)

    request = threading.Thread(target=slow_request)
    request.start()
    deadline = time.monotonic() + 2
    while proxy.counters()["live"]["scur"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.set_state("live", "drain")
    proxy.set_state("live", "maint")
    request.join(timeout=5)
    assert answers == [200] and proxy.states()["live"] == "maint"


def test_wrk_output_is_parsed_and_cross_checked() -> None:
    text = """\
Running 3s test @ http://127.0.0.1:40000/slow?ms=200
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   150.10ms   80.00ms 210.00ms   70.00%
    Req/Sec    20.00      5.00    30.00     80.00%
  100 requests in 3.01s, 10.00KB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:     33.22
Transfer/sec:      3.32KB
HARNESS-WRK requests=100 responses=100 non_2xx=9 connect=1 read=2 write=0 timeout=3 \
status=7 p50_us=200000 p99_us=209000 max_us=210000 duration_us=3010000
"""
    result = parse_wrk_output(text)
    assert (result.requests, result.non_2xx, result.status_errors) == (100, 9, 7)
    assert result.socket_errors == SocketErrors(connect=1, read=2, write=0, timeout=3)
    assert result.failed == 9 + 6
    assert result.duration_s == pytest.approx(3.01)
    with pytest.raises(LoadError):  # the text says 101 requests: the parser must notice
        parse_wrk_output(text.replace("100 requests in", "101 requests in"))
    with pytest.raises(LoadError):
        parse_wrk_output(text.split("HARNESS-WRK")[0])


def test_load_refuses_anything_but_loopback() -> None:
    for url in ("http://localhost:80", "http://10.0.0.1:80", "https://127.0.0.1:443"):
        with pytest.raises(ValueError):
            start_load(url, 1, 1, "")
    with pytest.raises(ValueError):
        start_load("http://127.0.0.1:80", 1000, 1)
