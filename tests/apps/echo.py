"""A test service: /health, /env?key=K (echoes one variable), /slow?ms=N (keeps a
request in flight). Test-only: a real service must never echo its environment.

``VERSION`` is part of the code, not of its configuration: the fleet tests commit a
change to it so that two baked images are two versions of the code, and every answer
says which one served it."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = "1"


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/health":
            body = {"ok": True, "pid": os.getpid(), "version": VERSION}
        elif url.path == "/env":
            key = query.get("key", [""])[0]
            body = {"key": key, "value": os.environ.get(key)}
        elif url.path == "/slow":
            ms = min(int(query.get("ms", ["200"])[0]), 10_000)
            time.sleep(ms / 1000)
            body = {"slept_ms": ms, "pid": os.getpid(), "version": VERSION}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a load balancer opening a dozen
    # connections at once overflows it, and a dropped SYN costs a second (RFC 6298).
    request_queue_size = 1024
    daemon_threads = False  # finish requests in flight on SIGTERM
    block_on_close = True


def main() -> None:
    time.sleep(float(os.environ.get("START_DELAY", "0")))  # a slow starter, for tests
    server = Server(("127.0.0.1", int(os.environ["PORT"])), Echo)

    def stop(signum: int, frame: object) -> None:
        # time.monotonic() is CLOCK_MONOTONIC, one clock machine-wide: tests compare it
        # with when the load balancer stopped sending requests here
        print(f"SIGTERM at {time.monotonic():.3f}: finishing requests in flight", flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"echo listening on 127.0.0.1:{os.environ['PORT']}", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
