"""Worker: takes jobs from Redis and marks their orders done in PostgreSQL."""

from __future__ import annotations

import json
import signal
from typing import Any

from examples.shop.common import QUEUE, db, queue

running = True


def stop(signum: int, frame: Any) -> None:
    global running
    running = False


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    jobs = queue()
    conn = db()
    print("worker waiting for jobs", flush=True)
    while running:
        item = jobs.blpop([QUEUE], timeout=1)
        if item is None:
            continue
        order = json.loads(item[1])["order"]
        conn.run("UPDATE orders SET status = 'done', done_at = now() WHERE id = :id", id=order)
        print(f"order {order} done", flush=True)
    conn.close()


if __name__ == "__main__":
    main()
