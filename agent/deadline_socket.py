"""A socket whose whole exchange has one deadline, for the calls to IMDS and supervisord.

A socket timeout bounds one read. An answer trickled a byte at a time (a sick metadata
service, a stopped supervisord that accepted the connection) resets it with every byte,
so a 2 s timeout can hold a caller for minutes. `DeadlineSocket` bounds the exchange
instead: connecting, sending and every receive wait only until the `Deadline` its owner
gives it, however the bytes arrive, and then raise `socket.timeout` (TimeoutError), which
every caller already treats as "no answer". Receives and sends wait in slices of at most
`SLICE` seconds and check `agent.deadline.cancel` between them, so SIGTERM ends an
exchange within a slice instead of after it. (AWS calls go through boto3, with its own
connect and read timeouts: `agent.aws.clients`; readiness probes use plain socket
timeouts on loopback.)

The owner passes a callable returning the current deadline, so a connection kept open
across calls (supervisor's transport) gets a fresh deadline for each call.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, TypeVar

from agent.deadline import Deadline, check_cancelled

SLICE = 0.2  # seconds a blocked receive or send waits before looking for a cancel
T = TypeVar("T")


class DeadlineSocket(socket.socket):
    """A stream socket bounded by `deadline()` (see the module docstring)."""

    def __init__(self, family: int, kind: int, deadline: Callable[[], Deadline]):
        super().__init__(family, kind)
        self._deadline = deadline

    def _left(self) -> float:
        """Seconds left, or socket.timeout once there are none (Cancelled on SIGTERM)."""
        check_cancelled()
        deadline = self._deadline()
        left = deadline.remaining()
        if left <= 0:
            raise socket.timeout(f"no complete answer within {deadline.seconds:.1f}s")
        return left

    def _sliced(self, operation: Callable[..., T], *args: Any) -> T:
        while True:
            self.settimeout(min(self._left(), SLICE))
            try:
                return operation(*args)
            except socket.timeout:
                continue  # _left() decides whether time is up

    def connect(self, address: Any) -> None:
        # A connect cut short cannot be resumed, so it gets the whole time left at once;
        # loopback and link-local peers answer or refuse at once anyway.
        self.settimeout(self._left())
        super().connect(address)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._sliced(super().recv, bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._sliced(super().recv_into, buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        return self._sliced(super().send, data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += self.send(view[sent:], flags)
