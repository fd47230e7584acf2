"""Readiness without a health check, from supervisord's answers alone: a start is
followed process by process, and a crash loop is never ready (no processes here:
supervisord's answers are given as data)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from agent.deadline import Deadline
from agent.local import readiness
from agent.local.readiness import Asked, Readiness, Start

WORKER = Readiness("running", timeout=30.0, up_seconds=1.0)
WEB = Readiness("http", 1, "/health", timeout=30.0)


def info(state: str, pid: int = 0, start: int = 100, now: int = 100, spawnerr: str = "",
         exitstatus: int = 0) -> dict[str, Any]:
    return {"statename": state, "pid": pid, "start": start, "now": now, "spawnerr": spawnerr,
            "exitstatus": exitstatus}


def answers(*infos: dict[str, Any]) -> Any:
    """supervisord's getProcessInfo, answering each of `infos` in turn (the last for ever)."""
    it: Iterator[dict[str, Any]] = iter(infos)
    last = [infos[-1]]

    def next_info() -> dict[str, Any]:
        last[0] = next(it, last[0])
        return last[0]
    return next_info


def asked_now() -> Asked:
    return Asked.around(lambda: None)


def test_status_says_a_worker_is_ready_only_once_supervisord_says_running() -> None:
    # supervisord's whole seconds may say "up 1 s" after 0.1 s: STARTING is not ready
    assert not readiness.probe(WORKER, "STARTING", up=5.0).ready
    assert readiness.probe(WORKER, "RUNNING", up=0.0).ready
    for state in ("BACKOFF", "EXITED", "FATAL", "STOPPED"):
        assert not readiness.probe(WORKER, state, up=5.0).ready


def test_a_start_that_backs_off_has_failed_even_if_a_respawn_comes_up() -> None:
    start = Start(WORKER, answers(info("STARTING", 10), info("BACKOFF", spawnerr="Exited too quickly"),
                                  info("STARTING", 11), info("RUNNING", 11)), asked_now())
    result = readiness.wait(start.check, Deadline(5))
    assert not result.ready and result.failed
    assert "BACKOFF" in result.detail and "Exited too quickly" in result.detail


def test_a_new_pid_during_the_start_is_a_failure_not_a_reset() -> None:
    start = Start(WORKER, answers(info("STARTING", 10), info("STARTING", 11), info("RUNNING", 11)), asked_now())
    result = readiness.wait(start.check, Deadline(5))
    assert result.failed and "pid 10, then pid 11" in result.detail


def test_the_same_pid_running_is_ready() -> None:
    start = Start(WORKER, answers(info("STARTING", 10), info("STARTING", 10), info("RUNNING", 10)), asked_now())
    assert readiness.wait(start.check, Deadline(5)).ready


def test_a_health_check_is_followed_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "_http", lambda port, path, timeout: readiness.Probe(True, "GET / -> 200"))
    crashed = Start(WEB, answers(info("EXITED", exitstatus=3)), asked_now())
    result = readiness.wait(crashed.check, Deadline(5))
    assert result.failed and "exited with status 3" in result.detail
    assert readiness.wait(Start(WEB, answers(info("STARTING", 10)), asked_now()).check, Deadline(5)).ready


def test_a_first_look_after_a_second_must_be_our_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past supervisord's one-second backoff, the pid first seen could be a respawn: its
    start time in /proc must precede the answer to our start."""
    asked = Asked(at=0.0, answered=0.01, answered_boot=500.0)  # asked long ago (monotonic 0)
    monkeypatch.setattr(readiness.procs, "started_at", lambda pid: 501.0)  # spawned after: a respawn
    result = readiness.wait(Start(WORKER, answers(info("RUNNING", 11)), asked).check, Deadline(5))
    assert result.failed and "respawn" in result.detail
    monkeypatch.setattr(readiness.procs, "started_at", lambda pid: 499.99)
    assert readiness.wait(Start(WORKER, answers(info("RUNNING", 10)), asked).check, Deadline(5)).ready


def test_a_start_found_under_way_follows_the_pid_it_finds() -> None:
    start = Start(WORKER, answers(info("STARTING", 7), info("BACKOFF")), None)
    assert readiness.wait(start.check, Deadline(5)).failed
