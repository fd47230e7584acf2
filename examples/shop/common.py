"""Connections from the environment, and a small JSON HTTP server base."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native
import redis

QUEUE = "shop:jobs"


def db() -> pg8000.native.Connection:
    url = urlsplit(os.environ["DATABASE_URL"])
    return pg8000.native.Connection(
        user=unquote(url.username or ""), password=unquote(url.password or ""),
        host=url.hostname or "127.0.0.1", port=url.port or 5432, database=url.path.lstrip("/"))


_shared: pg8000.native.Connection | None = None
_shared_lock = threading.Lock()


def ping_db() -> None:
    """SELECT 1 on one long-lived connection: health checks run often, and a new
    connection per check (password hashing included) would cost more than the check."""
    global _shared
    with _shared_lock:
        try:
            if _shared is None:
                _shared = db()
            _shared.run("SELECT 1")
        except Exception:
            _shared = None
            raise


def queue() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


class Handler(BaseHTTPRequestHandler):
    """JSON in, JSON out; subclasses define routes as do_GET/do_POST."""

    protocol_version = "HTTP/1.1"

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def log_message(self, fmt: str, *args: Any) -> None:
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # socketserver's default of 5 overflows under a load balancer
    daemon_threads = False  # let in-flight requests finish on shutdown
    block_on_close = True


def serve(handler: type[Handler]) -> None:
    """Serve on 127.0.0.1:$PORT until SIGTERM, finishing requests in flight."""
    server = Server(("127.0.0.1", int(os.environ["PORT"])), handler)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on 127.0.0.1:{os.environ['PORT']}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
