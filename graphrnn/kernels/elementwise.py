"""The kernel of a run of elementwise nodes: one nest over their common extent that keeps
the intermediates in locals and stores only the values read elsewhere."""

from __future__ import annotations

from graphrnn.ir.node import Node
from graphrnn.ir.registry import OPS
from graphrnn.kernels.common import per_element
from graphrnn.loopnest import Nest


def fused_nest(group: list[Node], stored: list[Node]) -> Nest:
    """`group`: consecutive elementwise nodes of one context and shape, in order; `stored`:
    those whose values leave the nest."""
    head = group[0]
    b = per_element(head, tag="_".join(list(dict.fromkeys(n.op for n in group))[:4]))
    b.nest.elementwise = True
    temps: dict[int, str] = {}
    for n in group:
        operands = [
            temps[i.id] if i.id in temps else b.ref(i, b.elems if i.shape else []) for i in n.inputs
        ]
        temps[n.id] = b.let("s", OPS[n.op].scalar.format(*operands))
    for n in stored:
        b.store(n, b.elems, temps[n.id])
    return b.nest
