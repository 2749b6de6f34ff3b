"""Kernels of the linear-algebra ops (graphrnn/ir/ops/linalg.py).

Products with a parameter matrix usually never reach these: each backend hands them to its
BLAS (backends/planning.py decides which), and the Numba backend writes small per-step
products as sums of rows instead (backends/numba_products.py). What is left is the direct
form, one dot product per output element.
"""

from __future__ import annotations

from graphrnn.ir.node import Node
from graphrnn.kernels.common import done, kernel, per_element
from graphrnn.loopnest import Nest


@kernel("matmul")
def matmul(n: Node) -> list[Nest]:
    a, v = n.inputs
    b = per_element(n)
    (e0,) = b.elems
    acc = b.let("acc", "0.0")
    with b.loop("e1", a.shape[1]) as e1:
        b.set(acc, f"{b.ref(a, [e0, e1])} * {b.ref(v, [e1])}", "+=")
    b.store(n, [e0], acc)
    return done(b)


@kernel("outer")
def outer(n: Node) -> list[Nest]:
    x, y = n.inputs
    b = per_element(n)
    e = b.elems
    b.store(n, e, f"{b.ref(x, e[:1])} * {b.ref(y, e[1:])}")
    return done(b)


@kernel("transpose")
def transpose(n: Node) -> list[Nest]:
    b = per_element(n)
    b.store(n, b.elems, b.ref(n.inputs[0], b.elems[::-1]))
    return done(b)
