"""The instance metadata service, IMDSv2 only: who this instance is, and its notices.

Retry policy (written down, like cloud-init's): connection errors, timeouts, 5xx and
429 (throttling) are retried with exponential backoff until a deadline; 401 means the token expired or was
revoked, so a new one is fetched once and the request repeated; 404 is an answer ("not
there": tags disabled, no spot notice) and is returned as None; any other 4xx fails at
once. Every failed try is logged with the URL, elapsed/deadline and the reason. The
token is never logged: it is a credential for the instance's role.

Deadlines: every deadline here is a total, not a per-read timeout, because an IMDS
that trickles its answer a byte a second never trips a per-read timeout. One try
(connect, request, status line, headers, body) must end within `timeout` (2 s); one
request with its retries within `deadline`; and a group of requests within the budget
of `Imds.budget`: `identity()` reads the instance id, region, zone and every tag within
one `deadline` (`agent boot --imds-deadline`, 60 s), and `agent watch` gives each poll
its own budget, so a poll ends in time for the next one. The socket under every try is
an `agent.deadline_socket.DeadlineSocket`, so SIGTERM (`agent.deadline.cancel`) ends a
try within 0.2 s.

Answers are untrusted and checked before use:

* Size: an answer body is capped at `MAX_ANSWER` (64 KiB; every metadata value the agent
  reads, the tag listing and each tag value included, is far smaller on EC2: a tag value
  is at most 256 characters). A longer answer (by its Content-Length, or by reading one
  byte past the cap) is refused at once, without retrying and without reading the
  rest: `ImdsAnswerRefused`, exit code 2 (the connection is closed, so a 1 GiB answer
  costs 64 KiB of memory).
* Shape: the instance id must be `i-` and 8 or 17 lowercase hex digits; the region a
  region code (`us-east-1`, `us-gov-west-1`, `cn-north-1`, `eu-isoe-west-1`: botocore's
  partition patterns); the zone the region and one letter (`us-east-1a`), or a Local
  Zone or Wavelength Zone name of that region (`us-west-2-lax-1a`,
  `us-east-1-wl1-bos-wlz-1`). Compared as IMDS sent them, nothing stripped. Anything
  else refuses the boot: `ImdsAnswerRefused`, one line with the value escaped.
* The session token must be printable ASCII without spaces (it goes back in a header).

A refused identity is refused before the launch hook is looked up: with an instance id
or region that cannot be trusted the agent cannot name its instance to Auto Scaling
reliably, so it completes nothing and the hook runs into its own timeout and default
result (the message says so). Tag keys that IMDS could not serve are skipped; tag
values are checked by `agent.role`.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlsplit

from agent.deadline import Backoff, Deadline, poll
from agent.deadline_socket import DeadlineSocket
from agent.errors import AgentError, BadInput

log = logging.getLogger("agent.imds")

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = 21600          # seconds; IMDS allows 1..21600
TOKEN_REFRESH_MARGIN = 60  # fetch a new token this long before the old one expires
# IMDS tag keys may only use these characters (AWS docs); anything else never appears.
TAG_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+=,.@:")
RETRY_BACKOFF = Backoff(first=0.1, factor=2.0, cap=5.0)
MAX_ANSWER = 64 * 1024     # bytes of one answer's body (see the module docstring)

INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
# botocore's partitions: aws (us-east-1), aws-us-gov (us-gov-west-1), aws-cn (cn-north-1),
# the ISO partitions (us-iso-east-1, us-isob-east-1, eu-isoe-west-1, us-isof-south-1)
# and the European Sovereign Cloud (eusc-de-east-1).
REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]{2,4})?-[a-z]{2,12}-[0-9]{1,2}")
# After the region: one letter (us-east-1a), or a Local Zone (-lax-1a) or Wavelength Zone
# (-wl1-bos-wlz-1) suffix: two to four hyphenated groups of lowercase letters and digits.
ZONE_SUFFIX = r"(?:[a-z]|(?:-[a-z0-9]{1,8}){2,4})"
TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    availability_zone: str
    tags: dict[str, str] | None = field(default=None)  # None: tags in metadata are off


class ImdsError(AgentError):
    """IMDS did not answer usefully before the deadline, or refused us."""


class ImdsAnswerRefused(BadInput):
    """IMDS answered something no EC2 metadata service sends (too big, wrong shape):
    untrusted input, refused with exit code 2."""


def show(value: str, limit: int = 60) -> str:
    """An untrusted value made safe to print on one line (escaped, cut at `limit`)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class _Connection(http.client.HTTPConnection):
    """http.client over a DeadlineSocket: the whole try ends by `until`."""

    def __init__(self, host: str, port: int, until: Deadline):
        super().__init__(host, port)
        self._until = until

    def connect(self) -> None:
        family, kind, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        sock = DeadlineSocket(family, kind, lambda: self._until)
        try:
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Imds:
    """A client of one metadata endpoint, holding (and renewing) one session token."""

    def __init__(self, endpoint: str | None = None, deadline: float = 60.0, timeout: float = 2.0):
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        self.base = base.rstrip("/")
        parts = urlsplit(self.base)
        if parts.scheme != "http" or not parts.hostname:
            raise BadInput(f"metadata endpoint {show(self.base)} (AWS_EC2_METADATA_SERVICE_ENDPOINT): "
                           "expected http://HOST[:PORT], like http://169.254.169.254")
        self._host, self._port = parts.hostname, parts.port or 80
        self.deadline = deadline
        self.timeout = timeout
        self._budget: Deadline | None = None
        self._token: str | None = None
        self._token_expires = 0.0

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Every request made inside ends, retries included, within `seconds` from now
        (or an enclosing budget's end, if sooner)."""
        outer = self._budget
        inner = Deadline(seconds)
        self._budget = inner if outer is None or inner.at < outer.at else outer
        try:
            yield
        finally:
            self._budget = outer

    # -- the retry policy ------------------------------------------------------------
    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request under the retry policy of the module docstring: the status and
        body of an answer that is not a 5xx or 429, or ImdsError once the deadline has
        passed."""
        url = f"{self.base}/{path.lstrip('/')}"
        seconds = self.deadline if self._budget is None else min(self.deadline, self._budget.remaining())
        deadline = Deadline(seconds)

        def attempt() -> tuple[tuple[int, bytes] | None, str]:
            try:
                status, body = self._exchange(method, path, headers, Deadline(min(self.timeout, deadline.remaining())))
                if status < 500 and status != 429:  # 429: IMDS throttling
                    return (status, body), ""
                reason = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                reason = _reason(exc)
            log.warning("IMDS %s %s failed after %.1fs/%.0fs: %s", method, url, deadline.elapsed(), seconds, reason)
            return None, reason

        answer, reason = poll(attempt, lambda result: result[0] is not None, deadline, RETRY_BACKOFF)
        if answer is None:
            raise ImdsError(f"instance metadata service at {self.base} did not answer {method} {path} "
                            f"within {seconds:.0f}s (last: {reason}); is this an EC2 instance "
                            "with the metadata endpoint enabled?")
        return answer

    def _exchange(self, method: str, path: str, headers: dict[str, str], until: Deadline) -> tuple[int, bytes]:
        """One try on a fresh connection, all of it within `until`; the body capped."""
        conn = _Connection(self._host, self._port, until)
        try:
            conn.request(method, "/" + path.lstrip("/"), headers=headers)
            response = conn.getresponse()
            return response.status, self._capped(response, method, path)
        finally:
            conn.close()

    def _capped(self, response: http.client.HTTPResponse, method: str, path: str) -> bytes:
        declared = response.getheader("Content-Length") or ""
        if declared.isdigit() and int(declared) > MAX_ANSWER:
            self._too_big(method, path, f"Content-Length {declared}")
        body = response.read(MAX_ANSWER + 1)
        if len(body) > MAX_ANSWER:
            self._too_big(method, path, "more than that sent")
        return body

    def _too_big(self, method: str, path: str, how: str) -> None:
        raise ImdsAnswerRefused(f"IMDS answer to {method} {self.base}/{path.lstrip('/')} is larger than "
                                f"{MAX_ANSWER} bytes ({how}); no metadata value is that big, so it is refused: "
                                "check what answers at this address (AWS_EC2_METADATA_SERVICE_ENDPOINT)")

    def token(self) -> str:
        if self._token is None or time.monotonic() > self._token_expires - TOKEN_REFRESH_MARGIN:
            status, body = self._request("PUT", "latest/api/token",
                                         {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)})
            if status != 200:
                raise ImdsError(f"IMDS refused a session token: HTTP {status} ({self.base}/latest/api/token)")
            token = body.decode("ascii", "replace").strip()
            if not TOKEN.fullmatch(token):  # never shown: it is a credential
                raise ImdsAnswerRefused(f"IMDS at {self.base} gave a session token that is not printable ASCII "
                                        f"({len(body)} bytes); refusing it")
            self._token = token
            self._token_expires = time.monotonic() + TOKEN_TTL
        return self._token

    def get(self, path: str) -> str | None:
        """The text at `latest/{path}`, or None when IMDS says 404 (not there)."""
        for attempt in (1, 2):
            status, body = self._request("GET", f"latest/{path}", {"X-aws-ec2-metadata-token": self.token()})
            if status == 200:
                return body.decode("utf-8", "replace")  # text/plain, no charset: UTF-8
            if status == 404:
                return None
            if status == 401 and attempt == 1:
                log.info("IMDS token rejected for %s; fetching a new one", path)
                self._token = None
                continue
            raise ImdsError(f"IMDS answered HTTP {status} for {self.base}/latest/{path}")
        raise ImdsError(f"IMDS kept rejecting fresh tokens for {self.base}/latest/{path}")

    # -- what the agent asks -----------------------------------------------------------
    def identity(self) -> Identity:
        """Instance id, region, zone and tags, all within one `deadline`, each checked
        (see the module docstring) before the next is asked for."""
        with self.budget(self.deadline):
            instance_id = self._checked("meta-data/instance-id", INSTANCE_ID,
                                        "an EC2 instance id: i- and 8 or 17 lowercase hex digits")
            region = self._checked("meta-data/placement/region", REGION,
                                   "a region code like us-east-1, us-gov-west-1 or cn-north-1")
            zone = self._checked("meta-data/placement/availability-zone",
                                 re.compile(re.escape(region) + ZONE_SUFFIX),
                                 f"a zone of {region}: {region}a, or a Local or Wavelength Zone like "
                                 f"{region}-lax-1a or {region}-wl1-bos-wlz-1")
            return Identity(instance_id, region, zone, self.tags())

    def tags(self) -> dict[str, str] | None:
        """Instance tags from metadata, or None when tags in metadata are disabled."""
        listing = self.get("meta-data/tags/instance")
        if listing is None:
            return None
        tags: dict[str, str] = {}
        for key in filter(None, (line.strip() for line in listing.splitlines())):
            if not set(key) <= TAG_KEY_CHARS:
                continue  # cannot be a real key, and must not become part of a URL
            value = self.get(f"meta-data/tags/instance/{key}")
            if value is not None:
                tags[key] = value
        return tags

    def spot_action(self) -> str | None:
        """The spot interruption notice (JSON text), or None when there is none."""
        return self.get("meta-data/spot/instance-action")

    def lifecycle_state(self) -> str | None:
        """The Auto Scaling target lifecycle state (e.g. InService, Terminated)."""
        value = self.get("meta-data/autoscaling/target-lifecycle-state")
        return value.strip() if value is not None else None

    def _checked(self, path: str, shape: re.Pattern[str], expected: str) -> str:
        value = self.get(path)
        if not value:
            raise ImdsError(f"IMDS has no {path} at {self.base}; cannot tell who this instance is")
        if not shape.fullmatch(value):
            raise ImdsAnswerRefused(f"IMDS {path} is {show(value)}, not {expected}; refusing to boot as it: "
                                    "nothing was started, and the launch hook is left to its timeout and "
                                    "default result (an instance that cannot name itself cannot complete it)")
        return value


def _reason(exc: BaseException) -> str:
    """Why a try failed, on one line (the class, and what it says if anything)."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
