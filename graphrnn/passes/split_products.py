"""Splitting a product inside a recurrence so that its part that does not recur leaves it.

Rewrites, for a STATIC matrix A and a product evaluated inside a recurrence:

  matmul(A, concat(p_1, ..., p_n))  ->  matmul(A[:, c_1], p_1) + ... + matmul(A[:, c_n], p_n)
      when some piece is evaluated outside that recurrence. The LSTM's W @ [h(t-1), x(t)]
      becomes W_h @ h(t-1) + W_x @ x(t), and the schedule hoists W_x @ x(t) out of the loop as
      one GEMM over every step.
  slice(matmul(A, g), r_1), ..., slice(matmul(A, g), r_n)  ->  matmul(A[r_k, :], g)
      when the product has only slices as users and some slice is read outside the
      recurrence, or some rows are read by none. The adjoint's W^T g, of which only the h
      rows feed back into the backward loop: the x rows become one GEMM after the loop, or
      are not computed at all when no input gradient is asked for.

A[:, c] is slice(A) (slices take the last dimension); A[r, :] is
transpose(slice(transpose(A))), which simplify folds where A is itself a transpose. Run it
before gemm_merge (the h blocks of the four LSTM gates then merge into one product inside the
loop and the x blocks into one outside) and after gemm_sum (which builds the adjoint's stacked
W^T g that the second rewrite splits).
"""

from __future__ import annotations

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import Node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import (
    Actual,
    copy_graph,
    describe,
    inherit,
    matrix_label,
    node_count,
    root_ids,
    substitute,
    summarize,
    users,
)
from graphrnn.passes.gemm_merge import is_static_matrix, transposed


def _in_loop_product(n: Node, loops: dict) -> bool:
    return n.op == "matmul" and is_static_matrix(n.inputs[0]) and loops.get(n.id) is not None


def _split_columns(n: Node, loops: dict) -> Node | None:
    """W @ concat(pieces) as a sum of column blocks times pieces, if a piece is hoisted."""
    a, v = n.inputs
    if v.op != "concat" or len(v.inputs) < 2:
        return None
    pieces = v.inputs
    if all(loops.get(p.id) == loops[n.id] for p in pieces):
        return None
    if any(p.context != v.context or len(p.shape) != 1 for p in pieces):
        return None
    total, start = None, 0
    for p in pieces:
        block = apply("slice", a, start=start, stop=start + p.shape[0])
        start += p.shape[0]
        term = apply("matmul", block, p)
        total = term if total is None else apply("add", total, term)
    return total


def _row_block(a: Node, start: int, stop: int) -> Node:
    return apply("transpose", apply("slice", transposed(a), start=start, stop=stop))


def _split_rows(n: Node, consumers: list[Node], loops: dict, roots: set[int]) -> dict:
    """Each slice of the product as its own product of a row block, if a slice is hoisted or
    some rows are read by no slice (the x rows of W^T g when no input gradient is asked for:
    computed every step, never read)."""
    if n.id in roots or not consumers or any(u.op != "slice" for u in consumers):
        return {}
    read = set()
    for u in consumers:
        read.update(range(u.attrs["start"], u.attrs["stop"]))
    unread = len(read) < n.shape[0]
    if all(loops.get(u.id) == loops[n.id] for u in consumers) and not unread:
        return {}
    a, v = n.inputs
    repl = {}
    for u in consumers:
        block = _row_block(a, u.attrs["start"], u.attrs["stop"])
        repl[u.id] = apply("matmul", block, v)
        inherit(repl[u.id], u)
    return repl


def split_products(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Split in-loop products whose concatenated operand or sliced result is partly hoisted;
    returns the graph and its report lines."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    actual = Actual(g)
    loops = actual.loops
    consumers = users(g)
    roots = root_ids(g)
    repl: dict[int, Node] = {}
    details = []
    for n in reachable(g.roots()):
        if not _in_loop_product(n, loops):
            continue
        split = _split_columns(n, loops)
        if split is not None:
            inherit(split, n)
            repl[n.id] = split
            details.append(f"{matrix_label(n.inputs[0])} @ {describe(n.inputs[1])} by columns")
            continue
        rows = _split_rows(n, consumers.get(n.id, []), loops, roots)
        if rows:
            repl.update(rows)
            details.append(f"{matrix_label(n.inputs[0])} @ {describe(n.inputs[1])} by rows")
    substitute(g, repl, actual)
    after = node_count(g)
    head = f"split_products: {len(details)} split, {before} -> {after} nodes"
    return g, [head + summarize(details)]
