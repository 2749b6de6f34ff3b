"""Second order, as graphs: Hessian-vector and Gauss-Newton-vector products of the loss.

Both are built from `backpropagate` alone (reverse over reverse), so they are folded graphs
like the adjoint graph, compiled by every backend the same way, and nothing in them depends
on the sequence length. A direction `v` enters as one leaf `vector:NAME` per parameter (its
shape, like a parameter); the results are the outputs `hvp:NAME` and `gnvp:NAME`.

- Hessian-vector product: H v = d/dθ <dL/dθ, v>, the gradient of the directional derivative
  of the gradient graph.
- Gauss-Newton-vector product (Schraudolph 2002, Martens 2010): G v = J^T H_L J v, where z are
  the predictions fed to the loss terms (the first operand of each `softmax_cross_entropy`
  or `mse`), J = dz/dθ, and H_L is the Hessian of the loss in z alone. G is positive
  semi-definite for these convex losses, which is what conjugate gradient needs. J v is the
  reverse of the reverse: J^T u is linear in u, so J v = d/du <J^T u, v> at any u (u = 0).
  H_L (J v) differentiates the loss terms twice in a stand-in leaf for z, which keeps
  everything upstream of z out of H_L; the stand-in is then replaced by z itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphrnn.autodiff import backpropagate, grad
from graphrnn.errors import DataError, GraphRNNError
from graphrnn.ir.graph import Graph, reachable, resolve_aliases
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import const, param_node
from graphrnn.ir.registry import apply

VECTOR = "vector:"
LOSS_TERMS = ("softmax_cross_entropy", "mse")


def trainable(graph: Graph) -> list[str]:
    """The parameters a second-order product is taken in: all but running statistics."""
    return [n for n in graph.params if n not in graph.state_names]


def hvp_graph(graph: Graph) -> Graph:
    """The graph of H v: outputs `hvp:NAME` (and `loss`), with leaves `vector:NAME`."""
    names = trainable(graph)
    first = grad(graph, names)
    vectors = _vectors(graph, names)
    s = _inner([first.outputs[f"grad:{n}"] for n in names], [vectors[n] for n in names])
    second = _resolved(backpropagate([(s, const(1.0))], [graph.params[n] for n in names]))
    outputs = {"loss": first.outputs["loss"]}
    outputs.update({f"hvp:{n}": h for n, h in zip(names, second)})
    return _graph(graph, "hvp", vectors, outputs)


def gnvp_graph(graph: Graph) -> Graph:
    """The graph of G v = J^T H_L J v: outputs `gnvp:NAME` (and `loss`), leaves `vector:NAME`.

    Raises GraphRNNError unless the loss is a linear combination of softmax cross-entropy and
    squared-error terms whose targets and weights do not depend on the parameters."""
    names = trainable(graph)
    params = [graph.params[n] for n in names]
    total = apply("batch_mean", graph.loss)
    terms = _loss_terms(graph, total)
    weights = _resolved(backpropagate([(total, const(1.0))], terms))
    for term, weight in zip(terms, weights):
        _require_constant(graph, weight, f"the weight of its {term.op} term")
        _require_constant(graph, term.inputs[1], f"the target of its {term.op} term")
    preds = list({t.inputs[0].id: t.inputs[0] for t in terms}.values())
    vectors = _vectors(graph, names)
    jv = _jvp(preds, params, [vectors[n] for n in names])
    hjv = _loss_hvp(terms, weights, preds, jv)
    gv = _resolved(backpropagate(list(zip(preds, hjv)), params))
    outputs = {"loss": total, **{f"gnvp:{n}": g for n, g in zip(names, gv)}}
    return _graph(graph, "gnvp", vectors, outputs)


def _jvp(preds: list[Node], params: list[Node], vectors: list[Node]) -> list[Node]:
    """J v for each prediction: the adjoint of u in <J^T u, v>, taken at u = 0."""
    seeds = [apply("broadcast", const(0.0, z.shape), context=z.context) for z in preds]
    jtu = _resolved(backpropagate(list(zip(preds, seeds)), params))
    return _resolved(backpropagate([(_inner(jtu, vectors), const(1.0))], seeds))


def _loss_hvp(terms, weights, preds: list[Node], directions: list[Node]) -> list[Node]:
    """H_L w per prediction: the loss terms recomputed on stand-in leaves, differentiated
    twice there; the stand-ins are then replaced by the predictions."""
    stand_in = {z.id: Node("input", [], {"role": "stand-in"}, z.shape, z.context) for z in preds}
    again = [apply(t.op, stand_in[t.inputs[0].id], t.inputs[1]) for t in terms]
    leaves = [stand_in[z.id] for z in preds]
    g = _resolved(backpropagate(list(zip(again, weights)), leaves))
    hw = _resolved(backpropagate(list(zip(g, directions)), leaves))
    back = {stand_in[z.id].id: z for z in preds}
    for node in reachable(hw):
        node.inputs = [back.get(i.id, i) for i in node.inputs]
    return [back.get(h.id, h) for h in hw]


def _loss_terms(graph: Graph, total: Node) -> list[Node]:
    """The loss terms; the loss must reach the parameters through their predictions only."""
    terms, seen, stack = [], set(), [total]
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        if node.op in LOSS_TERMS:
            terms.append(node)
        elif node.op == "param" and node.name in trainable(graph):
            raise GraphRNNError(
                f"the Gauss-Newton product needs the loss of '{graph.name}' to depend on "
                f"parameter '{node.name}' only through softmax_cross_entropy or mse terms"
            )
        else:
            stack.extend(node.inputs)
    if not terms:
        raise GraphRNNError(
            f"the Gauss-Newton product needs a softmax_cross_entropy or mse term in the loss "
            f"of '{graph.name}'"
        )
    return terms


def _require_constant(graph: Graph, node: Node, what: str) -> None:
    for n in reachable([node]):
        if n.op == "param" and n.name in trainable(graph):
            raise GraphRNNError(
                f"the Gauss-Newton product needs {what} in the loss of '{graph.name}' not to "
                f"depend on the parameters (it depends on '{n.name}')"
            )


def check_vector(graph: Graph, vector: Mapping) -> dict[str, np.ndarray]:
    """The direction as `vector:NAME` leaves' values; a clear error for a missing, unknown or
    wrongly shaped entry, naming the parameter."""
    names = trainable(graph)
    unknown = sorted(set(vector) - set(names))
    if unknown:
        raise DataError(f"vector has entries for unknown parameters {unknown}; expected {names}")
    given = {}
    for n in names:
        if n not in vector:
            raise DataError(f"vector has no entry for parameter '{n}'")
        try:
            array = np.asarray(vector[n], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"vector for parameter '{n}' is not a numeric array: {e}") from None
        if array.shape != graph.params[n].shape:
            raise DataError(
                f"vector for parameter '{n}' has shape {list(array.shape)}; "
                f"expected {list(graph.params[n].shape)}"
            )
        if not np.all(np.isfinite(array)):
            raise DataError(f"vector for parameter '{n}' contains NaN or infinity")
        given[f"{VECTOR}{n}"] = array
    return given


def _vectors(graph: Graph, names: list[str]) -> dict[str, Node]:
    return {
        n: param_node(f"{VECTOR}{n}", graph.params[n].shape, ("zeros",), graph.params[n].loc)
        for n in names
    }


def _inner(xs: list[Node], ys: list[Node]) -> Node:
    """sum over every pair of sum(x * y): a static scalar (xs and ys are static)."""
    total = None
    for x, y in zip(xs, ys):
        term = apply("mul", x, y)
        term = apply("sum", term) if term.shape else term
        total = term if total is None else apply("add", total, term)
    return total if total is not None else const(0.0)


def _resolved(nodes: list[Node]) -> list[Node]:
    """The nodes with every placeholder below them replaced by its value, so that they can
    be differentiated again (an unresolved placeholder would stop the gradient)."""
    g = resolve_aliases(Graph("resolve", (), outputs={str(k): n for k, n in enumerate(nodes)}))
    return list(g.outputs.values())


def _static_matrices(roots: list[Node], keep: set[int]) -> None:
    """Products read a broadcast matrix before its broadcast, in place.

    An adjoint is broadcast to its node's context (autodiff._full), so the direction of a
    weight, reaching an outer product's VJP, becomes a matrix per step and example: a
    backend then stores T * B copies and multiplies each on its own, where the static matrix
    is one GEMM. transpose(broadcast(M)) becomes broadcast(transpose(M)), and
    matmul(broadcast(M), x) becomes matmul(M, x) where that keeps the product's context.
    Nodes in `keep` (the model's own graph) are left as they are."""
    new = [node for node in reachable(roots) if node.id not in keep]
    for node in new:
        if node.op == "transpose" and node.inputs[0].op == "broadcast":
            matrix = node.inputs[0].inputs[0]
            node.op, node.attrs = "broadcast", {"context": node.context}
            node.inputs = [apply("transpose", matrix)]
    for node in new:
        if node.op == "matmul" and node.inputs[0].op == "broadcast":
            matrix, vector = node.inputs[0].inputs[0], node.inputs[1]
            if matrix.context.union(vector.context) == node.context:
                node.inputs = [matrix, vector]


def _graph(graph: Graph, kind: str, vectors: dict[str, Node], outputs: dict[str, Node]) -> Graph:
    _static_matrices(list(outputs.values()), {n.id for n in graph.nodes()})
    return Graph(
        name=f"{kind}({graph.name})",
        axes=graph.axes,
        inputs=graph.inputs,
        targets=graph.targets,
        params={**graph.params, **{v.name: v for v in vectors.values()}},
        outputs=outputs,
        axis_sizes=dict(graph.axis_sizes),
    )
