"""IMDS answers are untrusted: the emulator serves hostile values, oversized answers and
trickled ones, and the client must refuse them on one line, cap what it reads, and
give up by its deadline. The emulator runs in this process on 127.0.0.1 (no moto)."""

from __future__ import annotations

import time
import tracemalloc
from typing import Callable, Iterator

import pytest

from agent.aws.imds import Imds, ImdsError
from agent.errors import EXIT_BAD_INPUT, AgentError
from tests.harness.imds import ImdsEmulator, InstanceIdentity

MAX_ANSWER = 64 * 1024  # bytes: the cap agent.aws.imds documents
GOOD_ID = "i-0123456789abcdef0"
TAGS = {"unified:mode": "production", "unified:service": "echo"}


Serve = Callable[..., ImdsEmulator]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Factory: an emulator for the given identity values, stopped after the test."""
    started: list[ImdsEmulator] = []

    def make(**values: object) -> ImdsEmulator:
        identity = InstanceIdentity(**{"instance_id": GOOD_ID, "tags": dict(TAGS), **values})  # type: ignore[arg-type]
        started.append(ImdsEmulator(identity).start())
        return started[-1]

    yield make
    for emulator in started:
        emulator.stop()


def refused(emulator: ImdsEmulator, deadline: float = 5.0) -> AgentError:
    with pytest.raises(AgentError) as caught:
        Imds(emulator.url, deadline=deadline, timeout=1.0).identity()
    return caught.value


def assert_one_line_bad_input(error: AgentError, *needles: str) -> None:
    text = str(error)
    assert error.exit_code == EXIT_BAD_INPUT and len(error.lines) == 1, error.lines
    assert "\n" not in text and "\x00" not in text, repr(text)
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("instance_id", [
    "i-0123456789abcdef0\x00\nevil",   # NUL and a newline: once registered with the target group as is
    "i-0123456789abcdef0\n",           # a near miss is still a miss: nothing is stripped
    " i-0123456789abcdef0",
    "i-0123456789ABCDEF0",             # AWS ids are lowercase
    "i-0123456789abcdef",              # 16 digits: neither 8 nor 17
    "i-0123456",
    "i-0123456789abcdeg0",
    "../../etc/passwd",
    "i-0123456789abcdef0; rm -rf /",
])
def test_a_hostile_instance_id_is_refused_on_one_line(serve: Serve, instance_id: str) -> None:
    error = refused(serve(instance_id=instance_id))
    assert_one_line_bad_input(error, "meta-data/instance-id", repr(instance_id)[1:20], "launch hook")


@pytest.mark.parametrize("region", [
    "us-east-1\n../../x",   # the one that printed two lines and a thread's traceback
    "US-EAST-1", "us-east-1 ", "useast1", "us-east-", "../x", "us-east-1\x00", "us_east_1", "us-east-1a",
])
def test_a_hostile_region_is_refused_on_one_line(serve: Serve, region: str) -> None:
    error = refused(serve(region=region, availability_zone="us-east-1a"))
    assert_one_line_bad_input(error, "meta-data/placement/region", repr(region)[1:12])


@pytest.mark.parametrize(("region", "zone"), [
    ("us-east-1", "us-west-2a"),        # another region's zone
    ("us-east-1", "us-east-1"),         # no zone letter
    ("us-east-1", "us-east-1ab"),
    ("us-east-1", "us-east-1a\n"),
    ("us-east-1", "us-east-1-"),
    ("us-east-1", "us-east-1-../x"),
    ("us-east-1", "us-east-1-a-b-c-d-e"),
])
def test_a_zone_that_is_not_of_its_region_is_refused(serve: Serve, region: str, zone: str) -> None:
    error = refused(serve(region=region, availability_zone=zone))
    assert_one_line_bad_input(error, "meta-data/placement/availability-zone", repr(zone)[1:10])


@pytest.mark.parametrize(("instance_id", "region", "zone"), [
    ("i-0123456789abcdef0", "us-east-1", "us-east-1a"),
    ("i-01234567", "eu-west-3", "eu-west-3c"),                       # the old 8-digit ids
    ("i-0123456789abcdef0", "us-gov-west-1", "us-gov-west-1a"),
    ("i-0123456789abcdef0", "cn-north-1", "cn-north-1b"),
    ("i-0123456789abcdef0", "ap-southeast-2", "ap-southeast-2a"),
    ("i-0123456789abcdef0", "us-isob-east-1", "us-isob-east-1a"),
    ("i-0123456789abcdef0", "eusc-de-east-1", "eusc-de-east-1a"),
    ("i-0123456789abcdef0", "us-west-2", "us-west-2-lax-1a"),       # a Local Zone
    ("i-0123456789abcdef0", "us-east-1", "us-east-1-wl1-bos-wlz-1"),  # a Wavelength Zone
])
def test_what_aws_sends_is_accepted(serve: Serve, instance_id: str, region: str, zone: str) -> None:
    emulator = serve(instance_id=instance_id, region=region, availability_zone=zone)
    identity = Imds(emulator.url, deadline=5.0).identity()
    assert (identity.instance_id, identity.region, identity.availability_zone) == (instance_id, region, zone)
    assert identity.tags == TAGS


def test_a_1_gib_instance_id_is_refused_after_reading_at_most_64_kib(serve: Serve) -> None:
    emulator = serve()
    emulator.oversize("meta-data/instance-id", 1 << 30)
    tracemalloc.start()
    started = time.monotonic()
    try:
        error = refused(emulator)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 4 * MAX_ANSWER, peak  # the cap, not the answer, bounds the memory
    assert_one_line_bad_input(error, "meta-data/instance-id", f"larger than {MAX_ANSWER} bytes")
    # refused at once, not retried: one GET of the instance id
    assert sum(r.path.endswith("instance-id") for r in emulator.requests) == 1


def test_a_tag_value_is_capped_at_64_kib_and_one_at_the_cap_is_read(serve: Serve) -> None:
    emulator = serve()
    emulator.oversize("meta-data/tags/instance/unified:service", MAX_ANSWER)
    assert Imds(emulator.url, deadline=5.0).identity().tags == {**TAGS, "unified:service": "0" * MAX_ANSWER}
    emulator.oversize("meta-data/tags/instance/unified:service", MAX_ANSWER + 1)
    assert_one_line_bad_input(refused(emulator), "meta-data/tags/instance/unified:service", "larger than")


def test_a_trickling_imds_cannot_stretch_the_identity_deadline(serve: Serve) -> None:
    """Every answer one byte a second: each try ends at its 1 s timeout, and identity()
    as a whole at its 3 s deadline, with the reason on one line."""
    emulator = serve()
    emulator.trickle_for(3600, bytes_per_second=2)
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        Imds(emulator.url, deadline=3.0, timeout=1.0).identity()
    elapsed = time.monotonic() - started
    assert 2.9 <= elapsed < 4.5, elapsed
    text = str(caught.value)
    assert "did not answer PUT latest/api/token within 3s" in text and "\n" not in text, text


def test_a_budget_bounds_several_requests_together(serve: Serve) -> None:
    """The watch's poll: a token, a notice and a lifecycle state within one budget."""
    emulator = serve()
    imds = Imds(emulator.url, deadline=10.0, timeout=5.0)
    imds.token()  # fetched while IMDS is healthy; the polls below reuse it
    emulator.trickle_for(3600, bytes_per_second=2)
    started = time.monotonic()
    with pytest.raises(ImdsError), imds.budget(1.5):
        imds.spot_action()
        imds.lifecycle_state()
    assert time.monotonic() - started < 2.5


def test_a_healthy_answer_after_a_trickled_one_is_read(serve: Serve) -> None:
    emulator = serve()
    emulator.trickle_for(0.5, bytes_per_second=2)
    assert Imds(emulator.url, deadline=10.0, timeout=1.0).identity().instance_id == GOOD_ID
