"""Merging a sum of matrix-vector products into one wider product.

Rewrites:
  A_1 @ g_1 + A_2 @ g_2 + ... + A_n @ g_n + rest      (A_k STATIC matrices with m rows)
  -> concat(A_1, ..., A_n) @ concat(g_1, ..., g_n) + rest

This is the transpose of gemm_merge, and what reverse mode makes of it: the adjoint of a
vector z that feeds the products W_k @ z is the sum of W_k^T @ g_k. For an LSTM, the four
gate terms of the backward recurrence become one product with [H + I, 4H]; with gemm_merge
the stacked matrix is the very concat(W_f^T, ..., W_o^T) the forward product transposes, so
CSE shares it.

A sum is a tree of `add` nodes of one shape whose inner nodes have no other use. A product
joins the merged one only if nothing else reads it (it would still be computed otherwise)
and it is evaluated where the sum is (both in bulk, or in the same recurrence). Matrices are
ordered by the node they transpose (or are), so forward and backward stacks coincide.
The sum's floating-point association changes (differences in the last bits).
"""

from __future__ import annotations

from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import (
    Actual,
    copy_graph,
    inherit,
    matrix_label,
    node_count,
    same_value_kind,
    substitute,
    summarize,
    sums,
)
from graphrnn.passes.gemm_merge import is_static_matrix, matrix_order


def gemm_sum(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Merge the products of each sum; returns the graph and its report lines."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    actual = Actual(g)
    repl: dict[int, Node] = {}
    details = []
    for root, terms, private in sums(g, actual):
        products = [
            t
            for t in terms
            if t.op == "matmul"
            and is_static_matrix(t.inputs[0])
            and private(t)
            and t.shape == root.shape
        ]
        if len(products) < 2:
            continue
        products.sort(key=lambda t: matrix_order(t.inputs[0]))
        matrix = apply("concat", *[t.inputs[0] for t in products])
        vector = apply("concat", *[t.inputs[1] for t in products])
        total = apply("matmul", matrix, vector)
        merged = {t.id for t in products}
        for t in terms:
            if t.id not in merged:
                total = apply("add", total, t)
        if not same_value_kind(total, root, actual):
            continue
        inherit(total, root)
        repl[root.id] = total
        names = ", ".join(matrix_label(t.inputs[0]) for t in products)
        rows, columns = matrix.shape
        details.append(f"sum of {len(products)} products ({names}) -> 1 [{rows} x {columns}]")
    substitute(g, repl, actual)
    after = node_count(g)
    head = f"gemm_sum: {len(details)} merged, {before} -> {after} nodes"
    return g, [head + summarize(details)]
