"""Kernels of the neural-network ops (graphrnn/ir/ops/nn.py): one point per example, which
first finds the vector's log-sum-exp (max first, so exp never overflows)."""

from __future__ import annotations

from graphrnn.ir.node import Node
from graphrnn.kernels.common import done, kernel, per_example
from graphrnn.loopnest import Builder, Nest


def _log_sum_exp(b: Builder, x: Node) -> str:
    size = x.shape[0]
    mx = b.let("mx", b.ref(x, ["0"]))
    with b.loop("r0", size, 1) as r:
        b.set(mx, f"max({mx}, {b.ref(x, [r])})")
    se = b.let("se", "0.0")
    with b.loop("r0", size) as r:
        b.set(se, f"exp({b.ref(x, [r])} - {mx})", "+=")
    return b.let("lse", f"{mx} + log({se})")


def _softmax_like(n: Node, formula: str) -> list[Nest]:
    (x,) = n.inputs
    b = per_example(n)
    lse = _log_sum_exp(b, x)
    with b.loop("e0", x.shape[0]) as e0:
        b.store(n, [e0], formula.format(x=b.ref(x, [e0]), lse=lse))
    return done(b)


@kernel("softmax")
def softmax(n: Node) -> list[Nest]:
    return _softmax_like(n, "exp({x} - {lse})")


@kernel("log_softmax")
def log_softmax(n: Node) -> list[Nest]:
    return _softmax_like(n, "{x} - {lse}")


@kernel("softmax_cross_entropy")
def softmax_cross_entropy(n: Node) -> list[Nest]:
    o, y = n.inputs
    b = per_example(n)
    lse = _log_sum_exp(b, o)
    acc = b.let("acc", "0.0")
    with b.loop("r0", o.shape[0]) as r:
        b.set(acc, f"{b.ref(y, [r])} * ({b.ref(o, [r])} - {lse})", "-=")
    b.store(n, [], acc)
    return done(b)


@kernel("mse")
def mse(n: Node) -> list[Nest]:
    o, y = n.inputs
    b = per_example(n)
    acc = b.let("acc", "0.0")
    with b.loop("r0", o.shape[0]) as r:
        d = b.let("d", f"{b.ref(o, [r])} - {b.ref(y, [r])}")
        b.set(acc, f"{d} * {d}", "+=")
    b.store(n, [], f"{acc} / {float(o.shape[0])}")
    return done(b)
