"""Sums of padded blocks as one concatenation.

Rewrites:
  pad(a, before=p) + pad(b, before=q) + ... + rest     (blocks that do not overlap)
  -> concat(a, zeros, b, ...) + rest                   (zeros only where no block lies)

Reverse mode makes these: the adjoint of a vector read through slices (the gates cut out of a
stacked product `W_hh @ h(t-1)`, sliced four ways) is the sum of the slices' VJPs, each a pad
to the full width. As pads, every term is a full-width vector and every add another pass over
one; as one concat, each block is written once, where it goes. So a cell written with one
stacked matrix and slices costs what the same cell written with a matrix per gate costs.

A sum is a tree of `add` nodes of one shape whose inner nodes have no other use; a pad joins
only if nothing else reads it and it is evaluated where the sum is.
"""

from __future__ import annotations

from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import (
    Actual,
    copy_graph,
    inherit,
    node_count,
    same_value_kind,
    substitute,
    summarize,
    sums,
    zero,
)


def join_blocks(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Join the padded blocks of each sum; returns the graph and its report lines."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    actual = Actual(g)
    repl: dict[int, Node] = {}
    details = []
    for root, terms, private in sums(g, actual):
        if not root.shape:
            continue
        pads = [t for t in terms if t.op == "pad" and private(t)]
        joined = _joined(pads, root.shape)
        if joined is None:
            continue
        total = joined
        for t in terms:
            if t not in pads:
                total = apply("add", total, t)
        if not same_value_kind(total, root, actual):
            continue
        inherit(total, root)
        repl[root.id] = total
        details.append(f"sum of {len(pads)} padded blocks -> concat of {len(joined.inputs)}")
    substitute(g, repl, actual)
    after = node_count(g)
    head = f"join_blocks: {len(details)} joined, {before} -> {after} nodes"
    return g, [head + summarize(details)]


def _joined(pads: list[Node], shape) -> Node | None:
    """concat of the pads' operands in place, zeros between; None unless two or more blocks
    that do not overlap."""
    if len(pads) < 2:
        return None
    blocks = sorted(pads, key=lambda p: p.attrs["before"])
    pieces: list[Node] = []
    end = 0
    for p in blocks:
        start = p.attrs["before"]
        if start < end:
            return None
        if start > end:
            pieces.append(zero(shape[:-1] + (start - end,)))
        pieces.append(p.inputs[0])
        end = start + p.inputs[0].shape[-1]
    if end < shape[-1]:
        pieces.append(zero(shape[:-1] + (shape[-1] - end,)))
    return apply("concat", *pieces)
