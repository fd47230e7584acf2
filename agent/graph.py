"""Run steps as soon as what they depend on is done: independent steps in parallel.

Boot is a small dependency graph (PostgreSQL -> databases -> release -> service, Redis ->
service, `after` between services); running each node in its own thread, waiting only on
its own dependencies, makes the whole boot as long as its critical path.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable


class DependencyFailed(Exception):
    """A node was skipped because something it needs failed."""

    def __init__(self, dependency: str):
        super().__init__(f"skipped: {dependency} failed")
        self.dependency = dependency


@dataclass
class Node:
    name: str
    action: Callable[[], None]
    needs: list[str] = field(default_factory=list)


def run(nodes: list[Node]) -> dict[str, BaseException | None]:
    """Run every node; return each node's exception (None for success).

    `nodes` must be in an order where every dependency comes before its dependents
    (the catalog refuses cycles), so each future exists before anyone waits on it.
    """
    futures: dict[str, Future[None]] = {}

    def execute(node: Node) -> None:
        for dep in node.needs:
            if futures[dep].exception() is not None:
                raise DependencyFailed(dep)
        node.action()

    with ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="boot") as pool:
        for node in nodes:
            futures[node.name] = pool.submit(execute, node)
    return {name: future.exception() for name, future in futures.items()}
