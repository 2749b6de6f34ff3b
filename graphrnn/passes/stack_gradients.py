"""Parameter gradients of one shared operand computed as one stacked GEMM.

Rewrites:
  reduce_to(outer(a_1, b)), ..., reduce_to(outer(a_n, b))       (static, b shared)
  -> transpose(slice(D, o_k, o_k + |a_k|)) with D = reduce_to(outer(b, concat(a_1..a_n)))
  reduce_to(a_1), ..., reduce_to(a_n)                           (static, same a_k)
  -> slice(reduce_to(concat(a_1..a_n)), o_k, o_k + |a_k|)

A cell written with one matrix per gate has one weight gradient per gate, sum_t a_k(t) z(t)^T,
each a GEMM over all steps; the stacked cell has one. After gemm_sum the backward loop already
multiplies concat(a_1..a_n), so with the gradients read from that same concat (CSE shares it)
the gate adjoints have no reader left but the concat, and the backend writes them straight
into its blocks: one GEMM instead of n, and no copies.

Only groups whose operands a_k are all read by one existing concat are stacked, in that
concat's order; an outer product joins only if nothing else reads it.
"""

from __future__ import annotations

from collections import defaultdict

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import (
    Actual,
    copy_graph,
    inherit,
    node_count,
    root_ids,
    same_value_kind,
    substitute,
    summarize,
    users,
)


def stack_gradients(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Stack the gradient GEMMs (and bias sums) of each group; returns the graph and report."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    actual = Actual(g)
    use = users(g)
    roots = root_ids(g)
    weights: dict[tuple, list[Node]] = defaultdict(list)
    biases: list[Node] = []
    for n in reachable(g.roots()):
        if n.op != "reduce_to" or n.context != STATIC:
            continue
        (x,) = n.inputs
        single = [u.id for u in use.get(x.id, ())] == [n.id] and x.id not in roots
        if x.op == "outer" and single:
            a, b = x.inputs
            weights[(b.id, a.context)].append(n)
        elif x.shape and len(x.shape) == 1:
            biases.append(n)
    repl: dict[int, Node] = {}
    details: list[str] = []
    for group in weights.values():
        operand = lambda r: r.inputs[0].inputs[0]  # noqa: E731
        _stack(group, operand, _weight_blocks, use, actual, repl, details, "weight gradients")
    by_concat: dict[int, list[Node]] = defaultdict(list)
    for r in biases:
        c = _reader_concat(r.inputs[0], use)
        if c is not None:
            by_concat[c.id].append(r)
    for group in by_concat.values():
        operand = lambda r: r.inputs[0]  # noqa: E731
        _stack(group, operand, _bias_blocks, use, actual, repl, details, "sums")
    substitute(g, repl, actual)
    after = node_count(g)
    head = f"stack_gradients: {len(details)} stacked, {before} -> {after} nodes"
    return g, [head + summarize(details)]


def _reader_concat(a: Node, use) -> Node | None:
    readers = [u for u in use.get(a.id, ()) if u.op == "concat"]
    return readers[0] if len(readers) == 1 else None


def _stack(group, operand, blocks, use, actual, repl, details, kind: str) -> None:
    """Replace the group's gradients by blocks of one stacked one, if one concat reads all
    their operands (its order is the stack's)."""
    if len(group) < 2:
        return
    concat = _reader_concat(operand(group[0]), use)
    if concat is None:
        return
    position = {x.id: k for k, x in enumerate(concat.inputs)}
    if any(operand(r).id not in position for r in group) or len(group) != len(concat.inputs):
        return
    if len({operand(r).id for r in group}) != len(group):
        return
    group = sorted(group, key=lambda r: position[operand(r).id])
    stacked = apply("concat", *[operand(r) for r in group])
    new = blocks(group, stacked)
    if not all(same_value_kind(n, r, actual) for n, r in zip(new, group)):
        return
    for n, r in zip(new, group):
        inherit(n, r)
        repl[r.id] = n
    details.append(f"{len(group)} {kind} -> 1 [{' x '.join(map(str, _new_shape(new)))}]")


def _new_shape(blocks: list[Node]) -> tuple[int, ...]:
    """The stacked value the blocks are cut from (under a transpose, for weights)."""
    block = blocks[0].inputs[0] if blocks[0].op == "transpose" else blocks[0]
    return block.inputs[0].shape


def _weight_blocks(group: list[Node], stacked: Node) -> list[Node]:
    """dW_k = (sum_t outer(b, concat(a)))[:, block k]^T: one GEMM, the blocks transposed."""
    b = group[0].inputs[0].inputs[1]
    product = apply("outer", b, stacked)
    total = apply("reduce_to", product, context=STATIC, shape=product.shape)
    return _blocks(group, total, transpose=True)


def _bias_blocks(group: list[Node], stacked: Node) -> list[Node]:
    total = apply("reduce_to", stacked, context=STATIC, shape=stacked.shape)
    return _blocks(group, total, transpose=False)


def _blocks(group: list[Node], total: Node, transpose: bool) -> list[Node]:
    out, start = [], 0
    for r in group:
        size = r.shape[0]
        block = apply("slice", total, start=start, stop=start + size)
        out.append(apply("transpose", block) if transpose else block)
        start += size
    return out
