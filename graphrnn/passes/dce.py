"""Dead-code elimination.

Rewrites:
  outputs not named in `keep` -> dropped, and with them every node only they needed.

A graph is defined by its roots (outputs and loss), so a node no root reaches is already gone:
that part of DCE is automatic, and after the other passes this pass only reports it (nodes an
earlier rewrite orphaned are counted by that pass). Its real job is dropping outputs a caller
does not want, e.g. the gradients of the inputs when only parameter gradients are used:
`dce(adjoint, keep=["loss", "grad:W", ...])`. Leaves stay declared even when no output
reads them any more (backends bind what the schedule uses).
"""

from __future__ import annotations

from collections.abc import Iterable

from graphrnn.errors import GraphRNNError
from graphrnn.ir.graph import Graph
from graphrnn.passes._common import copy_graph, node_count


def dce(
    graph: Graph,
    keep: Iterable[str] | None = None,
    *,
    keep_loss: bool = True,
    inplace: bool = False,
) -> tuple[Graph, list[str]]:
    """Keep only the outputs named in `keep` (all of them when None), and the loss root
    unless `keep_loss` is False; returns the graph and one report line."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    dropped: list[str] = []
    if keep is not None:
        keep = list(keep)
        unknown = [k for k in keep if k not in g.outputs]
        if unknown:
            raise GraphRNNError(
                f"dce: no output named {', '.join(map(repr, unknown))}; "
                f"the outputs are {', '.join(map(repr, g.outputs))}"
            )
        dropped = [k for k in g.outputs if k not in keep]
        g.outputs = {k: v for k, v in g.outputs.items() if k in keep}
    if not keep_loss and g.loss is not None:
        g.loss = None
        dropped.append("<loss>")
    after = node_count(g)
    if dropped:
        line = f"dce: dropped outputs {', '.join(dropped)}, {before} -> {after} nodes"
    else:
        line = f"dce: all {len(g.outputs)} outputs used, {after} nodes live"
    return g, [line]
