"""Symbolic reverse mode on folded graphs (backpropagation through time as a graph).

Every node v gets an adjoint placeholder; each consumer w adds VJP_w(adj_w) to it; then each
placeholder is bound to the sum of what it received. Because the VJP of a delay is a delay
with the offset negated, the adjoint of a cyclic graph is again a cyclic graph whose
recurrences run the other way, and nothing here depends on the sequence length. Where a
contribution varies over more (axes, batch, elements) than its target, it is summed down
with `reduce_to`: that is where a parameter's gradient becomes a sum over the steps.
"""

from __future__ import annotations

from collections import defaultdict

from graphrnn.ir.graph import Graph, reachable, resolve_aliases
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import bind, const, placeholder, resolve
from graphrnn.ir.registry import OPS, apply


def backpropagate(seeds: list[tuple[Node, Node]], wrt: list[Node]) -> list[Node]:
    """Adjoints of `wrt` given adjoint seeds for some nodes; a zero constant where none flows."""
    nodes = reachable([node for node, _ in seeds])
    adjoint = {n.id: placeholder(n.shape, n.context, name=f"d{n.label()}") for n in nodes}
    received: dict[int, list[Node]] = defaultdict(list)
    for node, seed in seeds:
        received[node.id].append(seed)
    for w in nodes:
        rule = OPS[w.op].vjp
        if rule is None:
            continue
        for v, contribution in zip(w.inputs, rule(w, adjoint[w.id])):
            if contribution is not None:
                received[v.id].append(_fit(contribution, v))
    for n in nodes:
        bind(adjoint[n.id], _full(_sum(received[n.id]) or const(0.0, n.shape), n))
    return [resolve(adjoint[v.id]) if v.id in adjoint else const(0.0, v.shape) for v in wrt]


def _fit(contribution: Node, target: Node) -> Node:
    """Sum a contribution down to the target's context and shape, or expand a scalar up."""
    if contribution.shape == () and target.shape != ():
        contribution = apply("expand", contribution, shape=target.shape)
    if contribution.context <= target.context and contribution.shape == target.shape:
        return contribution
    return apply("reduce_to", contribution, context=target.context, shape=target.shape)


def _full(adjoint: Node, node: Node) -> Node:
    """An adjoint varies over everything its node does. Stored smaller (the same for every
    step or example) it would be summed once instead of once per step or example where a VJP
    reduces it into a parameter, so it is broadcast here."""
    if adjoint.context == node.context:
        return adjoint
    return apply("broadcast", adjoint, context=node.context)


def _sum(terms: list[Node]) -> Node | None:
    total = terms[0] if terms else None
    for term in terms[1:]:
        total = apply("add", total, term)
    return total


def grad(
    graph: Graph, wrt: list[str] | None = None, cotangents: dict[str, Node] | None = None
) -> Graph:
    """The adjoint graph: outputs `loss` (mean over the batch) and `grad:NAME` per leaf.

    `wrt` names leaves (parameters and inputs); by default every parameter and input.
    `cotangents` maps output names to adjoint nodes seeded beside the loss's 1: the
    gradients are then those of loss + sum(cotangent * output) (truncated BPTT passing a
    later chunk's adjoint back into this one's final state, graphrnn/states.py).
    """
    if graph.loss is None:
        raise ValueError(f"model '{graph.name}' declares no loss, so it has no gradient")
    total = apply("batch_mean", graph.loss)
    leaves = {**graph.params, **graph.inputs}
    names = list(leaves) if wrt is None else wrt
    seeds = [(total, const(1.0))]
    seeds += [(graph.outputs[k], seed) for k, seed in (cotangents or {}).items()]
    adjoints = backpropagate(seeds, [leaves[n] for n in names])
    outputs = {"loss": total, **{f"grad:{n}": a for n, a in zip(names, adjoints)}}
    adjoint_graph = Graph(
        name=f"grad({graph.name})",
        axes=graph.axes,
        inputs=graph.inputs,
        targets=graph.targets,
        params=graph.params,
        outputs=outputs,
        axis_sizes=dict(graph.axis_sizes),
    )
    return resolve_aliases(adjoint_graph)
