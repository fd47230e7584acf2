"""An IMDSv2 emulator on 127.0.0.1, strict about the rules the agent must follow.

Real IMDS with ``HttpTokens=required`` is what the unified image runs with, so the
emulator refuses everything the real one refuses, with the same status codes:

* ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds``, an integer in
  1..21600 (else 400), and is refused with 403 when it carries ``X-Forwarded-For`` (AWS
  does this so a proxy on the instance cannot fetch tokens for others). The answer is a
  random token, echoed TTL header included.
* Every ``GET`` needs ``X-aws-ec2-metadata-token`` with a known, unexpired token, else 401
  (so an IMDSv1 request, without a token, is 401). ``GET /latest/api/token`` is 405.
* Paths: ``meta-data/`` (listing), ``instance-id``, ``instance-type``, ``ami-id``,
  ``local-ipv4``, ``local-hostname``, ``placement/region``, ``placement/availability-zone``,
  ``tags/instance`` (keys, one a line) and ``tags/instance/<key>`` when tags are on,
  ``spot/instance-action`` and ``spot/termination-time`` once a spot notice is set,
  ``autoscaling/target-lifecycle-state`` for instances in a group, and
  ``dynamic/instance-identity/document``. Anything else is 404. Directories list their
  entries, sub-directories with a trailing ``/``, like the real service.
* Tag keys IMDS cannot serve (outside ``[0-9a-zA-Z-_+=,.@:]``, or ``.``/``..``) are left
  out of the tag paths; AWS refuses to enable metadata tags on such an instance, and the
  agent then has to fall back to ``ec2:DescribeTags``.

The instance comes either from explicit values (:class:`InstanceIdentity`) or, with
:meth:`ImdsEmulator.from_moto`, from a moto instance read through boto3 on every request,
so tag changes made in moto show up at once (or read once, with ``live=False``). moto's own ``MetadataOptions`` are not
consulted for tags (moto does not carry a launch template's options onto ASG
instances); ``tags_enabled`` is the switch.

Faults (``fail_for``, ``hang_for``, ``trickle_for``, ``oversize``) and the request log
(``requests``) let tests prove retry, timeout, deadline, size-cap and token-reuse
behaviour. ``trickle_for`` sends whole answers (status line, headers, body) a byte at
a time, the fault a per-read socket timeout never notices; ``oversize`` streams a huge
body for one path without ever holding it in memory. Tokens are never logged or recorded: a request
records only whether it carried one.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Union
from urllib.parse import unquote, urlsplit

from .moto_server import ACCOUNT_ID, DEFAULT_IMAGE_ID, REGION, MotoServer

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
_TAG_KEY = re.compile(r"^[0-9a-zA-Z\-_+=,.@:]+$")

# A directory of the metadata tree: names to leaves (text) or sub-directories.
Tree = dict[str, Union[str, "Tree"]]


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class InstanceIdentity:
    """What IMDS knows about the instance. Defaults match a seeded moto instance."""

    instance_id: str
    region: str = REGION
    availability_zone: str = f"{REGION}a"
    instance_type: str = "t3.micro"
    image_id: str = DEFAULT_IMAGE_ID
    account_id: str = ACCOUNT_ID
    private_ip: str = "10.0.1.4"
    tags: dict[str, str] = field(default_factory=dict)
    launch_time: str = field(default_factory=lambda: _utc(datetime.now(UTC)))

    @property
    def auto_scaling_group(self) -> str | None:
        return self.tags.get("aws:autoscaling:groupName")

    def document(self) -> dict[str, Any]:
        """The ``dynamic/instance-identity/document`` JSON, with the real field set."""
        return {
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": self.image_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "kernelId": None,
            "pendingTime": self.launch_time,
            "privateIp": self.private_ip,
            "ramdiskId": None,
            "region": self.region,
            "version": "2017-09-30",
        }


def read_moto_identity(ec2: Any, instance_id: str) -> InstanceIdentity:
    """Read an instance and its tags from moto (or AWS) with an EC2 boto3 client."""
    reservation = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    instance = reservation["Instances"][0]
    return InstanceIdentity(
        instance_id=instance_id,
        region=ec2.meta.region_name,
        availability_zone=instance["Placement"]["AvailabilityZone"],
        instance_type=instance["InstanceType"],
        image_id=instance["ImageId"],
        account_id=reservation.get("OwnerId", ACCOUNT_ID),
        private_ip=instance.get("PrivateIpAddress", "10.0.1.4"),
        tags={t["Key"]: t["Value"] for t in instance.get("Tags", [])},
        launch_time=_utc(instance["LaunchTime"]),
    )


class ImdsRequest(NamedTuple):
    """One request the emulator answered. ``had_token``: it carried a token header."""

    method: str
    path: str
    status: int
    had_token: bool


@dataclass
class _Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float | None = None   # bytes per second, when the answer is to be trickled
    oversize: int | None = None    # bytes of body to stream instead of ``body``


class ImdsEmulator:
    """IMDSv2 on ``127.0.0.1:<free port>``; a context manager (or ``start()``/``stop()``).

    ``identity`` is either fixed values or a zero-argument callable returning them. With
    ``live`` a callable is asked on every request (that is how :meth:`from_moto` shows tag
    changes at once); otherwise it is asked now and on :meth:`refresh`.
    ``lifecycle_state`` is what ``autoscaling/target-lifecycle-state`` answers; by default
    ``InService`` for an instance in an Auto Scaling group (tag ``aws:autoscaling:groupName``)
    and absent (404) otherwise, as on EC2.
    """

    def __init__(
        self,
        identity: InstanceIdentity | Callable[[], InstanceIdentity],
        *,
        live: bool = True,
        tags_enabled: bool = True,
        lifecycle_state: str | None = None,
    ) -> None:
        self._source: Callable[[], InstanceIdentity] = (
            identity if callable(identity) else lambda: identity
        )
        self._live = live
        self._snapshot = self._source()
        self.tags_enabled = tags_enabled
        self._lock = threading.Lock()
        if lifecycle_state is None and self._snapshot.auto_scaling_group:
            lifecycle_state = "InService"
        self._lifecycle_state = lifecycle_state
        self._spot_action: dict[str, str] | None = None
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._fail_until = 0.0
        self._fail_status = 500
        self._hang_until = 0.0
        self._trickle_until = 0.0
        self._trickle_rate = 1.0
        self._oversize: dict[str, int] = {}  # path under latest/ -> body bytes
        self._requests: list[ImdsRequest] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_moto(
        cls,
        server: MotoServer,
        instance_id: str,
        *,
        live: bool = True,
        tags_enabled: bool = True,
        lifecycle_state: str | None = None,
    ) -> ImdsEmulator:
        """Emulate IMDS for a moto instance, read through boto3 (see the class docstring).

        The harness's reads are marked internal, so they never appear in ``server.calls``
        and are never throttled by injected faults.
        """
        ec2 = server.client("ec2", internal=True)
        return cls(
            lambda: read_moto_identity(ec2, instance_id),
            live=live,
            tags_enabled=tags_enabled,
            lifecycle_state=lifecycle_state,
        )

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> ImdsEmulator:
        handler = type("ImdsHandler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="imds-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases requests held by hang_for
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> ImdsEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash), the IMDS base URL."""
        if self._server is None:
            raise RuntimeError("ImdsEmulator is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The variable botocore (and the agent) read to find IMDS."""
        return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": self.url}

    # state the tests drive -----------------------------------------------------------

    @property
    def identity(self) -> InstanceIdentity:
        """The instance as IMDS shows it right now."""
        return self._source() if self._live else self._snapshot

    def refresh(self) -> None:
        """Re-read the instance (only needed when not ``live``)."""
        self._snapshot = self._source()

    def set_spot_action(self, action: str = "terminate", in_seconds: float = 120) -> None:
        """Post a spot interruption notice for ``in_seconds`` from now (AWS gives 120)."""
        when = _utc(datetime.now(UTC) + timedelta(seconds=in_seconds))
        with self._lock:
            self._spot_action = {"action": action, "time": when}

    def clear_spot_action(self) -> None:
        with self._lock:
            self._spot_action = None

    def set_lifecycle_state(self, state: str | None) -> None:
        """Set ``autoscaling/target-lifecycle-state`` (e.g. ``Terminated``); None → 404."""
        with self._lock:
            self._lifecycle_state = state

    def fail_for(self, seconds: float, status: int = 500) -> None:
        """Answer every request with ``status`` for the next ``seconds``."""
        with self._lock:
            self._fail_until = time.monotonic() + seconds
            self._fail_status = status

    def hang_for(self, seconds: float) -> None:
        """Hold every request arriving in the next ``seconds`` until the window ends."""
        with self._lock:
            self._hang_until = time.monotonic() + seconds

    def trickle_for(self, seconds: float, bytes_per_second: float = 1.0) -> None:
        """Answer every request arriving in the next ``seconds`` at ``bytes_per_second``:
        status line, headers and body one byte at a time, each byte in time to reset a
        per-read timeout. An answer already trickling goes on after the window ends."""
        with self._lock:
            self._trickle_until = time.monotonic() + seconds
            self._trickle_rate = bytes_per_second

    def oversize(self, path: str, size: int) -> None:
        """Answer a valid ``GET /latest/<path>`` with ``size`` bytes of ``0`` (with their
        Content-Length), streamed in chunks: a 1 GiB instance id costs no memory here."""
        with self._lock:
            self._oversize[path.strip("/")] = size

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_until = self._hang_until = self._trickle_until = 0.0
            self._oversize.clear()

    def expire_tokens(self) -> None:
        """Forget every token, as after an instance stop/start: clients must fetch anew."""
        with self._lock:
            self._tokens.clear()

    @property
    def requests(self) -> list[ImdsRequest]:
        """Every request answered so far, in order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    # request handling (called from the HTTP handler threads) ---------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str]) -> _Reply:
        """Answer one request; the HTTP plumbing lives in :class:`_Handler`."""
        path = unquote(urlsplit(raw_path).path)
        self._wait_out_hang()
        with self._lock:
            now = time.monotonic()
            failing = now < self._fail_until
            fail_status = self._fail_status
            trickle = self._trickle_rate if now < self._trickle_until else None
            oversize = self._oversize.get(path.removeprefix("/latest/"))
        if failing:
            reply = _Reply(fail_status)
        elif method == "PUT":
            reply = self._put(path, headers)
        elif method == "GET":
            try:
                reply = self._get(path, headers)
            except Exception:  # e.g. moto unreachable: IMDS answers 500, it never hangs up
                reply = _Reply(500)
            if oversize is not None and reply.status == 200:
                reply = _Reply(200, oversize=oversize)
        else:
            reply = _Reply(405)
        reply.trickle = trickle
        with self._lock:
            self._requests.append(
                ImdsRequest(method, path, reply.status, headers.get(TOKEN_HEADER) is not None)
            )
        return reply

    def _wait_out_hang(self) -> None:
        with self._lock:
            remaining = self._hang_until - time.monotonic()
        if remaining > 0:
            self._stopping.wait(remaining)

    def _put(self, path: str, headers: Mapping[str, str]) -> _Reply:
        if path != TOKEN_PATH:
            return _Reply(405)
        if headers.get("X-Forwarded-For") is not None:
            return _Reply(403)
        ttl = headers.get(TTL_HEADER, "")
        if not (ttl.isascii() and ttl.isdigit()) or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
            return _Reply(400)
        token = secrets.token_urlsafe(42)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + int(ttl)
        return _Reply(200, token, {TTL_HEADER: ttl})

    def _token_valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._tokens.get(token) if token else None
            return expiry is not None and expiry > time.monotonic()

    def _get(self, path: str, headers: Mapping[str, str]) -> _Reply:
        if path == TOKEN_PATH:
            return _Reply(405)
        if not self._token_valid(headers.get(TOKEN_HEADER)):
            return _Reply(401)
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "latest":
            return _Reply(404)
        node: str | Tree = self._tree()
        for part in parts[1:]:
            if not isinstance(node, dict) or part not in node:
                return _Reply(404)
            node = node[part]
        if isinstance(node, dict):
            return _Reply(
                200, "\n".join(k + "/" if isinstance(v, dict) else k for k, v in node.items())
            )
        return _Reply(200, node)

    def _tree(self) -> Tree:
        """The metadata as it stands now (read live from moto when configured so)."""
        ident = self.identity
        hostname = f"ip-{ident.private_ip.replace('.', '-')}.ec2.internal"
        meta: Tree = {
            "ami-id": ident.image_id,
            "hostname": hostname,
            "instance-id": ident.instance_id,
            "instance-type": ident.instance_type,
            "local-hostname": hostname,
            "local-ipv4": ident.private_ip,
            "placement": {"availability-zone": ident.availability_zone, "region": ident.region},
        }
        with self._lock:
            spot, state = self._spot_action, self._lifecycle_state
        if state is not None:
            meta["autoscaling"] = {"target-lifecycle-state": state}
        if spot is not None:
            meta["spot"] = {"instance-action": json.dumps(spot), "termination-time": spot["time"]}
        if self.tags_enabled:
            meta["tags"] = {"instance": {k: v for k, v in ident.tags.items() if _servable(k)}}
        document = json.dumps(ident.document(), indent=2)
        return {"meta-data": meta, "dynamic": {"instance-identity": {"document": document}}}


def _servable(key: str) -> bool:
    return bool(_TAG_KEY.match(key)) and key not in (".", "..")


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing only; :meth:`ImdsEmulator.handle` decides every answer."""

    emulator: ImdsEmulator
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""
    # Headers and body go out in separate writes; with Nagle on, keep-alive clients wait
    # ~40 ms for a delayed ACK on every request. Real IMDS answers in about 1 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.emulator.handle(self.command, self.path, self.headers)  # type: ignore[arg-type]
        body = reply.body.encode("utf-8")
        try:
            if reply.trickle is not None:
                self._trickle(reply, body)
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(reply.oversize if reply.oversize is not None else len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if reply.oversize is not None:
                self._stream_zeros(reply.oversize)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (hang_for, trickle_for, oversize): exactly what the test
            # wanted; its connection is gone, so no next request is read from it
            self.close_connection = True

    def _trickle(self, reply: _Reply, body: bytes) -> None:
        """The whole answer, one byte every 1/rate seconds, until sent, the client hangs
        up, or the emulator stops."""
        head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                "Content-Type: text/plain", f"Content-Length: {len(body)}",
                *(f"{name}: {value}" for name, value in reply.headers.items())]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        pause = 1.0 / (reply.trickle or 1.0)
        for index in range(len(raw)):
            if self.emulator._stopping.wait(pause if index else 0.0):
                break
            self.wfile.write(raw[index:index + 1])
        self.close_connection = True

    def _stream_zeros(self, size: int) -> None:
        chunk = b"0" * 65536
        sent = 0
        while sent < size and not self.emulator._stopping.is_set():
            piece = chunk[:min(len(chunk), size - sent)]
            self.wfile.write(piece)
            sent += len(piece)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the access log: quiet tests, and nothing that could ever carry a token."""


__all__ = [
    "MAX_TOKEN_TTL",
    "TOKEN_HEADER",
    "TTL_HEADER",
    "ImdsEmulator",
    "ImdsRequest",
    "InstanceIdentity",
    "read_moto_identity",
]
