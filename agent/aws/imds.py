"""The instance metadata service, IMDSv2 only: who this instance is, and its notices.

Retry policy (written down, like cloud-init's): connection errors, timeouts, 5xx and
429 (throttling) are retried with exponential backoff until a deadline; 401 means the token expired or was
revoked, so a new one is fetched once and the request repeated; 404 is an answer ("not
there": tags disabled, no spot notice) and is returned as None; any other 4xx fails at
once. Every failed try is logged with the URL, elapsed/deadline and the reason. The
token is never logged: it is a credential for the instance's role.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import requests

from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError

log = logging.getLogger("agent.imds")

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = 21600          # seconds; IMDS allows 1..21600
TOKEN_REFRESH_MARGIN = 60  # fetch a new token this long before the old one expires
# IMDS tag keys may only use these characters (AWS docs); anything else never appears.
TAG_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+=,.@:")
RETRY_BACKOFF = Backoff(first=0.1, factor=2.0, cap=5.0)


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    availability_zone: str
    tags: dict[str, str] | None = field(default=None)  # None: tags in metadata are off


class ImdsError(AgentError):
    """IMDS did not answer usefully before the deadline, or refused us."""


class Imds:
    """A client of one metadata endpoint, holding (and renewing) one session token."""

    def __init__(self, endpoint: str | None = None, deadline: float = 60.0, timeout: float = 2.0):
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        self.base = base.rstrip("/")
        self.deadline = deadline
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never send metadata requests through a proxy
        self._token: str | None = None
        self._token_expires = 0.0

    # -- the retry policy ------------------------------------------------------------
    def _request(self, method: str, path: str, headers: dict[str, str]) -> requests.Response:
        """One request under the retry policy of the module docstring: an answer that
        is not a 5xx or 429, or ImdsError once the deadline has passed."""
        url = f"{self.base}/{path.lstrip('/')}"
        deadline = Deadline(self.deadline)

        def attempt() -> tuple[requests.Response | None, str]:
            try:
                response = self.session.request(method, url, headers=headers, timeout=self.timeout)
                if response.status_code < 500 and response.status_code != 429:  # 429: IMDS throttling
                    return response, ""
                reason = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                reason = exc.__class__.__name__
            log.warning("IMDS %s %s failed after %.1fs/%.0fs: %s", method, url, deadline.elapsed(),
                        self.deadline, reason)
            return None, reason

        response, reason = poll(attempt, lambda answer: answer[0] is not None, deadline, RETRY_BACKOFF)
        if response is None:
            raise ImdsError(f"instance metadata service at {self.base} did not answer {method} {path} "
                            f"within {self.deadline:.0f}s (last: {reason}); is this an EC2 instance "
                            "with the metadata endpoint enabled?")
        return response

    def token(self) -> str:
        if self._token is None or time.monotonic() > self._token_expires - TOKEN_REFRESH_MARGIN:
            response = self._request("PUT", "latest/api/token",
                                     {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)})
            if response.status_code != 200:
                raise ImdsError(f"IMDS refused a session token: HTTP {response.status_code} "
                                f"({self.base}/latest/api/token)")
            self._token = response.content.decode("ascii", "replace").strip()
            self._token_expires = time.monotonic() + TOKEN_TTL
        return self._token

    def get(self, path: str) -> str | None:
        """The text at `latest/{path}`, or None when IMDS says 404 (not there)."""
        for attempt in (1, 2):
            response = self._request("GET", f"latest/{path}", {"X-aws-ec2-metadata-token": self.token()})
            if response.status_code == 200:
                return response.content.decode("utf-8", "replace")  # text/plain, no charset: UTF-8
            if response.status_code == 404:
                return None
            if response.status_code == 401 and attempt == 1:
                log.info("IMDS token rejected for %s; fetching a new one", path)
                self._token = None
                continue
            raise ImdsError(f"IMDS answered HTTP {response.status_code} for {self.base}/latest/{path}")
        raise ImdsError(f"IMDS kept rejecting fresh tokens for {self.base}/latest/{path}")

    # -- what the agent asks -----------------------------------------------------------
    def identity(self) -> Identity:
        instance_id = self._required("meta-data/instance-id")
        region = self._required("meta-data/placement/region")
        zone = self._required("meta-data/placement/availability-zone")
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

    def _required(self, path: str) -> str:
        value = self.get(path)
        if not value:
            raise ImdsError(f"IMDS has no {path} at {self.base}; cannot tell who this instance is")
        return value.strip()
