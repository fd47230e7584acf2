"""Orders API: POST /orders writes a row and queues a job; GET /orders/<id> reads it."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs, urlsplit

from examples.shop.common import QUEUE, Handler, db, ping_db, queue, serve


class Api(Handler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            ping_db()
            self.send_json(200, {"ok": True})
        elif url.path == "/slow":
            # an endpoint that keeps requests in flight, for draining tests
            ms = int(parse_qs(url.query).get("ms", ["200"])[0])
            time.sleep(min(ms, 10_000) / 1000)
            self.send_json(200, {"slept_ms": ms, "pid": os.getpid()})
        elif url.path.startswith("/orders/"):
            conn = db()
            rows = conn.run("SELECT id, item, status FROM orders WHERE id = :id", id=int(url.path.rsplit("/", 1)[1]))
            conn.close()
            if rows:
                self.send_json(200, dict(zip(("id", "item", "status"), rows[0])))
            else:
                self.send_json(404, {"error": "no such order"})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/orders":
            self.send_json(404, {"error": "not found"})
            return
        item = str(self.read_json().get("item", "widget"))
        conn = db()
        order_id = conn.run("INSERT INTO orders (item) VALUES (:item) RETURNING id", item=item)[0][0]
        conn.close()
        queue().rpush(QUEUE, json.dumps({"order": order_id}))
        self.send_json(201, {"id": order_id, "item": item, "status": "pending"})


if __name__ == "__main__":
    serve(Api)
