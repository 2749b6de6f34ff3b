"""The graph: named leaves (inputs, targets, params), named outputs, and a loss.

A graph is cyclic only through `delay` nodes. The same class holds folded graphs, their
adjoints and unrolled DAGs; stages map graphs to graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import resolve


@dataclass
class Graph:
    name: str
    axes: tuple[str, ...]
    inputs: dict[str, Node] = field(default_factory=dict)
    targets: dict[str, Node] = field(default_factory=dict)
    params: dict[str, Node] = field(default_factory=dict)
    outputs: dict[str, Node] = field(default_factory=dict)
    loss: Node | None = None
    # Lengths of axes that ops create (grid.patches): fixed when the graph is built.
    axis_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def leaves(self) -> dict[str, Node]:
        return {**self.inputs, **self.targets, **self.params}

    def roots(self) -> list[Node]:
        roots = list(self.outputs.values())
        return roots + [self.loss] if self.loss is not None else roots

    def nodes(self) -> list[Node]:
        return reachable(self.roots())


def reachable(roots: list[Node]) -> list[Node]:
    """Every node the roots depend on, cycles included, in depth-first post-order."""
    seen: set[int] = set()
    order: list[Node] = []
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node.id in seen:
            continue
        seen.add(node.id)
        stack.append((node, True))
        stack.extend((i, False) for i in reversed(node.inputs) if i.id not in seen)
    return order


def resolve_aliases(graph: Graph) -> Graph:
    """Replace every placeholder by the value bound to it, in place; returns the graph."""
    for node in reachable(graph.roots()):
        node.inputs = [resolve(i) for i in node.inputs]
    graph.outputs = {k: resolve(v) for k, v in graph.outputs.items()}
    graph.loss = resolve(graph.loss) if graph.loss is not None else None
    return graph
