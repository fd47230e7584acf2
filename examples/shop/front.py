"""Storefront: a second web service that calls the orders API over HTTP."""

from __future__ import annotations

import json
import os
import urllib.request
from urllib.parse import parse_qs, urlsplit

from examples.shop.common import Handler, serve


def call_api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(os.environ["API_URL"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Front(Handler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self.send_json(200, {"ok": True})
        elif url.path.startswith("/orders/"):
            status, body = call_api("GET", url.path)
            self.send_json(status, body)
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/buy":
            self.send_json(404, {"error": "not found"})
            return
        item = parse_qs(url.query).get("item", ["widget"])[0]
        status, body = call_api("POST", "/orders", {"item": item})
        self.send_json(status, body)


if __name__ == "__main__":
    serve(Front)
