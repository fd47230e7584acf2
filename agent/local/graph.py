"""Run steps as soon as what they depend on is done: independent steps in parallel.

Boot is a small dependency graph (PostgreSQL -> databases -> release -> service, Redis ->
service, `after` between services); running each node in its own thread, waiting only on
its own dependencies, makes the whole boot as long as its critical path.
"""

from __future__ import annotations

import graphlib
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

    Nodes are submitted dependencies first, so each future exists before anyone waits
    on it; a cycle (the catalog refuses them) raises graphlib.CycleError before any
    node runs. A need that is not a node is ignored (it is not on this box).
    """
    by_name = {node.name: node for node in nodes}
    sorter = graphlib.TopologicalSorter({n.name: [d for d in n.needs if d in by_name] for n in nodes})
    ordered = [by_name[name] for name in sorter.static_order()]
    futures: dict[str, Future[None]] = {}

    def execute(node: Node) -> None:
        for dep in node.needs:
            if dep in futures and futures[dep].exception() is not None:
                raise DependencyFailed(dep)
        node.action()

    with ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="boot") as pool:
        for node in ordered:
            futures[node.name] = pool.submit(execute, node)
    return {name: future.exception() for name, future in futures.items()}
