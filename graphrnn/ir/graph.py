"""The graph: named leaves (inputs, targets, params), named outputs, and a loss.

A graph is cyclic only through `delay` nodes. The same class holds folded graphs, their
adjoints and unrolled DAGs; stages map graphs to graphs.

`batchnorms` records each batch norm of a model file (dsl `batchnorm2d`) and its running
statistics, non-trainable state kept beside the parameters (docs/grid_ops.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrnn.errors import Loc
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import resolve


@dataclass
class BatchNormState:
    """One batch norm's running statistics, named `<name>.running_mean` and
    `<name>.running_var` (each [channels]; initially 0 and 1).

    In a training graph `batch_mean` and `batch_var` are the nodes of the batch statistics
    that update them (not batched; over the normalised value's index axes, if any), and
    `pixels` is H*W, the elements per channel of one example at one step (`batched`: the
    normalised value varies over the batch, as it usually does). In an evaluation graph the
    two running statistics are leaves in `Graph.params` that are not trained."""

    name: str
    channels: int
    pixels: int
    batched: bool = True
    batch_mean: Node | None = None
    batch_var: Node | None = None

    @property
    def mean_name(self) -> str:
        return f"{self.name}.running_mean"

    @property
    def var_name(self) -> str:
        return f"{self.name}.running_var"


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
    # Batch norms with running statistics, by name (see BatchNormState).
    batchnorms: dict[str, BatchNormState] = field(default_factory=dict)
    # Where the model is defined in its file (None for graphs built by hand), for errors
    # about the whole model, such as a missing loss.
    loc: Loc | None = None

    @property
    def state_names(self) -> set[str]:
        """Names of the running statistics: leaves in `params` of an evaluation graph that
        are given like parameters but neither trained nor differentiated."""
        return {n for bn in self.batchnorms.values() for n in (bn.mean_name, bn.var_name)}

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
