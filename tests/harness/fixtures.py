"""pytest fixtures for the harness (``pytest_plugins = ["tests.harness.fixtures"]``).

* ``moto_server``: the session's :class:`MotoServer`, reset before each test (moto state,
  call log, injected faults, lifecycle records). One server per session because moto's
  state is process-wide anyway and its first EC2 request costs ~1 s (AMI catalogue).
* ``imds``: factory; ``imds(instance)`` starts an :class:`ImdsEmulator` for a moto instance
  (id or :class:`SeededInstance`) or for fixed :class:`InstanceIdentity` values, with
  ``ImdsEmulator`` keyword options, and stops it after the test.
* ``aws_env``: ``os.environ`` without any inherited ``AWS_*`` variable, plus what reaches
  the moto server; add ``imds.env()`` (or use :func:`subprocess_env`) for IMDS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from .imds import ImdsEmulator, InstanceIdentity
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
