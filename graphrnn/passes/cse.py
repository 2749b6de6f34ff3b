"""Common-subexpression elimination by hash-consing.

Rewrites:
  two nodes with the same op, the same input nodes, equal attributes, shape and context
  -> one node. Covers equal constants (same value and shape), repeated `1 - y*y`, the
  softmax that both the forward loss and its VJP compute, several `transpose(W)` of one W,
  repeated `batch_size()` / `axis_size(t)`.
  add and mul are commutative: add(a, b) and add(b, a) are one node (exact in IEEE).

The key of a node is (op, ids of its canonical inputs, attributes made hashable, shape,
context); attributes holding Contexts, tuples, dicts or arrays get a type-tagged hashable form
(1, 1.0 and True stay apart, as do 0.0 and -0.0); a node with an attribute that has no
hashable form is left alone. Leaves (inputs, targets, parameters) are never merged.

Sweeps run in dependency order and repeat to a fixpoint, so merges propagate upwards and
through the edges a cycle closes (a delay reads a value defined later in the order). Merging
is pessimistic around cycles: two identical recurrences (whole cycles) stay two.
The surviving node keeps its name; if it has none it takes the user's name of a merged one.
"""

from __future__ import annotations

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import Node
from graphrnn.ir.registry import OPS
from graphrnn.passes._common import (
    Unhashable,
    attrs_key,
    copy_graph,
    is_leaf,
    node_count,
    resolve,
)

MAX_SWEEPS = 100


def node_key(node: Node):
    """The hash-consing key of a node given its current inputs; None if it is not mergeable."""
    if is_leaf(node):
        return None
    try:
        attrs = attrs_key(node.attrs)
    except Unhashable:
        return None
    ids = tuple(i.id for i in node.inputs)
    if OPS[node.op].commutative:
        ids = tuple(sorted(ids))
    return (node.op, ids, attrs, node.shape, node.context.axes, node.context.batched)


def cse(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Merge equal nodes to a fixpoint; returns the graph and one report line."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    canonical: dict[int, Node] = {}
    merged = 0
    for _ in range(MAX_SWEEPS):
        table: dict = {}
        new_merges = 0
        for node in reachable(g.roots()):
            if node.id in canonical:
                continue
            node.inputs = [resolve(canonical, i) for i in node.inputs]
            key = node_key(node)
            if key is None:
                continue
            kept = table.setdefault(key, node)
            if kept is not node:
                if kept.name is None and node.name is not None:
                    kept.name, kept.loc = node.name, node.loc
                canonical[node.id] = kept
                new_merges += 1
        # Edges a cycle closes may still point at merged nodes: redirect all of them.
        for node in reachable(g.roots()):
            node.inputs = [resolve(canonical, i) for i in node.inputs]
        g.outputs = {k: resolve(canonical, v) for k, v in g.outputs.items()}
        if g.loss is not None:
            g.loss = resolve(canonical, g.loss)
        merged += new_merges
        if not new_merges:
            break
    after = node_count(g)
    return g, [f"cse: merged {merged} nodes, {before} -> {after} nodes"]
