"""Merging matrix-vector products that share their vector into one taller product.

Rewrites:
  matmul(A_1, v), ..., matmul(A_n, v)          (one vector node v; A_k STATIC matrices)
  -> P = matmul(rows(A_1, ..., A_n), v),  matmul(A_k, v) -> slice(P, r_k, r_k + m_k)

where rows(A_1, ..., A_n) = transpose(concat(transpose(A_1), ..., transpose(A_n))) stacks the
matrices' rows with existing ops (concat joins along the last dimension), so the result
differentiates and lowers like any other graph; transpose(transpose(W)) is written W directly.
The stacked matrix is STATIC, hence computed once per call, outside every loop; a backend sees
one product of [sum m_k, n] instead of n small ones: the four LSTM gate products of the
concatenation z = [h(t-1), x(t)] become one, and a bidirectional layer's two input
projections of x become one.

Only products in the same place of the schedule are merged: all evaluated in bulk, or all in
the same recurrence. Merging a hoisted product into a loop would undo the hoisting (e.g. the
adjoint's x-gradient W_x^T g next to the recurrent W_h^T g). Products sharing a matrix but not
a vector are left alone. Merged products' users read the slices; a user-named product's name
moves to its slice.
"""

from __future__ import annotations

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import (
    Actual,
    copy_graph,
    describe,
    inherit,
    matrix_label,
    node_count,
    substitute,
    summarize,
)


def is_static_matrix(node: Node) -> bool:
    return node.context == STATIC and node.shape is not None and len(node.shape) == 2


def matrix_order(a: Node) -> int:
    """Order of stacked matrices (shared with gemm_sum, so that the forward and backward
    stacks coincide): the id of the matrix `a` transposes, or its own."""
    return a.inputs[0].id if a.op == "transpose" else a.id


def transposed(a: Node) -> Node:
    return a.inputs[0] if a.op == "transpose" else apply("transpose", a)


def stack_rows(matrices: list[Node]) -> Node:
    """The matrices' rows one after another, as transpose(concat(transpose(A_k)...))."""
    return apply("transpose", apply("concat", *[transposed(a) for a in matrices]))


def _exact(product: Node, actual: Actual) -> bool:
    """A product whose stored and actual contexts are its vector's (always, outside adjoint
    nodes made from placeholders that vary over less than declared)."""
    v = product.inputs[1]
    return product.context == v.context == actual(v) == actual(product)


def gemm_merge(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Merge products sharing a vector; returns the graph and its report lines."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    actual = Actual(g)
    loops = actual.loops
    groups: dict[tuple[int, int | None], list[Node]] = {}
    vectors: dict[int, Node] = {}
    for n in reachable(g.roots()):
        if n.op == "matmul" and is_static_matrix(n.inputs[0]) and _exact(n, actual):
            v = n.inputs[1]
            vectors[v.id] = v
            groups.setdefault((v.id, loops.get(n.id)), []).append(n)
    repl: dict[int, Node] = {}
    details = []
    for (vid, _), products in groups.items():
        by_matrix: dict[int, list[Node]] = {}
        for p in products:
            by_matrix.setdefault(p.inputs[0].id, []).append(p)
        if len(by_matrix) < 2:
            continue
        rows = sorted(by_matrix.values(), key=lambda ps: matrix_order(ps[0].inputs[0]))
        matrices = [ps[0].inputs[0] for ps in rows]
        ids = {p.id for p in products}
        if any(n.id in ids for n in reachable(matrices)):
            continue  # a matrix computed from one of the products: merging would be a cycle
        merged = apply("matmul", stack_rows(matrices), vectors[vid])
        start = 0
        for a, ps in zip(matrices, rows):
            piece = apply("slice", merged, start=start, stop=start + a.shape[0])
            for p in ps:
                inherit(piece, p)
                repl[p.id] = piece
            start += a.shape[0]
        names = ", ".join(matrix_label(a) for a in matrices)
        columns = matrices[0].shape[1]
        details.append(
            f"{len(matrices)} products of {describe(vectors[vid])} ({names}) "
            f"-> 1 [{start} x {columns}]"
        )
    substitute(g, repl, actual)
    after = node_count(g)
    head = f"gemm_merge: {len(details)} merged, {before} -> {after} nodes"
    return g, [head + summarize(details)]
