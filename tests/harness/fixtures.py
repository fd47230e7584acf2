"""pytest fixtures for the harness (``pytest_plugins = ["tests.harness.fixtures"]``).

* ``moto_server``: the session's :class:`MotoServer`, reset before each test (moto state,
  call log, injected faults, lifecycle records). One server per session because moto's
  state is process-wide anyway and its first EC2 request costs ~1 s (AMI catalogue).
* ``imds``: factory; ``imds(instance)`` starts an :class:`ImdsEmulator` for a moto instance
  (id or :class:`SeededInstance`) or for fixed :class:`InstanceIdentity` values, with
  ``ImdsEmulator`` keyword options, and stops it after the test.
* ``aws_env``: ``os.environ`` without any inherited ``AWS_*`` variable, plus what reaches
  the moto server; add ``imds.env()`` (or use :func:`subprocess_env`) for IMDS.
* ``haproxy``: factory; ``haproxy([(name, port), ...])`` starts a :class:`Haproxy`.
* ``target_group_mirror``: factory; ``target_group_mirror(arn, proxy, {(id, port): name})``
  keeps HAProxy's server states equal to the moto target group's (see ``haproxy.py``).
* ``load``: factory; ``load(url, duration_s, connections, path)`` starts wrk
  (:func:`tests.harness.load.start_load`), stopped after the test if still running.
* ``alb_mirror``: factory; ``alb_mirror(listener_arn, **options)`` starts an
  :class:`AlbMirror` (HAProxy following one moto ALB listener: weights, header rules,
  target health), stopped after the test.
* ``fleet``: factory; ``fleet(images, services_yaml=None, **options)`` starts a
  :class:`SimulatedFleet` (a real agent on every instance moto's Auto Scaling
  launches); after the test it is stopped, and anything it left running fails the test.

Several instances behind one target group and one Auto Scaling group: seed them with
:func:`tests.harness.moto_server.seed_group` and give each ``imds(seeded)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from .alb import AlbMirror
from .haproxy import Haproxy, TargetGroupMirror
from .imds import ImdsEmulator, InstanceIdentity
from .load import LoadHandle, start_load
from .moto_server import MotoServer, SeededInstance


def subprocess_env(
    moto: MotoServer,
    imds: ImdsEmulator | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a subprocess that must see only the harness's AWS.

    Every inherited ``AWS_*`` variable is dropped (a profile, a session token or an
    ``AWS_ENDPOINT_URL_<SERVICE>`` would otherwise win over the test server), then the
    moto and IMDS variables are added. Loopback is appended to any ``NO_PROXY``.
    """
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
    no_proxy = [p for p in (base.get("NO_PROXY") or base.get("no_proxy") or "").split(",") if p]
    env.update(moto.env())
    if imds is not None:
        env.update(imds.env())
    merged = ",".join(dict.fromkeys([*no_proxy, *env["NO_PROXY"].split(",")]))
    env["NO_PROXY"] = env["no_proxy"] = merged
    return env


@pytest.fixture(scope="session")
def moto_server_session() -> Iterator[MotoServer]:
    """One moto server for the whole session; prefer ``moto_server``, which resets it."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_server(moto_server_session: MotoServer) -> MotoServer:
    """The session's moto server, wiped clean for this test."""
    moto_server_session.reset()
    return moto_server_session


ImdsFactory = Callable[..., ImdsEmulator]


@pytest.fixture
def imds(moto_server: MotoServer) -> Iterator[ImdsFactory]:
    """Factory: ``imds(instance_id | SeededInstance | InstanceIdentity, **options)``."""
    started: list[ImdsEmulator] = []

    def make(instance: str | SeededInstance | InstanceIdentity, **options: Any) -> ImdsEmulator:
        if isinstance(instance, InstanceIdentity):
            emulator = ImdsEmulator(instance, **options)
        else:
            instance_id = instance.instance_id if isinstance(instance, SeededInstance) else instance
            emulator = ImdsEmulator.from_moto(moto_server, instance_id, **options)
        started.append(emulator.start())
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer) -> dict[str, str]:
    """Environment for subprocesses that talk to the moto server (no IMDS variable)."""
    return subprocess_env(moto_server)


# --- load balancer stand-in and load ---------------------------------------------------

HaproxyFactory = Callable[..., Haproxy]
MirrorFactory = Callable[..., TargetGroupMirror]
LoadFactory = Callable[..., LoadHandle]


@pytest.fixture
def haproxy() -> Iterator[HaproxyFactory]:
    """Factory: ``haproxy([(name, port), ...], **options)`` starts a :class:`Haproxy` on
    127.0.0.1 (a child process), stopped after the test."""
    started: list[Haproxy] = []

    def make(servers: list[tuple[str, int]], **options: Any) -> Haproxy:
        proxy = Haproxy(servers, **options)
        started.append(proxy.start())
        return proxy

    yield make
    for proxy in reversed(started):
        proxy.stop()


@pytest.fixture
def target_group_mirror(
    moto_server: MotoServer, haproxy: HaproxyFactory
) -> Iterator[MirrorFactory]:
    """Factory: ``target_group_mirror(target_group_arn, haproxy, {(id, port): server})``
    starts a :class:`TargetGroupMirror` on the test's moto server (synced once before it
    returns), stopped after the test; it depends on ``haproxy`` so that it always stops
    before HAProxy does."""
    started: list[TargetGroupMirror] = []

    def make(
        target_group_arn: str,
        proxy: Haproxy,
        targets: Mapping[tuple[str, int], str],
        **options: Any,
    ) -> TargetGroupMirror:
        mirror = TargetGroupMirror(moto_server, target_group_arn, proxy, targets, **options)
        started.append(mirror.start())
        return mirror

    yield make
    for mirror in started:
        mirror.stop()


@pytest.fixture
def load() -> Iterator[LoadFactory]:
    """Factory with :func:`start_load`'s signature; any wrk still running after the test
    is stopped (SIGINT, then killed if it lingers)."""
    started: list[LoadHandle] = []

    def make(
        url: str, duration_s: int, connections: int, path: str = "/slow?ms=200", **options: Any
    ) -> LoadHandle:
        handle = start_load(url, duration_s, connections, path, **options)
        started.append(handle)
        return handle

    yield make
    for handle in started:
        handle.__exit__(None, None, None)


# --- the simulated fleet and its load balancer ------------------------------------------

AlbFactory = Callable[..., AlbMirror]
FleetFactory = Callable[..., Any]


@pytest.fixture
def alb_mirror(moto_server: MotoServer) -> Iterator[AlbFactory]:
    """Factory: ``alb_mirror(listener_arn, **options)`` starts an :class:`AlbMirror` on
    the test's moto server (synced once before it returns), stopped after the test."""
    started: list[AlbMirror] = []

    def make(listener_arn: str, **options: Any) -> AlbMirror:
        mirror = AlbMirror(moto_server, listener_arn, **options)
        started.append(mirror.start())
        return mirror

    yield make
    for mirror in reversed(started):
        mirror.stop()


@pytest.fixture
def fleet(moto_server: MotoServer) -> Iterator[FleetFactory]:
    """Factory: ``fleet(images, services_yaml=None, **options)`` starts a
    :class:`tests.harness.fleet.SimulatedFleet`; after the test every instance is shut
    down, and a process still running under the fleet's directory fails the test."""
    from .fleet import SimulatedFleet  # imports tests.conftest: only when used

    started: list[SimulatedFleet] = []

    def make(images: Mapping[str, Any], services_yaml: Any = None, **options: Any) -> SimulatedFleet:
        simulated = SimulatedFleet(moto_server, images, services_yaml, **options)
        started.append(simulated.start())
        return simulated

    yield make
    leftovers = [left for simulated in reversed(started) for left in simulated.stop()]
    assert leftovers == [], f"the fleet left processes running: {leftovers}"
