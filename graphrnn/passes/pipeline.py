"""The default optimisation pipeline and the switch to rule out passes by name.

    graph, lines = optimize(grad(model.graph))                  # every pass
    graph, lines = optimize(adjoint, disable={"gemm_merge"})    # all but one

Order (ORDER): simplify, cse, join_blocks (sums of padded blocks, the adjoints of slices, as
one concat), split_products (a product in a loop whose concatenated operand
is partly hoisted), gemm_merge, gemm_sum, split_products again (a merged adjoint product whose
slices are partly hoisted), stack_gradients (the gradients of matrices that gemm_sum stacked,
as one GEMM), then simplify and cse again to clean up what the merges leave
(transposes of transposes, equal stacked matrices), then dce. A disabled
pass is skipped everywhere it appears. `lines` explains what each pass did, one line per pass
run, and a summary; an unknown name in `disable` is an error that lists the known ones.

Not passes here: fusion (the Numba lowering fuses consecutive elementwise nodes of one extent
into one loop nest) and hoisting (the schedule evaluates every node that is not on a cycle in
bulk over all steps, outside the recurrences). Both happen in the backend on whatever graph
these passes return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from graphrnn.errors import GraphRNNError
from graphrnn.ir.graph import Graph
from graphrnn.passes._common import copy_graph, node_count
from graphrnn.passes.cse import cse
from graphrnn.passes.dce import dce
from graphrnn.passes.gemm_merge import gemm_merge
from graphrnn.passes.gemm_sum import gemm_sum
from graphrnn.passes.join_blocks import join_blocks
from graphrnn.passes.simplify import simplify
from graphrnn.passes.split_products import split_products
from graphrnn.passes.stack_gradients import stack_gradients

Pass = Callable[..., tuple[Graph, list[str]]]

PASSES: dict[str, Pass] = {
    "simplify": simplify,
    "cse": cse,
    "join_blocks": join_blocks,
    "split_products": split_products,
    "gemm_merge": gemm_merge,
    "gemm_sum": gemm_sum,
    "stack_gradients": stack_gradients,
    "dce": dce,
}

ORDER: tuple[str, ...] = (
    "simplify",
    "cse",
    "join_blocks",
    "split_products",
    "gemm_merge",
    "gemm_sum",
    "split_products",
    "stack_gradients",
    "simplify",
    "cse",
    "dce",
)


def check_disable(disable: Iterable[str] | str | None) -> frozenset[str]:
    """The set of pass names to skip; raises GraphRNNError naming the known ones."""
    if disable is None:
        return frozenset()
    names = frozenset([disable] if isinstance(disable, str) else disable)
    unknown = sorted(names - set(PASSES))
    if unknown:
        raise GraphRNNError(
            f"unknown optimisation pass {', '.join(map(repr, unknown))}; "
            f"the passes are {', '.join(PASSES)}"
        )
    return names


def optimize(
    graph: Graph, disable: Iterable[str] | str | None = frozenset()
) -> tuple[Graph, list[str]]:
    """The optimised graph (a copy: `graph` and the model's nodes are left as they are) with
    the same outputs and values, and the explanation lines."""
    skip = check_disable(disable)
    g = copy_graph(graph)
    before = node_count(g)
    lines: list[str] = []
    for name in ORDER:
        if name in skip:
            continue
        g, out = PASSES[name](g, inplace=True)
        lines.extend(out)
    after = node_count(g)
    off = f"; disabled: {', '.join(sorted(skip))}" if skip else ""
    lines.append(f"optimize: {before} -> {after} nodes{off}")
    return g, lines
